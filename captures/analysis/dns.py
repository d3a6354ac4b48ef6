"""DNS: message parsing (RFC 1035), and the exchanges of a capture, each query paired with its
answer.

An answer is paired with the pending query of the same ID, client endpoint, name and type (the
resolver's view of "same question"); a query asked again before any answer counts as a retry of
that exchange, and an answer with no query seen (the capture began after it) is an exchange of
its own with no query time. Exchanges are kept compact (see DnsExchange): a DNS-heavy capture
has one per query.
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any, Final

from .model import millis_json, rounded, seconds_json
from .records import DnsInfo, PacketRecord

_string: Final = encode_basestring  # Final: compiled, a global is looked up at each call

DNS_PORTS: Final = frozenset({53, 5353, 5355})  # DNS, mDNS, LLMNR share the wire format

QTYPE_NAMES: Final = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    35: "NAPTR",
    41: "OPT",
    43: "DS",
    46: "RRSIG",
    47: "NSEC",
    48: "DNSKEY",
    64: "SVCB",
    65: "HTTPS",
    255: "ANY",
}
RCODE_NAMES: Final = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
}


def qtype_name(qtype: int) -> str:
    # Not .get(qtype, f"TYPE{qtype}"): that writes the default at every call.
    name = QTYPE_NAMES.get(qtype)
    return f"TYPE{qtype}" if name is None else name


def rcode_name(rcode: int) -> str:
    name = RCODE_NAMES.get(rcode)
    return f"RCODE{rcode}" if name is None else name


_TYPE_JSON: Final = {qtype: _string(name) for qtype, name in QTYPE_NAMES.items()}
_RCODE_JSON: Final = {rcode: _string(name) for rcode, name in RCODE_NAMES.items()}
# Names and answers repeat from exchange to exchange: the JSON text of the first TEXTS_KEPT
# is kept rather than escaped again (compiled, the escaping is a Python call).
TEXTS_KEPT: Final = 4096
_TEXT_JSON: Final[dict[str, str]] = {}


def _text_json(text: str) -> str:
    found = _TEXT_JSON.get(text)
    if found is None:
        found = _string(text)
        if len(_TEXT_JSON) < TEXTS_KEPT:
            _TEXT_JSON[text] = found
    return found


def _rcode_json(rcode: int) -> str:
    text = _RCODE_JSON.get(rcode)
    return _string(rcode_name(rcode)) if text is None else text


def _type_json(qtype: int) -> str:
    """A record type's name as JSON text: the known ones written once."""
    text = _TYPE_JSON.get(qtype)
    return _string(qtype_name(qtype)) if text is None else text


def _name(msg: bytes, offset: int, seen: dict[int, str]) -> tuple[str, int]:
    """Decode a possibly compressed name; returns (name, offset after it in the record).

    `seen` maps offsets to names already decoded in this message: answers point back at the
    question with compression pointers, so most names are read once (this is the hot path of
    DNS-heavy captures)."""
    labels = []
    starts = []
    end = None
    jumps = 0
    size = len(msg)
    suffix = None
    while True:
        if offset >= size:
            raise ValueError("name runs past the message")
        length = msg[offset]
        if length >= 0xC0:
            if offset + 1 >= size:
                raise ValueError("cut-off compression pointer")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | msg[offset + 1]
            jumps += 1
            if jumps > 64:
                raise ValueError("compression loop")
            suffix = seen.get(offset)
            if suffix is not None:
                break
            continue
        if length == 0:
            offset += 1
            break
        starts.append(offset)
        labels.append(msg[offset + 1 : offset + 1 + length])
        offset += 1 + length
    text = b".".join(labels).decode("ascii", "backslashreplace")
    if suffix:
        text = f"{text}.{suffix}" if text else suffix
    # Remember every suffix of this name by where it starts, for later pointers (unless a
    # label holds a dot itself, which would make the suffixes ambiguous).
    if not any(b"." in label for label in labels):
        remaining = text
        for start in starts:
            seen[start] = remaining
            remaining = remaining.partition(".")[2]
    return text, (end if end is not None else offset)


