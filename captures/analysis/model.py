"""SequenceModel: the versioned document the analysis produces (see docs/model.md).

Messages are the one part that grows with packets, so they are kept in a spool that moves to
a temporary file past a threshold; everything else grows with flows. `write_json` streams the
document without building it in memory; `to_dict` builds it for small captures and tests.
"""

from __future__ import annotations

import codecs
import json
import tempfile
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, Final, TextIO

SCHEMA = "kviz.sequence/1"
COPY_BLOCK = 1 << 20  # characters per read when copying the spilled messages out
WRITE_SLICE = 1000  # list items encoded at a time by write_json
INDEX_EVERY = 16  # spilled messages per offset kept (8 bytes per 16 messages)
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_string = json.encoder.encode_basestring  # the quoted, escaped JSON string
# A label escaped to ASCII ("\u2192" for a DNS answer's arrow): one character past ASCII made
# its whole message a two-byte-wide string, slower to build and to write as UTF-8 (a sixth of a
# capture's messages are DNS answers); JSON reads both the same.
_ascii_string = json.encoder.encode_basestring_ascii
# One message's text to its dict: json.loads without its wrappers (the encoding sniffed from
# bytes, the check for trailing text), which were a third of reading messages back.
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _optional(text: str | None) -> str:
    return "null" if text is None else _string(text)


def seconds_text(seconds: float) -> str:
    """JSON text for round(seconds, 6): the decimal that f"{seconds:.6f}" gives, trailing
    zeros cut. Every message has one, and formatting a float is most of what it costs, so
    the common case (0 to 100 days, not within a hundredth of a microsecond tie) rounds in
    integers: there the product's rounding error (under 0.001 of a microsecond) cannot move
    it across the tie, so it rounds as the exact value does. The rest is formatted."""
    scaled = seconds * 1e6
    if 0.0 <= scaled < 8e12:
        micros = int(scaled)  # truncation is floor here
        fraction = scaled - micros
        if not 0.49 < fraction < 0.51:
            if fraction > 0.5:
                micros += 1
            if micros % 1_000_000 == 0:
                return f"{micros // 1_000_000}.0"
            # The microseconds' digits with a point before the last six, cut after the last
            # that is not zero: its zeros counted in integers, and one number made text
            # (compiled, cheaper than dividing it into two and stripping the text).
            zeros = 0
            rest = micros
            while rest % 10 == 0:
                rest //= 10
                zeros += 1
            digits = str(micros)
            size = len(digits)
            if size > 6:
                return f"{digits[:size - 6]}.{digits[size - 6:size - zeros]}"
            return f"0.{'0' * (6 - size)}{digits[:size - zeros]}"
    text = f"{seconds:.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def rounded(value: float, digits: int) -> float:
    """round(value, digits) for digits 3 or 6: the same float, in integers where, as in
    seconds_text, the product's rounding error cannot move it across the tie (an integer
    over a power of ten is the double nearest that decimal, which round() returns too).
    Compiled, round() is a generic call, and the model rounds every time and duration it
    holds (a million packets: about half a million of them); the rest go to round()."""
    if digits == 6:
        scale = 1e6
    elif digits == 3:
        scale = 1e3
    else:
        return round(value, digits)
    scaled = value * scale
    if 0.0 < scaled < 8e12:  # zero too goes to round(): it keeps the sign of -0.0
        whole = int(scaled)  # truncation is floor here
        fraction = scaled - whole
        if not 0.49 < fraction < 0.51:
            return (whole + 1 if fraction > 0.5 else whole) / scale
    return round(value, digits)


# The text of the small numbers a message holds (its length, its file's index, most
# connection ids): str() of an int is a call that makes a new string each time.
_NUMBER_TEXT: Final = [str(n) for n in range(4096)]


def _number(n: int) -> str:
    return _NUMBER_TEXT[n] if 0 <= n < 4096 else str(n)


