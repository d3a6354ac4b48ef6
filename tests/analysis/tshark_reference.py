"""An independent reading of a capture with tshark, for checking the analysis engine against.

Theory of operation
-------------------
One `tshark -T fields` pass per file prints, for every frame, the fields below with every
occurrence joined by an unprintable aggregator. A frame may hold several layers of one protocol:

* tunnels (VXLAN, Geneve, GRE, GRE-over-UDP) repeat `ip`/`udp`/`tcp`; the innermost one is the
  packet the tunnel carries, and that is the one we want;
* an ICMP error quotes the header of the packet it complains about; that quote is not a packet
  and must not count as traffic.

`frame.protocols` lists the layers in order ("eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:tcp").
We cut it at the first `icmp`/`icmpv6`, pick the last `ip`/`ipv6` before the cut, and read the
field occurrence with the same ordinal (the n-th `ip` layer owns the n-th `ip.src`). Counting from
the start keeps that true even when a quoted header inside an ICMP error is missing fields.

DNS over TCP can carry several messages in one segment, and `-T fields` flattens them. The counts
(`dns.count.*`) are per message and the resource records come in wire order, so walking the
records with the counts gives each message its own answers.

Nothing here knows any particular capture: every fact is derived from tshark's output. The only
per-file input is the decode-as list SOURCES.md gives for captures on non-standard ports.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

AGGREGATOR = "\x1f"

FIELDS = [
    "frame.number",
    "frame.time_epoch",
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ip.id",
    "ipv6.src",
    "ipv6.dst",
    "arp.src.proto_ipv4",
    "arp.dst.proto_ipv4",
    "tcp.stream",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.len",
    "tcp.analysis.retransmission",
    "tcp.analysis.fast_retransmission",
    "udp.srcport",
    "udp.dstport",
    "nflog.hook",
    "http.request",
    "http2.type",
    "tls.handshake.type",
    "tls.handshake.extensions_server_name",
    "tls.handshake.extensions_alpn_str",
    "tls.handshake.version",
    "tls.handshake.extensions.supported_version",
    "tls.handshake.certificates_length",
    "dns.id",
    "dns.flags.response",
    "dns.flags.rcode",
    "dns.count.queries",
    "dns.count.answers",
    "dns.count.auth_rr",
    "dns.count.add_rr",
    "dns.qry.name",
    "dns.qry.type",
    "dns.resp.type",
    "dns.a",
    "dns.aaaa",
]

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10

DNS_TYPES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
    28: "AAAA", 33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG",
    47: "NSEC", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 251: "IXFR", 252: "AXFR", 255: "ANY",
    257: "CAA",
}
DNS_RCODES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
}
# Protocols tshark dissects with the dns.* fields. Only "dns" is plain DNS; mDNS and LLMNR are
# reported so a test can tell an engine that also shows them apart from one that invents names.
DNS_FAMILY = ("dns", "mdns", "llmnr")

TLS_CLIENT_HELLO, TLS_SERVER_HELLO, TLS_CERTIFICATE, TLS_CERTIFICATE_REQUEST = 1, 2, 11, 13
TLS_VERSIONS = {0x0300: "SSL 3.0", 0x0301: "1.0", 0x0302: "1.1", 0x0303: "1.2", 0x0304: "1.3"}


class TsharkMissing(RuntimeError):
    pass


# -- formatting helpers shared with the tests -------------------------------------------------


def endpoint(ip: str, port: int | None) -> str:
    """"ip:port" as docs/model.md writes it ("[v6]:port" for IPv6, plain "ip" without a port)."""
    addr = ipaddress.ip_address(ip)
    if port is None:
        return str(addr)
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


ENDPOINT_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+)):(?P<port>\d+)$")


def parse_endpoint(text: str) -> tuple[str, int | None]:
    """Inverse of `endpoint`, canonicalising the address; raises ValueError on anything else."""
    m = ENDPOINT_RE.match(text)
    if m:
        ip = m.group("v6") or m.group("v4")
        return str(ipaddress.ip_address(ip)), int(m.group("port"))
    return str(ipaddress.ip_address(text)), None


def canonical_endpoint(text: str) -> str:
    ip, port = parse_endpoint(text)
    return endpoint(ip, port)


def dns_type_name(value) -> str:
    """A DNS type as a mnemonic: 28, "28", "TYPE28" and "aaaa" all give "AAAA"."""
    text = str(value).strip()
    if text.upper().startswith("TYPE") and text[4:].isdigit():
        text = text[4:]
    if text.isdigit():
        number = int(text)
        return DNS_TYPES.get(number, f"TYPE{number}")
    return text.upper()


def tls_version_name(value) -> str | None:
    """0x0304, 772, "TLS 1.3", "TLSv1.3", "1.3" all give "1.3"."""
    if value is None:
        return None
    if isinstance(value, int):
        return TLS_VERSIONS.get(value, hex(value))
    text = str(value).strip()
    if text.lower().startswith("0x"):
        return TLS_VERSIONS.get(int(text, 16), text)
    m = re.search(r"(\d)\.(\d)", text)
    if m and "ssl" not in text.lower():
        return f"{m.group(1)}.{m.group(2)}"
    return text


# -- the facts -------------------------------------------------------------------------------


@dataclass
class Frame:
    number: int
    time: float
    protocols: tuple[str, ...]  # layers before any ICMP quote
    src_ip: str | None  # innermost IP layer (or ARP sender/target)
    dst_ip: str | None
    transport: str | None  # "tcp" / "udp" when it follows the innermost IP layer
    src_port: int | None
    dst_port: int | None
    nflog_hook: int | None
    identity: tuple | None  # what makes two frames copies of one packet


@dataclass
class TlsFacts:
    client_hello: bool = False
    server_hello: bool = False
    sni: str | None = None
    alpn_offered: list[str] = field(default_factory=list)
    alpn: str | None = None
    version: str | None = None  # "1.2", "1.3"
    certificate_request: bool = False
    client_certificate: bool = False


@dataclass
class TcpConnection:
    stream: int
    client: str
    server: str
    orientation_known: bool  # a SYN or SYN-ACK said who the client is
    syn: bool = False
    syn_ack: bool = False
    fin: bool = False
    rst: bool = False
    last_teardown: str | None = None  # "fin" or "rst": which came last
    http_requests: int = 0
    http2: bool = False
    tls_seen: bool = False  # tshark dissected any TLS record
    tls: TlsFacts = field(default_factory=TlsFacts)
    first_frame: int = 0
    frames: list[int] = field(default_factory=list)
    retransmissions: int = 0  # frames tshark flags as (fast) retransmissions
    copy_retransmissions: int = 0  # ... of which are copies of a packet already seen

    @property
    def closed_allowed(self) -> set[str]:
        """Values of the model's `closed` a correct engine may report for this connection.

        RST and no FIN -> "rst"; FIN and no RST -> "fin"; neither -> "open". With both, the
        model reports "rst" when the connection ended with one: if the last FIN-or-RST was a
        RST only "rst" is right, if a FIN came after an earlier RST (an injected or ignored
        RST) either reading is defensible.
        """
        if self.rst and self.fin:
            return {"rst"} if self.last_teardown == "rst" else {"rst", "fin"}
        if self.rst:
            return {"rst"}
        if self.fin:
            return {"fin"}
        return {"open"}


@dataclass
class DnsExchange:
    id: int
    name: str
    type: str
    client: str
    server: str
    transport: str
    protocol: str  # "dns", "mdns" or "llmnr"
    query_frame: int | None = None
    response_frame: int | None = None
    rcode: str | None = None
    answers: set[str] = field(default_factory=set)

    @property
    def answered(self) -> bool:
        return self.response_frame is not None


@dataclass
class Reading:
    path: Path
    decode_as: list[str]
    frames: list[Frame]
    connections: dict[int, TcpConnection]
    dns: list[DnsExchange]

    @property
    def packets(self) -> int:
        return len(self.frames)

    @property
    def ip_pairs(self) -> set[tuple[str, str]]:
        return {(f.src_ip, f.dst_ip) for f in self.frames if f.src_ip and f.dst_ip}

    @property
    def frames_by_number(self) -> dict[int, Frame]:
        return {f.number: f for f in self.frames}

    @property
    def distinct_packets(self) -> dict[tuple, list[int]]:
        """Frames grouped by packet identity: copies of one packet logged more than once."""
        groups: dict[tuple, list[int]] = {}
        for f in self.frames:
            key = f.identity if f.identity is not None else ("frame", f.number)
            groups.setdefault(key, []).append(f.number)
        return groups

    def connection_by_endpoints(self) -> dict[frozenset, list[TcpConnection]]:
        out: dict[frozenset, list[TcpConnection]] = {}
        for c in self.connections.values():
            out.setdefault(frozenset((c.client, c.server)), []).append(c)
        return out

    def summary(self) -> str:
        lines = [f"{self.path.name}: {self.packets} frames, decode-as {self.decode_as or '-'}"]
        for c in self.connections.values():
            tls = ""
            if c.tls.client_hello or c.tls.server_hello:
                t = c.tls
                tls = (
                    f" tls(v{t.version} sni={t.sni} offered={','.join(t.alpn_offered)}"
                    f" alpn={t.alpn} certreq={t.certificate_request}"
                    f" clientcert={t.client_certificate})"
                )
            lines.append(
                f"  tcp#{c.stream} {c.client} -> {c.server}"
                f"{'' if c.orientation_known else ' (orientation?)'}"
                f" syn={c.syn:d} synack={c.syn_ack:d} fin={c.fin:d} rst={c.rst:d}"
                f" closed={sorted(c.closed_allowed)} http1={c.http_requests}"
                f"{' h2' if c.http2 else ''} retrans={c.retransmissions}"
                f"(copies {c.copy_retransmissions}){tls}"
            )
        for d in self.dns:
            lines.append(
                f"  {d.protocol}/{d.transport} {d.client} -> {d.server} id={d.id} {d.type}"
                f" {d.name} rcode={d.rcode} answers={sorted(d.answers)}"
            )
        lines.append(f"  ip pairs: {sorted(self.ip_pairs)}")
        copies = [v for v in self.distinct_packets.values() if len(v) > 1]
        if copies:
            lines.append(f"  copies of one packet: {copies}")
        return "\n".join(lines)


# -- running tshark --------------------------------------------------------------------------


def tshark_binary() -> str:
    path = shutil.which("tshark")
    if not path:
        raise TsharkMissing("tshark is not installed")
    return path


@cache
def _sources_decode_as(sources: Path) -> dict[str, list[str]]:
    """`-d` options per corpus-relative path, from the "tshark opts used:" notes in SOURCES.md.

    Key-log options are left out on purpose: the engine reads captures, not key logs, so the
    reference must not see inside TLS either.
    """
    out: dict[str, list[str]] = {}
    if not sources.is_file():
        return out
    current = None
    for line in sources.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^#### `([^`]+)`", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"tshark opts used:(.*)$", line)
        if current and m:
            opts = re.findall(r"-d\s+(\S+)", m.group(1))
            out.setdefault(current, []).extend(opts)
    return out


def decode_as_for(path: Path, corpus: Path | None = None) -> list[str]:
    path = Path(path).resolve()
    roots = [corpus] if corpus else []
    roots += list(path.parents)
    for root in roots:
        sources = Path(root) / "SOURCES.md"
        if sources.is_file():
            try:
                rel = path.relative_to(Path(root).resolve()).as_posix()
            except ValueError:
                continue
            return list(_sources_decode_as(sources).get(rel, []))
    return []


def run_tshark(path: Path, decode_as: list[str]) -> str:
    argv = [tshark_binary(), "-n", "-r", str(path)]
    for spec in decode_as:
        argv += ["-d", spec]
    argv += ["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
             "-E", f"aggregator={AGGREGATOR}", "-E", "quote=n"]
    for name in FIELDS:
        argv += ["-e", name]
    proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=300)
    if proc.returncode != 0 and not proc.stdout:
        raise RuntimeError(f"tshark failed on {path}: {proc.stderr.strip()}")
    return proc.stdout


# -- reading the output ----------------------------------------------------------------------


def _values(row: dict[str, str], name: str) -> list[str]:
    raw = row.get(name, "")
    return raw.split(AGGREGATOR) if raw else []


def _nth(row: dict[str, str], name: str, index: int | None) -> str | None:
    if index is None:
        return None
    values = _values(row, name)
    return values[index] if 0 <= index < len(values) else None


def _int(text: str | None, base: int = 10) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(text, 0) if text.lower().startswith("0x") else int(text, base)
    except ValueError:
        return None


def _flag(text: str | None) -> bool:
    return text in ("1", "True", "true")


def _layers(protocols: str) -> list[str]:
    layers = protocols.split(":") if protocols else []
    for i, name in enumerate(layers):
        if name in ("icmp", "icmpv6"):
            return layers[:i]
    return layers


def _ordinal(layers: list[str], index: int) -> int:
    return layers[:index].count(layers[index])


def _parse_frame(row: dict[str, str]) -> tuple[Frame, dict]:
    layers = _layers(row["frame.protocols"])
    ip_at = max((i for i, n in enumerate(layers) if n in ("ip", "ipv6")), default=None)
    src_ip = dst_ip = None
    ip_id = None
    if ip_at is not None:
        k = _ordinal(layers, ip_at)
        if layers[ip_at] == "ip":
            src_ip, dst_ip = _nth(row, "ip.src", k), _nth(row, "ip.dst", k)
            ip_id = _nth(row, "ip.id", k)
        else:
            src_ip, dst_ip = _nth(row, "ipv6.src", k), _nth(row, "ipv6.dst", k)
    elif "arp" in layers:
        src_ip = _nth(row, "arp.src.proto_ipv4", 0)
        dst_ip = _nth(row, "arp.dst.proto_ipv4", 0)

    transport = None
    ports = (None, None)
    l4 = {}
    if ip_at is not None:
        after = [(i, n) for i, n in enumerate(layers) if i > ip_at and n in ("tcp", "udp")]
        if after:
            at, transport = after[0]
            k = _ordinal(layers, at)
            ports = (_int(_nth(row, f"{transport}.srcport", k)),
                     _int(_nth(row, f"{transport}.dstport", k)))
            if transport == "tcp":
                l4 = {
                    "stream": _int(_nth(row, "tcp.stream", k)),
                    "flags": _int(_nth(row, "tcp.flags", k), 16) or 0,
                    "seq": _nth(row, "tcp.seq_raw", k),
                    "ack": _nth(row, "tcp.ack_raw", k),
                    "len": _nth(row, "tcp.len", k),
                }
    if src_ip:
        src_ip = str(ipaddress.ip_address(src_ip))
    if dst_ip:
        dst_ip = str(ipaddress.ip_address(dst_ip))

    # Two frames are copies of one packet when everything down to the IPv4 identification
    # matches. Without a non-zero IP ID (IPv6, or stacks that send 0 with DF) a copy cannot be
    # told from a retransmission, so such frames get no identity.
    identity = None
    if src_ip and ip_id not in (None, "", "0x0000") and transport == "tcp":
        identity = ("tcp", src_ip, dst_ip, ip_id, ports, l4["flags"], l4["seq"], l4["ack"],
                    l4["len"])
    elif src_ip and ip_id not in (None, "", "0x0000"):
        identity = ("ip", src_ip, dst_ip, ip_id, transport, ports)

    frame = Frame(
        number=int(row["frame.number"]),
        time=float(row["frame.time_epoch"] or 0),
        protocols=tuple(layers),
        src_ip=src_ip,
        dst_ip=dst_ip,
        transport=transport,
        src_port=ports[0],
        dst_port=ports[1],
        nflog_hook=_int(_nth(row, "nflog.hook", 0)),
        identity=identity,
    )
    return frame, l4


def _dns_messages(row: dict[str, str]) -> list[dict]:
    """Split the flattened dns.* fields of one frame into its DNS messages (see module doc)."""
    ids = _values(row, "dns.id")
    qd = [_int(v) or 0 for v in _values(row, "dns.count.queries")]
    an = [_int(v) or 0 for v in _values(row, "dns.count.answers")]
    ns = [_int(v) or 0 for v in _values(row, "dns.count.auth_rr")]
    ar = [_int(v) or 0 for v in _values(row, "dns.count.add_rr")]
    responses = _values(row, "dns.flags.response")
    rcodes = _values(row, "dns.flags.rcode")
    names = iter(_values(row, "dns.qry.name"))
    qtypes = iter(_values(row, "dns.qry.type"))
    rtypes = iter(_values(row, "dns.resp.type"))
    a_values = iter(_values(row, "dns.a"))
    aaaa_values = iter(_values(row, "dns.aaaa"))
    messages = []
    for i, ident in enumerate(ids):
        questions = []
        for _ in range(qd[i] if i < len(qd) else 0):
            name, qtype = next(names, None), next(qtypes, None)
            if name is not None and qtype is not None:
                questions.append((name, qtype))
        answers = set()
        n_an = an[i] if i < len(an) else 0
        n_all = n_an + (ns[i] if i < len(ns) else 0) + (ar[i] if i < len(ar) else 0)
        for r in range(n_all):
            rtype = _int(next(rtypes, None))
            value = None
            if rtype == 1:
                value = next(a_values, None)
            elif rtype == 28:
                value = next(aaaa_values, None)
            if value is not None and r < n_an:
                answers.add(str(ipaddress.ip_address(value)))
        is_response = _flag(responses[i]) if i < len(responses) else False
        rcode = _int(rcodes[i]) if is_response and i < len(rcodes) else None
        messages.append({
            "id": _int(ident),
            "questions": questions,
            "response": is_response,
            "rcode": None if rcode is None else DNS_RCODES.get(rcode, f"RCODE{rcode}"),
            "answers": answers,
        })
    return messages


def parse(path: Path, output: str, decode_as: list[str]) -> Reading:
    frames: list[Frame] = []
    connections: dict[int, TcpConnection] = {}
    dns: dict[tuple, DnsExchange] = {}
    dns_order: list[tuple] = []
    seen_identities: set[tuple] = set()

    for line in output.splitlines():
        cols = line.split("\t")
        if len(cols) < len(FIELDS) or not cols[0].isdigit():
            continue
        row = dict(zip(FIELDS, cols, strict=False))
        frame, tcp = _parse_frame(row)
        frames.append(frame)
        is_copy = frame.identity is not None and frame.identity in seen_identities
        if frame.identity is not None:
            seen_identities.add(frame.identity)

        if frame.transport == "tcp" and tcp.get("stream") is not None:
            _add_tcp(connections, frame, tcp, row, is_copy)

        family = next((p for p in DNS_FAMILY if p in frame.protocols), None)
        if family and frame.src_ip and frame.src_port is not None:
            for message in _dns_messages(row):
                _add_dns(dns, dns_order, frame, family, message)

    return Reading(
        path=Path(path),
        decode_as=list(decode_as),
        frames=frames,
        connections=connections,
        dns=[dns[k] for k in dns_order],
    )


def _add_tcp(connections, frame: Frame, tcp: dict, row: dict, is_copy: bool) -> None:
    flags = tcp["flags"]
    src = endpoint(frame.src_ip, frame.src_port)
    dst = endpoint(frame.dst_ip, frame.dst_port)
    conn = connections.get(tcp["stream"])
    if conn is None:
        # Until a SYN or SYN-ACK says otherwise, the first sender is taken as the client.
        conn = connections[tcp["stream"]] = TcpConnection(
            stream=tcp["stream"], client=src, server=dst, orientation_known=False,
            first_frame=frame.number,
        )
    conn.frames.append(frame.number)
    syn, ack = bool(flags & TCP_SYN), bool(flags & TCP_ACK)
    if syn and not ack:
        if not conn.syn:
            conn.client, conn.server = src, dst
        conn.syn = True
        conn.orientation_known = True
    elif syn and ack:
        if not conn.syn and not conn.syn_ack:
            conn.client, conn.server = dst, src
        conn.syn_ack = True
        conn.orientation_known = True
    if flags & TCP_RST:
        conn.rst = True
        conn.last_teardown = "rst"
    elif flags & TCP_FIN:
        conn.fin = True
        conn.last_teardown = "fin"
    if _values(row, "tcp.analysis.retransmission") or _values(
        row, "tcp.analysis.fast_retransmission"
    ):
        conn.retransmissions += 1
        if is_copy:
            conn.copy_retransmissions += 1

    if "http" in frame.protocols:
        conn.http_requests += sum(1 for v in _values(row, "http.request") if _flag(v))
    if "http2" in frame.protocols or _values(row, "http2.type"):
        conn.http2 = True
    if "tls" in frame.protocols:
        conn.tls_seen = True
        _add_tls(conn, src, row)


def _add_tls(conn: TcpConnection, sender: str, row: dict) -> None:
    types = [_int(v) for v in _values(row, "tls.handshake.type")]
    t = conn.tls
    if TLS_CLIENT_HELLO in types and not t.client_hello:
        t.client_hello = True
        names = _values(row, "tls.handshake.extensions_server_name")
        t.sni = names[0] if names else None
        t.alpn_offered = _values(row, "tls.handshake.extensions_alpn_str")
        # Without a handshake the ClientHello still says who the client is.
        if not conn.orientation_known and sender != conn.client:
            conn.client, conn.server = conn.server, conn.client
    if TLS_SERVER_HELLO in types and not t.server_hello:
        t.server_hello = True
        alpn = _values(row, "tls.handshake.extensions_alpn_str")
        t.alpn = alpn[0] if alpn else None
        # TLS 1.3 keeps 0x0303 in the legacy field and says 1.3 in supported_versions.
        chosen = _values(row, "tls.handshake.extensions.supported_version")
        legacy = _values(row, "tls.handshake.version")
        version = chosen[0] if chosen else (legacy[0] if legacy else None)
        t.version = tls_version_name(version) if version else None
    if TLS_CERTIFICATE_REQUEST in types:
        t.certificate_request = True
    if TLS_CERTIFICATE in types and sender == conn.client:
        lengths = [_int(v) or 0 for v in _values(row, "tls.handshake.certificates_length")]
        if any(lengths):
            t.client_certificate = True


def _add_dns(dns: dict, order: list, frame: Frame, family: str, message: dict) -> None:
    me = endpoint(frame.src_ip, frame.src_port)
    peer = endpoint(frame.dst_ip, frame.dst_port)
    client, server = (peer, me) if message["response"] else (me, peer)
    for name, qtype in message["questions"] or [("", "")]:
        qtype_name = dns_type_name(qtype) if qtype else ""
        key = (client, server, message["id"], name.lower(), qtype_name)
        ex = dns.get(key)
        if ex is None:
            ex = dns[key] = DnsExchange(
                id=message["id"], name=name, type=qtype_name, client=client, server=server,
                transport=frame.transport or "", protocol=family,
            )
            order.append(key)
        if message["response"]:
            if ex.response_frame is None:
                ex.response_frame = frame.number
                ex.rcode = message["rcode"]
                ex.answers = set(message["answers"])
        elif ex.query_frame is None:
            ex.query_frame = frame.number


@cache
def _read_cached(path: str, decode_as: tuple[str, ...]) -> Reading:
    return parse(Path(path), run_tshark(Path(path), list(decode_as)), list(decode_as))


def read(path: Path, corpus: Path | None = None, decode_as: list[str] | None = None) -> Reading:
    """tshark's reading of `path` (cached per path for the test session)."""
    path = Path(path).resolve()
    if decode_as is None:
        decode_as = decode_as_for(path, corpus)
    return _read_cached(str(path), tuple(decode_as))


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(read(Path(arg)).summary())