def _rdata(msg: bytes, rtype: int, start: int, length: int, seen: dict[int, str]) -> str:
    data = msg[start : start + length]
    if rtype == 1 and length == 4:
        return socket.inet_ntoa(data)
    if rtype == 28 and length == 16:
        return socket.inet_ntop(socket.AF_INET6, data)
    if rtype in (2, 5, 12):
        return _name(msg, start, seen)[0]
    if rtype == 33 and length >= 7:
        prio, weight, port = struct.unpack_from("!HHH", msg, start)
        return f"{prio} {weight} {port} {_name(msg, start + 6, seen)[0]}"
    if rtype == 15 and length >= 3:
        return f"{struct.unpack_from('!H', msg, start)[0]} {_name(msg, start + 2, seen)[0]}"
    if rtype == 6:
        return _name(msg, start, seen)[0]
    if rtype == 16:
        return data[1 : 1 + data[0]].decode("utf-8", "replace") if data else ""
    return data.hex()


# Clients ask the same names over and over (search paths, retries, every pod resolving the
# same Services), and a server answers them with the same bytes: a message is parsed once
# per distinct content after its ID. Bounded: cleared when full, and only messages of a usual
# size are kept (a 64 KB answer as a key would make 4096 entries a quarter of a gigabyte).
# Each content kept gets a template number, never reused in the process (so that a number
# still means one content after the cache was cleared): wire.py sends a message of a known
# template as its ID and that number.
_parsed: dict[bytes, tuple | None] = {}
_templates: Final = itertools.count(1)
PARSE_CACHE_SIZE = 4096
PARSE_CACHE_MAX_BYTES = 1024
MAX_ANSWERS = 64  # records read from one message (a message may claim 65535)
SHARED_ANSWER_SETS = 65536  # distinct answers kept to share (DnsTracker.answer_sets)


def parse_dns(msg: bytes) -> DnsInfo | None:
    """One DNS message, or None when the bytes are not a well-formed DNS message."""
    if len(msg) < 12:
        return None
    if len(msg) > PARSE_CACHE_MAX_BYTES:
        return _parse(msg)
    content = msg[2:]
    known: Any = _parsed.get(content, False)
    if known is False:
        if len(_parsed) >= PARSE_CACHE_SIZE:
            _parsed.clear()
        info = _parse(msg)
        if info is not None:
            info.template = next(_templates)
        known = _parsed[content] = (
            None
            if info is None
            else (
                info.is_response,
                info.rcode,
                info.name,
                info.qtype,
                tuple(info.answers),
                info.truncated,
                info.answers_cut,
                info.template,
            )
        )
        return info
    if known is None:
        return None
    is_response, rcode, name, qtype, answers, truncated, cut, template = known
    return DnsInfo(msg[0] << 8 | msg[1], is_response, rcode, name, qtype, list(answers), truncated,
                   cut, template)


_HEADER: Final = struct.Struct("!HHHHHH")
_QTYPE: Final = struct.Struct("!H")
_RECORD: Final = struct.Struct("!HHIH")