# The decimals after the point of n thousandths (n < 1000), as repr writes them: "0", "001",
# "05", "5".
_THOUSANDTHS: Final = ["0"] + [f"{n:03d}".rstrip("0") for n in range(1, 1000)]


def millis_json(millis: float) -> str:
    """repr(millis) for a value rounded to three decimals (a latency), as json.dumps writes
    it: its thousandths written as a decimal, at a fraction of repr's cost, from a thousandth
    up to where repr writes an exponent (a double nearest such a decimal has no shorter
    one that reads back as it)."""
    if 0.001 <= millis < 1e9:
        thousandths = int(millis * 1000 + 0.5)
        whole = thousandths // 1000
        return f"{_number(whole)}.{_THOUSANDTHS[thousandths - whole * 1000]}"
    return repr(millis)


def seconds_json(seconds: float) -> str:
    """repr(round(seconds, 6)), as json.dumps writes it: seconds_text's digits where the two
    agree, at a fraction of the cost: repr writes below 0.0001 with an exponent, and from a
    billion seconds up a double's shortest digits may not be the six decimals'."""
    if 0.0001 <= seconds < 1e9:
        return seconds_text(seconds)
    return repr(round(seconds, 6))


def hop_vantage(interface: str | None, direction: str | None) -> str:
    """The start of a hop's JSON: where it was seen. A capture has few vantage points and
    every message repeats one, so callers keep this text per vantage point."""
    return f'{{"interface":{_optional(interface)},"direction":{_optional(direction)},'


def encode_hop_head(vantage: str, src: str, dst: str) -> str:
    """encode_hop()'s text up to the hop's time: what the packets of a flow one way at one
    vantage point share (engine.py keeps it)."""
    return f'{vantage}"src":"{src}","dst":"{dst}","t":'


def encode_hop(vantage: str, src: str, dst: str, t: str, tunnel: str | None = None) -> str:
    """One hop as JSON text, its time already text (seconds_text). src and dst are
    endpoints the decoder wrote (digits, dots, colons, brackets): they need no escaping.
    `tunnel` is encode_tunnel()'s text for a hop seen encapsulated."""
    head = encode_hop_head(vantage, src, dst)
    return f"{head}{t},{tunnel}}}" if tunnel else f"{head}{t}}}"


TUNNEL_WORDS = {"vxlan": "VXLAN", "geneve": "Geneve", "gre": "GRE", "ipip": "IP-in-IP"}
TUNNEL_IDENT = {"vxlan": "vni", "geneve": "vni", "gre": "key"}


def tunnel_name(tunnel, src_name: str | None, dst_name: str | None) -> str:
    """The underlay hop in words: "VXLAN 8472 node-1 → node-2, vni 1"; the outer addresses
    stand in for nodes the inventory does not name."""
    words = TUNNEL_WORDS.get(tunnel.kind, tunnel.kind)
    if tunnel.port is not None:
        words += f" {tunnel.port}"
    words += f" {src_name or tunnel.src} → {dst_name or tunnel.dst}"
    if tunnel.ident is not None:
        words += f", {TUNNEL_IDENT.get(tunnel.kind, 'id')} {tunnel.ident}"
    return words


def encode_tunnel(tunnel, src_name: str | None, dst_name: str | None) -> str:
    """A tunnelled hop's `tunnel` and `underlay` keys as JSON text (docs/model.md). A capture
    has few tunnels, so callers keep this text per Tunnel."""
    underlay = {"src": tunnel.src, "dst": tunnel.dst, "src_node": src_name,
                "dst_node": dst_name, "port": tunnel.port}
    if tunnel.kind in TUNNEL_IDENT:
        underlay[TUNNEL_IDENT[tunnel.kind]] = tunnel.ident
    underlay["name"] = tunnel_name(tunnel, src_name, dst_name)
    return f'"tunnel":{_string(tunnel.kind)},"underlay":{_dumps(underlay)}'


