"""Plain data that flows through the analysis: one PacketRecord per captured frame.

Decoding fills these once; everything downstream reads them and never touches bytes again,
except the TCP stream parsers that keep a bounded prefix of each direction (TLS, HTTP/2).
"""

from __future__ import annotations

from typing import Final, NamedTuple


class CaptureError(Exception):
    """The input cannot be read as a capture at all (the message says why)."""


# The records below are plain classes with their own __init__, not dataclasses: compiled,
# a dataclass keeps the __init__ that the dataclasses module writes in Python, and building
# one PacketRecord that way cost more than decoding its packet (callgrind, 20,000 packets).


class RawFrame:
    """One frame as the file stores it, before any protocol decoding."""

    __slots__ = ("data", "direction", "file_index", "frame_number", "interface", "linktype",
                 "time")

    def __init__(
        self,
        file_index: int,
        frame_number: int,  # 1-based within its file, as Wireshark counts
        time: float,  # epoch seconds
        linktype: int,
        data: bytes,
        interface: str | None = None,  # name when the file knows it (pcapng IDB)
        direction: str | None = None,  # "in" / "out" when the file knows it (pcapng epb_flags)
    ) -> None:
        self.file_index = file_index
        self.frame_number = frame_number
        self.time = time
        self.linktype = linktype
        self.data = data
        self.interface = interface
        self.direction = direction

    def __repr__(self) -> str:
        return _repr(self)


class Tunnel(NamedTuple):
    """The outer header of an encapsulated packet: what a reader needs to name the underlay
    hop ("VXLAN 8472 node-1 → node-2, vni 1"). Made only for tunnelled packets."""

    kind: str  # "vxlan", "geneve", "gre", "ipip"
    src: str  # the underlay's (outer) addresses: the tunnel's two ends
    dst: str
    port: int | None  # the UDP destination port (VXLAN, Geneve, GRE-in-UDP), else None
    ident: int | None  # the VNI (VXLAN, Geneve) or the GRE key, when the header has one


class DnsInfo:
    __slots__ = ("answers", "answers_cut", "id", "is_response", "name", "qtype", "rcode",
                 "template", "truncated", "words")

    def __init__(
        self,
        id: int,
        is_response: bool,
        rcode: int,
        name: str,
        qtype: int,
        answers: list[tuple[str, int, str]] | None = None,  # (name, type, value)
        truncated: bool = False,  # TC: the answer did not fit (UDP); ask over TCP
        answers_cut: int = 0,  # records past dns.MAX_ANSWERS, not read
        template: int = 0,  # which parsed content this is, when dns.parse_dns keeps it (else 0)
        words: str | None = None,  # its label (dns.dns_label), when already known
    ) -> None:
        self.id = id
        self.is_response = is_response
        self.rcode = rcode
        self.name = name
        self.qtype = qtype
        self.answers: list[tuple[str, int, str]] = [] if answers is None else answers
        self.truncated = truncated
        self.answers_cut = answers_cut
        # Messages alike in all but their ID share a template number (wire.py sends such a
        # message as its ID and the template's number) and their words.
        self.template = template
        self.words = words

    def __repr__(self) -> str:
        return _repr(self)


class PacketRecord:
    __slots__ = (
        "ack",
        "direction",
        "dns",
        "dport",
        "dst",
        "file_index",
        "frame_number",
        "interface",
        "ip_id",
        "ip_version",
        "payload",
        "payload_len",
        "proto",
        "seq",
        "sport",
        "src",
        "tcp_flags",
        "time",
        "tunnel",
        "underlay",
        "window",
    )

    def __init__(
        self,
        file_index: int,
        frame_number: int,
        time: float,
        interface: str | None,
        direction: str | None,
        ip_version: int,
        src: str,
        dst: str,
        ip_id: int | None,
        proto: int,  # IP protocol number: 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6
        sport: int = 0,
        dport: int = 0,
        tcp_flags: int = 0,
        seq: int = 0,
        ack: int = 0,
        payload: bytes = b"",
        payload_len: int = 0,  # on the wire (may exceed len(payload) when the snaplen cut it)
        tunnel: str | None = None,  # "vxlan", "geneve", "gre", "ipip": an inner packet's
        underlay: Tunnel | None = None,  # that tunnel's outer header (innermost when nested)
        dns: list[DnsInfo] | None = None,  # several when one TCP segment carries several
        window: int | None = None,  # TCP: the receive window, unscaled (0 is 0 at any scale)
    ) -> None:
        self.file_index = file_index
        self.frame_number = frame_number
        self.time = time
        self.interface = interface
        self.direction = direction
        self.ip_version = ip_version
        self.src = src
        self.dst = dst
        self.ip_id = ip_id
        self.proto = proto
        self.sport = sport
        self.dport = dport
        self.tcp_flags = tcp_flags
        self.seq = seq
        self.ack = ack
        self.payload = payload
        self.payload_len = payload_len
        self.tunnel = tunnel
        self.underlay = underlay
        self.dns = dns
        self.window = window

    def __repr__(self) -> str:
        return _repr(self)


def _repr(record: object) -> str:
    names = getattr(type(record), "__slots__", ())
    return f"{type(record).__name__}({', '.join(f'{n}={getattr(record, n)!r}' for n in names)})"


# TCP flag bits
# (Final: the compiled build uses them as constants rather than reading module globals.)
FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80

IPPROTO_NAMES: Final = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 132: "sctp", 47: "gre"}


def endpoint(ip: str, port: int, ip_version: int) -> str:
    """'ip:port', with brackets around IPv6 addresses as in URLs."""
    return f"[{ip}]:{port}" if ip_version == 6 else f"{ip}:{port}"


def endpoint_host(text: str) -> str:
    """split_endpoint(text)[0] without reading the port: the end of an analysis asks it of
    every DNS exchange's client."""
    if text.startswith("["):
        end = text.find("]:", 1)
        return text[1:] if end < 0 else text[1:end]
    colon = text.find(":")
    if colon >= 0 and text.find(":", colon + 1) < 0:
        return text[:colon]
    return text


def endpoint_port(text: str) -> int:
    """The port of an endpoint's text; 0 for an address without one (not TCP or UDP)."""
    port = split_endpoint(text)[1]
    return 0 if port is None else port


def split_endpoint(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
        return host, int(port) if port else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, None