def _parse(msg: bytes) -> DnsInfo | None:
    # Typed: compiled, what struct gives is an object, and arithmetic on it generic.
    ident: int
    flags: int
    qdcount: int
    ancount: int
    ident, flags, qdcount, ancount, _ns, _ar = _HEADER.unpack_from(msg)
    if qdcount > 16 or ancount > 512:
        return None
    try:
        offset = 12
        name, qtype = "", 0
        seen: dict[int, str] = {}
        for index in range(qdcount):
            qname, offset = _name(msg, offset, seen)
            if offset + 4 > len(msg):
                return None
            if index == 0:
                name = qname
                qtype = _QTYPE.unpack_from(msg, offset)[0]
            offset += 4
        answers = []
        cut = 0
        for index in range(ancount):
            if index == MAX_ANSWERS:
                cut = ancount - index
                break
            rname, offset = _name(msg, offset, seen)
            if offset + 10 > len(msg):
                break
            rtype: int
            rdlength: int
            rtype, _class, _ttl, rdlength = _RECORD.unpack_from(msg, offset)
            offset += 10
            if offset + rdlength > len(msg):
                break
            answers.append((rname, rtype, _rdata(msg, rtype, offset, rdlength, seen)))
            offset += rdlength
    except (ValueError, struct.error):
        return None
    if not qdcount and answers:  # mDNS announcements carry answers without a question
        name, qtype = answers[0][0], answers[0][1]
    return DnsInfo(
        ident, bool(flags & 0x8000), flags & 0x000F, name, qtype, answers, bool(flags & 0x0200),
        cut,
    )


def parse_dns_tcp(payload: bytes) -> list[DnsInfo]:
    """DNS over TCP: each message carries a two-byte length prefix; a segment may hold several."""
    messages: list[DnsInfo] = []
    offset = 0
    while offset + 2 <= len(payload) and len(messages) < 32:
        (length,) = struct.unpack_from("!H", payload, offset)
        body = payload[offset + 2 : offset + 2 + length]
        if length < 12 or len(body) < length:
            break
        info = parse_dns(body)
        if info is None:
            break
        messages.append(info)
        offset += 2 + length
    return messages


def dns_label(infos: list[DnsInfo]) -> str:
    if len(infos) == 1:  # nearly always: no list to join
        return dns_words(infos[0])
    return "; ".join([dns_words(info) for info in infos[:2]])


def dns_words(info: DnsInfo) -> str:
    """One message's part of its label: the words it came with (wire.py), or made."""
    words = info.words
    return _dns_words(info) if words is None else words


def _dns_words(info: DnsInfo) -> str:
    qtype = qtype_name(info.qtype)
    if not info.is_response:
        return f"DNS query {qtype} {info.name}"
    cut = " (truncated)" if info.truncated else ""
    if info.rcode:
        return f"DNS {rcode_name(info.rcode)} {qtype} {info.name}{cut}"
    values = [v for _n, t, v in info.answers if t in (1, 28)] or [
        v for _n, _t, v in info.answers
    ]
    shown = ", ".join(values[:3]) + (" …" if len(values) > 3 else "")
    return f"DNS answer {qtype} {info.name} → {shown or 'no records'}{cut}"