def encode_addresses(src: str, dst: str, proto: str) -> str:
    """A message's source, destination and protocol as encode_message() writes them: src and
    dst are endpoints the decoder wrote, proto a fixed word (neither needs escaping)."""
    return f'"src":"{src}","dst":"{dst}","proto":"{proto}"'


# Labels repeat ("ACK", "TLS application data", "data 1448 B"): their JSON text is kept for
# the first LABELS_KEPT of them rather than escaped again for every message. (Final: compiled,
# a module global is a dictionary lookup at each use.)
LABELS_KEPT: Final = 4096
_LABEL_JSON: Final[dict[str, str]] = {}
def encode_message(
    ident: int,
    t: str,
    addresses: str,
    label: str,
    flags_json: str,
    length: int,
    connection: int | None,
    phase: str,
    hop_head: str,
    hop_t: str,
    hops_rest: str,
    frame_file: int,
    frame_number: int,
    annotations: Sequence[int],
) -> str:
    """One message as JSON text: written by hand because json.dumps of a dict per packet
    (and the garbage those dicts make) was most of the analysis time at a million packets.
    `t` is seconds_text(); `addresses` is encode_addresses()'s text; `flags_json` the TCP
    flags' letters quoted (engine.FLAGS_JSON) or "null"; phase needs no escaping (a fixed
    word). The hops' JSON text is the first hop's encode_hop_head(), its time (seconds_text)
    and the rest: "}" alone, or with the hop's tunnel and the further hops (encode_hop()
    each, after a comma). In parts, so that the text is built once: the first hop's own
    string, made for nearly every message only to be copied here, cost the analysing
    process about 300 instructions a message."""
    label_json = _LABEL_JSON.get(label)
    if label_json is None:
        label_json = _ascii_string(label)
        if len(_LABEL_JSON) < LABELS_KEPT:
            _LABEL_JSON[label] = label_json
    return (
        f'{{"id":{ident},"t":{t},{addresses},"label":{label_json},"flags":{flags_json},'
        f'"len":{_number(length)},'
        f'"connection":{"null" if connection is None else _number(connection)},'
        f'"phase":"{phase}","hops":[{hop_head}{hop_t}{hops_rest}],'
        f'"frame":[{_number(frame_file)},{frame_number}],'
        f'"annotations":[{",".join(map(str, annotations)) if annotations else ""}]}}'
    )



# What write_json writes by hand, as json would write it: a connection's summary
# (tcp.Connection.summary, with the engine's rounded times and "outcome") and an HTTP/1.x
# request (tcp.py, with the engine's rounded times and "ttfb_ms"), keys in this order. At a
# million packets json took a third of a second over them, most of it writing their floats;
# these write the floats from the engine's rounding (seconds_json, millis_json). A dict of
# any other shape (an HTTP/2 stream, a decrypted request, a key added later) or with a value
# of another type is left to json whole.
_CONNECTION_KEYS: Final = (
    "id", "client", "server", "server_after_nat", "requests", "exchanges", "closed", "state",
    "handshake", "retransmissions", "keepalives", "zero_windows", "unseen_bytes", "packets",
    "app", "tls", "timing", "annotations", "outcome",
)
_TIMING_KEYS: Final = ("start", "connect_ms", "tls_ms", "ttfb_ms", "total_ms")
_TLS_KEYS: Final = (
    "version", "sni", "alpn_offered", "alpn", "certificate_request", "client_certificate",
    "alerts",
)
_HTTP_KEYS: Final = (
    "connection", "n", "method", "target", "host", "t", "status", "response_t", "protocol",
    "ttfb_ms",
)


class _Unusual(Exception):
    """A value of a type the hand-written text does not expect: json writes the dict."""


def _int(value: Any) -> str:
    if type(value) is not int:  # a bool is an int, and json writes it as a word
        raise _Unusual
    return _number(value)


def _int_or_null(value: Any) -> str:
    return "null" if value is None else _int(value)


def _str(value: Any) -> str:
    if type(value) is not str:
        raise _Unusual
    return _string(value)


