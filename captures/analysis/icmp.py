"""ICMP and ICMPv6: what a control message says and, for an error, which packet it is about.

An error quotes the start of the packet that caused it (RFC 792, RFC 4443 §2.4): its
addresses and, for TCP and UDP, its ports. That quote is what makes the error useful to a
reader: "port unreachable for udp 10.244.1.7:41000 → 10.96.0.10:53" says which lookup failed,
"fragmentation needed (MTU 1450)" which path is too narrow for the packets sent on it, the
classic overlay network problem.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from .records import endpoint

UNREACHABLE_V4 = {
    0: "network unreachable",
    1: "host unreachable",
    2: "protocol unreachable",
    3: "port unreachable",
    4: "fragmentation needed",
    5: "source route failed",
    6: "destination network unknown",
    7: "destination host unknown",
    9: "network administratively prohibited",
    10: "host administratively prohibited",
    13: "communication administratively prohibited",
}
UNREACHABLE_V6 = {
    0: "no route to destination",
    1: "communication administratively prohibited",
    2: "beyond scope of source address",
    3: "address unreachable",
    4: "port unreachable",
    5: "source address failed policy",
    6: "reject route to destination",
}
TIME_EXCEEDED = {0: "in transit", 1: "in fragment reassembly"}
ERRORS_V4 = {3, 4, 5, 11, 12}  # unreachable, source quench, redirect, time exceeded, parameter
ERRORS_V6 = {1, 2, 3, 4}  # unreachable, packet too big, time exceeded, parameter problem
INFORMATIONAL_V6 = {
    130: "multicast listener query",
    131: "multicast listener report",
    132: "multicast listener done",
    133: "router solicitation",
    134: "router advertisement",
    137: "redirect",
    143: "multicast listener report v2",
}


@dataclass(slots=True)
class IcmpInfo:
    label: str  # the arrow's words, e.g. "ICMP port unreachable (udp 10.0.0.2:40000 → ...)"
    error: str | None = None  # what went wrong, for error messages only
    about: str | None = None  # the quoted packet: "udp 10.0.0.2:40000 → 10.0.0.1:53"
    mtu: int | None = None  # what "fragmentation needed" / "packet too big" allows
    quoted: tuple | None = None  # the quoted packet's (proto, src, sport, dst, dport)


def parse_icmp(version: int, payload: bytes) -> IcmpInfo | None:
    """ICMP (IPv4) or ICMPv6 (IPv6) message bytes, or None when too short to say anything."""
    if len(payload) < 4:
        return None
    kind, code = payload[0], payload[1]
    if version == 4:
        return _icmp4(kind, code, payload)
    return _icmp6(kind, code, payload)


def _echo(protocol: str, what: str, payload: bytes) -> IcmpInfo:
    if len(payload) < 8:
        return IcmpInfo(f"{protocol} {what}")
    ident, sequence = struct.unpack_from("!HH", payload, 4)
    return IcmpInfo(f"{protocol} {what} id={ident} seq={sequence}")


def _error(protocol: str, error: str, quoted: tuple | None, mtu: int | None = None) -> IcmpInfo:
    about = _describe(quoted) if quoted else None
    label = f"{protocol} {error}" + (f" ({about})" if about else "")
    return IcmpInfo(label, error, about, mtu, quoted)


def _icmp4(kind: int, code: int, payload: bytes) -> IcmpInfo:
    if kind == 8:
        return _echo("ICMP", "echo request", payload)
    if kind == 0:
        return _echo("ICMP", "echo reply", payload)
    if kind not in ERRORS_V4:
        return IcmpInfo(f"ICMP type {kind} code {code}")
    about = _quoted_ipv4(payload[8:])
    if kind == 3:
        error = UNREACHABLE_V4.get(code, f"destination unreachable (code {code})")
        mtu = None
        if code == 4:
            mtu = struct.unpack_from("!H", payload, 6)[0] if len(payload) >= 8 else 0
            if mtu:  # RFC 1191: zero from routers that predate path MTU discovery
                error = f"fragmentation needed (MTU {mtu})"
            mtu = mtu or None
        return _error("ICMP", error, about, mtu)
    if kind == 11:
        return _error("ICMP", f"TTL exceeded {TIME_EXCEEDED.get(code, f'(code {code})')}", about)
    if kind == 5:
        return _error("ICMP", "redirect", about)
    if kind == 12:
        return _error("ICMP", "parameter problem", about)
    return _error("ICMP", "source quench", about)


def _icmp6(kind: int, code: int, payload: bytes) -> IcmpInfo:
    if kind == 128:
        return _echo("ICMPv6", "echo request", payload)
    if kind == 129:
        return _echo("ICMPv6", "echo reply", payload)
    if kind in (135, 136):
        what = "neighbor solicitation" if kind == 135 else "neighbor advertisement"
        if len(payload) >= 24:
            target = socket.inet_ntop(socket.AF_INET6, payload[8:24])
            what += f" for {target}" if kind == 135 else f" of {target}"
        return IcmpInfo(f"ICMPv6 {what}")
    if kind in INFORMATIONAL_V6:
        return IcmpInfo(f"ICMPv6 {INFORMATIONAL_V6[kind]}")
    if kind not in ERRORS_V6:
        return IcmpInfo(f"ICMPv6 type {kind} code {code}")
    about = _quoted_ipv6(payload[8:])
    if kind == 1:
        error = UNREACHABLE_V6.get(code, f"destination unreachable (code {code})")
        return _error("ICMPv6", error, about)
    if kind == 2:
        mtu = struct.unpack_from("!I", payload, 4)[0] if len(payload) >= 8 else None
        return _error("ICMPv6", f"packet too big (MTU {mtu})", about, mtu)
    if kind == 3:
        error = f"hop limit exceeded {TIME_EXCEEDED.get(code, f'(code {code})')}"
        return _error("ICMPv6", error, about)
    return _error("ICMPv6", "parameter problem", about)


def _quoted_ipv4(quote: bytes) -> tuple | None:
    if len(quote) < 20 or quote[0] >> 4 != 4:
        return None
    header_len = (quote[0] & 0x0F) * 4
    src, dst = socket.inet_ntoa(quote[12:16]), socket.inet_ntoa(quote[16:20])
    return _quoted(quote[9], src, dst, quote[header_len : header_len + 4])


def _quoted_ipv6(quote: bytes) -> tuple | None:
    if len(quote) < 40 or quote[0] >> 4 != 6:
        return None
    src = socket.inet_ntop(socket.AF_INET6, quote[8:24])
    dst = socket.inet_ntop(socket.AF_INET6, quote[24:40])
    return _quoted(quote[6], src, dst, quote[40:44])


def _quoted(proto: int, src: str, dst: str, ports: bytes) -> tuple:
    if proto in (6, 17) and len(ports) == 4:
        sport, dport = struct.unpack("!HH", ports)
        return (proto, src, sport, dst, dport)
    return (proto, src, None, dst, None)


def _describe(quoted: tuple) -> str:
    proto, src, sport, dst, dport = quoted
    if sport is not None:
        version = 6 if ":" in src else 4
        name = "tcp" if proto == 6 else "udp"
        return f"{name} {endpoint(src, sport, version)} → {endpoint(dst, dport, version)}"
    names = {1: "icmp", 58: "icmpv6", 6: "tcp", 17: "udp"}
    return f"{names.get(proto, f'ip proto {proto}')} {src} → {dst}"