class DnsExchange:
    """One query and its answer. Compact on purpose: a DNS-heavy capture has one per query."""

    __slots__ = (
        "answers",
        "client",
        "id",
        "latency_ms",
        "message_ids",
        "name",
        "qtype",
        "rcode",
        "retries",
        "server",
        "t",
        "transport",
        "truncated",
    )

    def __init__(
        self, ident: int, name: str, qtype: int, client: str, server: str, t: float | None,
        transport: str,
    ) -> None:
        self.id = ident
        self.name = name
        self.qtype = qtype
        self.client = client
        self.server = server
        self.t = t  # None when only the answer was seen
        self.transport = transport
        self.answers: tuple = ()  # (name, type, value) records
        self.rcode: int | None = None
        self.latency_ms: float | None = None
        self.retries = 0
        self.truncated = False
        # Ids of its queries and answers, the first few, packed (ID_BYTES): bytes, replaced
        # as they grow. Most exchanges have two: a tuple of two ints costs 120 bytes, this 49
        # (the benchmark's million packets hold 165,000 exchanges: 20 MB against 8).
        self.message_ids = b""

    def messages(self) -> list[int]:
        # Byte by byte: compiled, a Struct's iter_unpack is a Python call and a tuple for
        # each id. Message ids are indices, never negative.
        packed = self.message_ids
        ids = []
        for at in range(0, len(packed), ID_BYTES):
            ident = 0
            for index in range(at + ID_BYTES - 1, at - 1, -1):
                ident = ident << 8 | packed[index]
            ids.append(ident)
        return ids

    def to_dict(self, t0: float) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "type": qtype_name(self.qtype),
            "answers": [value for _n, _t, value in self.answers],
            "answer_records": [
                {"name": n, "type": qtype_name(t), "value": v} for n, t, v in self.answers
            ],
            "rcode": None if self.rcode is None else rcode_name(self.rcode),
            "client": self.client,
            "server": self.server,
            "t": None if self.t is None else rounded(self.t - t0, 6),
            "latency_ms": self.latency_ms,
            "transport": self.transport,
            "retries": self.retries,
            "truncated": self.truncated,
            "messages": self.messages(),
        }

    def to_json(self, t0: float) -> str:
        """to_dict() as compact JSON text, written by hand: a DNS-heavy capture has tens of
        thousands of exchanges, and building a dict for each was a tenth of writing the
        model. Endpoints and transport are decoder-written text that needs no escaping."""
        name = _text_json(self.name)
        values = []
        records = []
        for record_name, record_type, value in self.answers:
            text = _text_json(value)
            values.append(text)
            records.append(
                f'{{"name":{name if record_name == self.name else _string(record_name)},'
                f'"type":{_type_json(record_type)},"value":{text}}}'
            )
        rcode = self.rcode
        t = "null" if self.t is None else seconds_json(self.t - t0)
        latency = self.latency_ms
        ids = ",".join([str(ident) for ident in self.messages()])
        return (
            f'{{"id":{self.id},"name":{name},"type":{_type_json(self.qtype)},'
            f'"answers":[{",".join(values)}],"answer_records":[{",".join(records)}],'
            f'"rcode":{"null" if rcode is None else _rcode_json(rcode)},'
            f'"client":"{self.client}","server":"{self.server}",'
            f'"t":{t},'
            f'"latency_ms":{"null" if latency is None else millis_json(latency)},'
            f'"transport":"{self.transport}","retries":{self.retries},'
            f'"truncated":{"true" if self.truncated else "false"},'
            f'"messages":[{ids}]}}'
        )


class ExchangeFields(Mapping):
    """An exchange read as its to_dict() would be, without building the dict: the diagnosis
    reads tens of thousands of exchanges by a few keys each, and a dict (with a dict per
    answer record) for each cost about 1 KB."""

    __slots__ = ("exchange", "t")

    def __init__(self, exchange: DnsExchange, t0: float) -> None:
        self.exchange = exchange
        # Rounded once: the rules read it most (sorting, time windows), and rounding it at
        # each read was half of what they spent reading exchanges.
        self.t = None if exchange.t is None else rounded(exchange.t - t0, 6)

    def __getitem__(self, key: str):
        # The keys the rules read for every exchange come first: a chain of comparisons
        # against the caller's interned literals costs less than a table of functions.
        e = self.exchange
        if key == "t":
            return self.t
        if key == "client":
            return e.client
        if key == "name":
            return e.name
        if key == "rcode":
            return None if e.rcode is None else rcode_name(e.rcode)
        if key == "answers":
            return [value for _n, _t, value in e.answers]
        if key == "retries":
            return e.retries
        if key == "type":
            return qtype_name(e.qtype)
        if key == "id":
            return e.id
        if key == "server":
            return e.server
        if key == "messages":
            return e.messages()
        if key == "latency_ms":
            return e.latency_ms
        if key == "transport":
            return e.transport
        if key == "truncated":
            return e.truncated
        if key == "answer_records":
            return [{"name": n, "type": qtype_name(t), "value": v} for n, t, v in e.answers]
        raise KeyError(key)

    def __iter__(self):
        return iter(EXCHANGE_KEYS)

    def __len__(self) -> int:
        return len(EXCHANGE_KEYS)


# DnsExchange.to_dict()'s keys, in its order.
EXCHANGE_KEYS = ("id", "name", "type", "answers", "answer_records", "rcode", "client", "server",
                 "t", "latency_ms", "transport", "retries", "truncated", "messages")