def _str_or_null(value: Any) -> str:
    return "null" if value is None else _str(value)


def _rounded_or_null(value: Any, digits: int) -> str:
    """A time in seconds (digits 6) or a duration in milliseconds (3) as the engine rounded
    it: its decimals where they are repr's (seconds_text, millis_json), else json's own text
    (zero, an exponent, infinity)."""
    if value is None:
        return "null"
    if type(value) is not float or rounded(value, digits) != value:
        raise _Unusual
    if digits == 6 and 0.0001 <= value < 1e9:
        return seconds_text(value)
    if digits == 3 and 0.001 <= value < 1e9:
        return millis_json(value)
    return _dumps(value)


def _timing(timing: Any) -> str:
    if type(timing) is not dict or tuple(timing) != _TIMING_KEYS:
        raise _Unusual
    return (
        f'{{"start":{_rounded_or_null(timing["start"], 6)},'
        f'"connect_ms":{_rounded_or_null(timing["connect_ms"], 3)},'
        f'"tls_ms":{_rounded_or_null(timing["tls_ms"], 3)},'
        f'"ttfb_ms":{_rounded_or_null(timing["ttfb_ms"], 3)},'
        f'"total_ms":{_rounded_or_null(timing["total_ms"], 3)}}}'
    )


def _int_list(values: Any) -> str:
    if type(values) is not list:
        raise _Unusual
    return ",".join([_int(value) for value in values])


def _str_list(values: Any) -> str:
    if type(values) is not list:
        raise _Unusual
    return ",".join([_str(value) for value in values])


