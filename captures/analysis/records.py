"""Plain data that flows through the analysis: one PacketRecord per captured frame.

Decoding fills these once; everything downstream reads them and never touches bytes again,
except the TCP stream parsers that keep a bounded prefix of each direction (TLS, HTTP/2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class CaptureError(Exception):
    """The input cannot be read as a capture at all (the message says why)."""


@dataclass(slots=True)
class RawFrame:
    """One frame as the file stores it, before any protocol decoding."""

    file_index: int
    frame_number: int  # 1-based within its file, as Wireshark counts
    time: float  # epoch seconds
    linktype: int
    data: bytes
    interface: str | None = None  # name when the file knows it (pcapng IDB)
    direction: str | None = None  # "in" / "out" when the file knows it (pcapng epb_flags)


class Tunnel(NamedTuple):
    """The outer header of an encapsulated packet: what a reader needs to name the underlay
    hop ("VXLAN 8472 node-1 → node-2, vni 1"). Made only for tunnelled packets."""

    kind: str  # "vxlan", "geneve", "gre", "ipip"
    src: str  # the underlay's (outer) addresses: the tunnel's two ends
    dst: str
    port: int | None  # the UDP destination port (VXLAN, Geneve, GRE-in-UDP), else None
    ident: int | None  # the VNI (VXLAN, Geneve) or the GRE key, when the header has one


@dataclass(slots=True)
class DnsInfo:
    id: int
    is_response: bool
    rcode: int
    name: str
    qtype: int
    answers: list[tuple[str, int, str]] = field(default_factory=list)  # (name, type, value)
    truncated: bool = False  # TC: the answer did not fit (UDP); the client should ask over TCP
    answers_cut: int = 0  # records past dns.MAX_ANSWERS, not read


@dataclass(slots=True)
class PacketRecord:
    file_index: int
    frame_number: int
    time: float
    interface: str | None
    direction: str | None
    ip_version: int
    src: str
    dst: str
    ip_id: int | None
    proto: int  # IP protocol number: 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6
    sport: int = 0
    dport: int = 0
    tcp_flags: int = 0
    seq: int = 0
    ack: int = 0
    payload: bytes = b""
    payload_len: int = 0  # on the wire (may exceed len(payload) when the snaplen cut it)
    tunnel: str | None = None  # "vxlan", "geneve", "gre", "ipip" when this is an inner packet
    underlay: Tunnel | None = None  # that tunnel's outer header (innermost tunnel when nested)
    dns: list[DnsInfo] | None = None  # several when one TCP segment carries several
    window: int | None = None  # TCP: the receive window field, unscaled (0 is 0 at any scale)


# TCP flag bits
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

IPPROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 132: "sctp", 47: "gre"}


def endpoint(ip: str, port: int, ip_version: int) -> str:
    """'ip:port', with brackets around IPv6 addresses as in URLs."""
    return f"[{ip}]:{port}" if ip_version == 6 else f"{ip}:{port}"


def split_endpoint(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
        return host, int(port) if port else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, None