MESSAGES_PER_EXCHANGE = 8
ID_BYTES: Final = 8  # DnsExchange.message_ids: each id in 8 bytes, little-endian


def _packed_id(message: int) -> bytes:
    """The id packed: compiled, int.to_bytes is a native call, a Struct's pack method
    a Python one (twice per exchange)."""
    return message.to_bytes(ID_BYTES, "little", signed=True)


def _note_message(exchange: DnsExchange, message: int) -> None:
    ids = exchange.message_ids
    if len(ids) < MESSAGES_PER_EXCHANGE * ID_BYTES:
        packed = _packed_id(message)
        if not ids or ids[len(ids) - ID_BYTES:] != packed:  # not the last one noted
            exchange.message_ids = ids + packed


class DnsTracker:
    """Pairs each DNS answer with its query by (id, client endpoint, name, type)."""

    def __init__(self, max_exchanges: int, warnings) -> None:
        self.exchanges: list[DnsExchange] = []
        self.pending: dict[tuple, DnsExchange] = {}
        # Answers as first seen, shared by every exchange that got the same: a server answers
        # a name the same way again and again, and each copy cost about 110 bytes.
        self.answer_sets: dict[tuple, tuple] = {}
        self.max_exchanges = max_exchanges
        self.warnings = warnings
        # Names, addresses and endpoints repeat across thousands of lookups: one string each
        # (a dict of its own: cheaper to call here than sys.intern, and let go with it).
        self.strings: dict[str, str] = {}

    def observe(
        self, record: PacketRecord, src: str, dst: str, transport: str, message: int
    ) -> None:
        """`message`: the id of the message that carries `record`. Past max_exchanges, no
        exchange is added, but the pending ones still get their answers."""
        strings = self.strings
        src, dst = strings.setdefault(src, src), strings.setdefault(dst, dst)
        exchanges, pending = self.exchanges, self.pending
        exchange: DnsExchange | None
        for info in record.dns or ():
            name = strings.setdefault(info.name, info.name)
            lower = name.lower()
            if lower == name:
                lower = name  # the same text: one string, not two
            if info.answers_cut:
                self.warnings.add(
                    f"a DNS answer holds more than {MAX_ANSWERS} records: only the first "
                    f"{MAX_ANSWERS} of each are read"
                )
            if not info.is_response:
                key = (info.id, src, lower, info.qtype)
                existing = pending.get(key)
                if existing is not None and existing.rcode is None:
                    existing.retries += 1
                    _note_message(existing, message)
                    continue
                if len(exchanges) >= self.max_exchanges:
                    self._full()
                    continue
                exchange = DnsExchange(info.id, name, info.qtype, src, dst, record.time, transport)
                exchange.message_ids = _packed_id(message)
                exchanges.append(exchange)
                pending[key] = exchange
                continue
            key = (info.id, dst, lower, info.qtype)
            exchange = pending.pop(key, None)
            if exchange is None:
                if len(exchanges) >= self.max_exchanges:
                    self._full()
                    continue
                exchange = DnsExchange(info.id, name, info.qtype, dst, src, None, transport)
                exchanges.append(exchange)
            elif exchange.t is not None:  # a pending exchange has its query's time
                exchange.latency_ms = rounded((record.time - exchange.t) * 1000, 3)
            _note_message(exchange, message)
            exchange.rcode = info.rcode
            exchange.truncated = info.truncated
            answers = tuple([  # a list first: compiled, a generator is a Python object
                (strings.setdefault(n, n), t, strings.setdefault(v, v)) for n, t, v in info.answers
            ])
            shared = self.answer_sets.get(answers)
            if shared is None:
                shared = answers
                if len(self.answer_sets) < SHARED_ANSWER_SETS:
                    self.answer_sets[answers] = answers
            exchange.answers = shared

    def _full(self) -> None:
        self.warnings.add(
            f"more than {self.max_exchanges} DNS exchanges: later ones are not listed"
        )