def _bool(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    raise _Unusual


def _tls(tls: Any) -> str:
    """A connection's TLS facts with no alert sent in the clear (alerts are left to json)."""
    if tls is None:
        return "null"
    if type(tls) is not dict or tuple(tls) != _TLS_KEYS or tls["alerts"] != []:
        raise _Unusual
    return (
        f'{{"version":{_str_or_null(tls["version"])},"sni":{_str_or_null(tls["sni"])},'
        f'"alpn_offered":[{_str_list(tls["alpn_offered"])}],'
        f'"alpn":{_str_or_null(tls["alpn"])},'
        f'"certificate_request":{_bool(tls["certificate_request"])},'
        f'"client_certificate":{_bool(tls["client_certificate"])},"alerts":[]}}'
    )


def encode_connection(summary: dict[str, Any]) -> str:
    """A connection's summary as json writes it (see _CONNECTION_KEYS)."""
    if tuple(summary) != _CONNECTION_KEYS:
        return _dumps(summary)
    try:
        return (
            f'{{"id":{_int(summary["id"])},"client":{_str(summary["client"])},'
            f'"server":{_str(summary["server"])},'
            f'"server_after_nat":{_str_or_null(summary["server_after_nat"])},'
            f'"requests":{_int(summary["requests"])},"exchanges":{_int(summary["exchanges"])},'
            f'"closed":{_str_or_null(summary["closed"])},"state":{_str(summary["state"])},'
            f'"handshake":{_str_or_null(summary["handshake"])},'
            f'"retransmissions":{_int(summary["retransmissions"])},'
            f'"keepalives":{_int(summary["keepalives"])},'
            f'"zero_windows":{_int(summary["zero_windows"])},'
            f'"unseen_bytes":{_int(summary["unseen_bytes"])},'
            f'"packets":{_int(summary["packets"])},"app":{_str_or_null(summary["app"])},'
            f'"tls":{_tls(summary["tls"])},'
            f'"timing":{_timing(summary["timing"])},'
            f'"annotations":[{_int_list(summary["annotations"])}],'
            f'"outcome":{_str(summary["outcome"])}}}'
        )
    except _Unusual:
        return _dumps(summary)


def encode_http_request(request: dict[str, Any]) -> str:
    """An HTTP request as json writes it (see _HTTP_KEYS)."""
    if tuple(request) != _HTTP_KEYS:
        return _dumps(request)
    try:
        return (
            f'{{"connection":{_int(request["connection"])},"n":{_int(request["n"])},'
            f'"method":{_str(request["method"])},"target":{_str(request["target"])},'
            f'"host":{_str_or_null(request["host"])},"t":{_rounded_or_null(request["t"], 6)},'
            f'"status":{_int_or_null(request["status"])},'
            f'"response_t":{_rounded_or_null(request["response_t"], 6)},'
            f'"protocol":{_str(request["protocol"])},'
            f'"ttfb_ms":{_rounded_or_null(request["ttfb_ms"], 3)}}}'
        )
    except _Unusual:
        return _dumps(request)

_PART_ENCODERS: Final[dict[str, Callable[[dict[str, Any]], str]]] = {
    "connections": encode_connection,
    "http": encode_http_request,
}


class MessageSpool:
    """Messages as JSON text, in order; past `in_memory` of them, the rest go to a temp file.

    The file is found by a sparse index: the byte offset of every INDEX_EVERY-th line, so a
    message is read back by one seek and at most INDEX_EVERY lines (the diagnosis asks for a
    few messages per connection, and scanning the file for each ask was quadratic)."""

    def __init__(self, in_memory: int = 5_000) -> None:
        self.in_memory = in_memory
        self.items: list[str] = []
        self.file: IO[bytes] | None = None
        self.count = 0
        self.offsets = array("q")  # byte offset of lines 0, INDEX_EVERY, 2 * INDEX_EVERY, ...
        self.spilled = 0  # lines in the file
        self.unflushed = False  # written since the file was last flushed

    def append(self, encoded: str) -> None:
        self.count += 1
        self.items.append(encoded)
        if len(self.items) >= self.in_memory:
            self._spill()

    def _spill(self) -> None:
        if self.file is None:
            # Closed by close(); it must outlive this call, so no `with` here. Binary: the
            # text is encoded once here and copied out as bytes (write_joined).
            self.file = tempfile.TemporaryFile("w+b")  # noqa: SIM115
        items, offsets = self.items, self.offsets
        position = self.file.tell()
        blocks = []
        start = 0
        # Cut where the index needs an offset, so each offset is known without measuring
        # lines one by one; in between, whole runs are joined and encoded at once, and all
        # are written in one call.
        while start < len(items):
            line = self.spilled + start
            if line % INDEX_EVERY == 0:
                offsets.append(position)
            end = min(len(items), start + INDEX_EVERY - line % INDEX_EVERY)
            # A run joined, then encoded at once; a run with a non-ASCII character (an
            # interface's or a node's name) encoded message by message, as joined its text
            # would be wide and encoding it several times slower.
            run = items[start:end]
            run.append("")  # so the join ends with a newline
            text = "\n".join(run)
            block = text.encode() if text.isascii() else b"\n".join([i.encode() for i in run])
            blocks.append(block)
            position += len(block)
            start = end
        self.file.write(b"".join(blocks))
        self.spilled += len(items)
        self.unflushed = True
        items.clear()

    def __len__(self) -> int:
        return self.count

    def encoded(self) -> Iterator[str]:
        """Each message as JSON text, in order."""
        if self.file is not None:
            self.file.flush()
            self.file.seek(0)
            for line in self.file:
                yield line[:-1].decode()
            self.file.seek(0, 2)
        yield from self.items

    def fetch(self, ids) -> dict[int, dict]:
        """The messages with these ids (their position), decoded; those spilled to the file
        are read from the index's nearest offset before them, in file order."""
        spilled = self.spilled
        found = {}
        blocks: dict[int, set[int]] = {}
        for ident in set(ids):
            if spilled <= ident < self.count:
                found[ident] = _scan(self.items[ident - spilled], 0)[0]
            elif 0 <= ident < spilled:
                blocks.setdefault(ident // INDEX_EVERY, set()).add(ident)
        if blocks and self.file is not None:
            if self.unflushed:
                self.file.flush()
                self.unflushed = False
            readline = self.file.readline
            for block in sorted(blocks):
                wanted = blocks[block]
                last = max(wanted)
                self.file.seek(self.offsets[block])
                for ident in range(block * INDEX_EVERY, last + 1):
                    line = readline()
                    if ident in wanted:
                        found[ident] = _scan(line.decode(), 0)[0]
            self.file.seek(0, 2)
        return found

    def write_joined(self, fp: TextIO, separator: str) -> None:
        """Every message's text, separated by `separator`, copied in large blocks: a message
        never holds a raw newline (JSON escapes it), so the spool's newlines are the
        separators. To a text stream over a byte stream (a file, standard output), the
        spilled bytes go straight to the bytes underneath, never decoded."""
        wrote = False
        if self.file is not None:
            raw = getattr(fp, "buffer", None)
            if raw is not None:
                fp.flush()
                write, newline, joint = raw.write, b"\n", separator.encode()
            else:
                decode = codecs.getincrementaldecoder("utf-8")().decode

                def write(block: bytes) -> None:
                    fp.write(decode(block))

                newline, joint = b"\n", separator.encode()
            self.file.flush()
            self.file.seek(0)
            pending = b""
            while block := self.file.read(COPY_BLOCK):
                # Hold back the last newline of the block: if the file ends there, it ends
                # the last message rather than separating two.
                block = pending + block
                pending = newline if block.endswith(newline) else b""
                write((block[:-1] if pending else block).replace(newline, joint))
                wrote = True
            self.file.seek(0, 2)
        if self.items:
            fp.write((separator if wrote else "") + separator.join(self.items))

    def __iter__(self) -> Iterator[dict]:
        for text in self.encoded():
            yield _scan(text, 0)[0]

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class SequenceModel:
    """The analysis result. `dns` is kept as compact exchange objects (one per query can be
    most of a capture) and becomes dicts only when read or written."""

    def __init__(
        self,
        capture,
        participants,
        messages: MessageSpool,
        connections,
        dns_exchanges,
        http,
        annotations,
        t0: float,
    ) -> None:
        self.capture = capture
        self.participants = participants
        self.messages = messages
        self.connections = connections
        self.dns_exchanges = dns_exchanges
        self.http = http
        self.annotations = annotations
        self.t0 = t0

    @property
    def dns(self) -> list[dict]:
        return [exchange.to_dict(self.t0) for exchange in self.dns_exchanges]

    def _parts(self) -> list[tuple[str, list]]:
        return [
            ("participants", self.participants),
            ("connections", self.connections),
            ("http", self.http),
            ("annotations", self.annotations),
        ]

    def to_dict(self) -> dict:
        doc = {"schema": SCHEMA, "capture": self.capture, "messages": list(self.messages)}
        doc.update(self._parts())
        doc["dns"] = self.dns
        return doc

    def write_json(self, fp: TextIO) -> None:
        fp.write('{"schema":' + _dumps(SCHEMA) + ',"capture":' + _dumps(self.capture))
        for key, value in self._parts():
            # In slices: the text of 200,000 connections at once would be a string of
            # hundreds of megabytes.
            fp.write(f',"{key}":[')
            encode = _PART_ENCODERS.get(key)
            for start in range(0, len(value), WRITE_SLICE):
                part = value[start : start + WRITE_SLICE]
                fp.write(("," if start else "")
                         + (_dumps(part)[1:-1] if encode is None
                            else ",".join([encode(item) for item in part])))
            fp.write("]")
        fp.write(',"dns":[')
        t0 = self.t0
        exchanges = self.dns_exchanges
        for start in range(0, len(exchanges), WRITE_SLICE):
            part = exchanges[start : start + WRITE_SLICE]
            fp.write(("," if start else "") + ",".join([e.to_json(t0) for e in part]))
        fp.write('],"messages":[')
        self.messages.write_joined(fp, ",")
        fp.write("]}\n")

    def close(self) -> None:
        self.messages.close()
