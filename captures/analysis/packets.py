"""Frame bytes → PacketRecord: link layers, IPv4/IPv6, TCP/UDP, tunnels, DNS.

One function per layer, called in a straight line; this is the hot path (every frame of a
million-packet capture passes here), so it avoids objects per layer and parses only the fields
the analysis reads. Frames that carry no IP packet (ARP, STP, LLC) decode to None.
"""

from __future__ import annotations

import socket
import struct
from typing import Final

from .dns import DNS_PORTS, parse_dns, parse_dns_tcp
from .records import PacketRecord, RawFrame, Tunnel

# Link types (https://www.tcpdump.org/linktypes.html). The constants of the per-frame path are
# Final: compiled, any other module global is a dictionary lookup at each use.
LINKTYPE_NULL: Final = 0
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_LOOP: Final = 108
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_LINUX_SLL2: Final = 276
LINKTYPE_NFLOG: Final = 239
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
SUPPORTED_LINKTYPES: Final = frozenset({0, 1, 12, 14, 101, 108, 113, 228, 229, 239, 276})
LINKTYPE_NAMES = {
    0: "null",
    1: "ethernet",
    12: "raw",
    14: "raw",
    101: "raw",
    108: "loop",
    113: "linux-sll",
    228: "ipv4",
    229: "ipv6",
    239: "nflog",
    276: "linux-sll2",
}

ETH_IPV4: Final = 0x0800
ETH_IPV6: Final = 0x86DD
ETH_VLAN: Final = 0x8100
ETH_QINQ: Final = 0x88A8
ETH_QINQ_OLD: Final = 0x9100
ETH_TEB: Final = 0x6558  # transparent Ethernet bridging: GRE/Geneve carrying Ethernet frames
ETH_ERSPAN2: Final = 0x88BE
VXLAN_PORTS: Final = frozenset({4789, 8472})  # IANA, and the Linux/flannel default
GENEVE_PORT: Final = 6081
GRE_IN_UDP_PORT: Final = 4754
# Checked before any tunnel parsing, so the other UDP packets (DNS, QUIC, ...) cost one set test.
TUNNEL_UDP_PORTS: Final = VXLAN_PORTS | {GENEVE_PORT, GRE_IN_UDP_PORT}
SLL_OUTGOING: Final = 4
NFLOG_HOOKS: dict[int | None, str] = {
    0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}
MAX_TUNNEL_DEPTH: Final = 4

_unpack = struct.unpack_from
_ntoa: Final = socket.inet_ntoa
_addr_cache: Final[dict[bytes, str]] = {}


def _ip4(raw: bytes) -> str:
    text = _addr_cache.get(raw)
    if text is None:
        text = _ntoa(raw)
        if len(_addr_cache) < 65536:
            _addr_cache[raw] = text
    return text


def _ip6(raw: bytes) -> str:
    text = _addr_cache.get(raw)
    if text is None:
        text = socket.inet_ntop(socket.AF_INET6, raw)
        if len(_addr_cache) < 65536:
            _addr_cache[raw] = text
    return text


def decode_frame(
    frame: RawFrame, interface_names: dict[int, str] | None = None
) -> PacketRecord | None:
    """Decode one frame; interface_names maps SLL2/NFLOG interface indexes to names."""
    data = frame.data
    linktype = frame.linktype
    interface, direction = frame.interface, frame.direction
    if linktype == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return None
        ethertype = data[12] << 8 | data[13]
        if ethertype == ETH_IPV4:
            return _ipv4(data, 14, frame, interface, direction, 0)
        return _ethertype(data, 14, ethertype, frame, interface, direction, 0)
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return None
        proto, _res, ifindex, _hatype, pkttype = _unpack("!HHIHB", data)
        name = (interface_names or {}).get(ifindex) or f"if{ifindex}"
        return _ethertype(
            data, 20, proto, frame, name, "out" if pkttype == SLL_OUTGOING else "in", 0
        )
    if linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return None
        pkttype = _unpack("!H", data)[0]
        proto = _unpack("!H", data, 14)[0]
        return _ethertype(
            data, 16, proto, frame, interface, "out" if pkttype == SLL_OUTGOING else "in", 0
        )
    if linktype in (LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return _ip_any(data, 0, frame, interface, direction, 0)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        return _ip_any(data, 4, frame, interface, direction, 0)
    if linktype == LINKTYPE_NFLOG:
        return _nflog(data, frame, interface_names)
    return None


def _ethernet(
    data: bytes,
    offset: int,
    frame: RawFrame,
    interface: str | None,
    direction: str | None,
    depth: int,
) -> PacketRecord | None:
    if len(data) < offset + 14:
        return None
    ethertype = _unpack("!H", data, offset + 12)[0]
    return _ethertype(data, offset + 14, ethertype, frame, interface, direction, depth)


def _ethertype(
    data: bytes,
    offset: int,
    ethertype: int,
    frame: RawFrame,
    interface: str | None,
    direction: str | None,
    depth: int,
) -> PacketRecord | None:
    # VLAN tags (802.1Q, QinQ) stack in front of the real ethertype.
    for _ in range(4):
        if ethertype not in (ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD):
            break
        if len(data) < offset + 4:
            return None
        ethertype = _unpack("!H", data, offset + 2)[0]
        offset += 4
    if ethertype == ETH_IPV4:
        return _ipv4(data, offset, frame, interface, direction, depth)
    if ethertype == ETH_IPV6:
        return _ipv6(data, offset, frame, interface, direction, depth)
    return None


def _ip_any(
    data: bytes,
    offset: int,
    frame: RawFrame,
    interface: str | None,
    direction: str | None,
    depth: int,
) -> PacketRecord | None:
    if len(data) <= offset:
        return None
    version = data[offset] >> 4
    if version == 4:
        return _ipv4(data, offset, frame, interface, direction, depth)
    if version == 6:
        return _ipv6(data, offset, frame, interface, direction, depth)
    return None


def _ipv4(
    data: bytes,
    offset: int,
    frame: RawFrame,
    interface: str | None,
    direction: str | None,
    depth: int,
) -> PacketRecord | None:
    if len(data) < offset + 20:
        return None
    # Byte by byte rather than with struct: compiled, indexing bytes and shifting are native
    # operations, where a Struct's unpack_from was a Python method call (a thousand
    # instructions a packet, and an object for every field).
    first = data[offset]
    total_len = data[offset + 2] << 8 | data[offset + 3]
    ip_id = data[offset + 4] << 8 | data[offset + 5]
    frag = data[offset + 6] << 8 | data[offset + 7]
    proto = data[offset + 9]
    raw_src = data[offset + 12 : offset + 16]
    raw_dst = data[offset + 16 : offset + 20]
    header_len = (first & 0x0F) * 4
    if first >> 4 != 4 or header_len < 20:
        return None
    src = _addr_cache.get(raw_src) or _ip4(raw_src)
    dst = _addr_cache.get(raw_dst) or _ip4(raw_dst)
    # Ethernet pads short frames; the IP length says where the packet really ends. TSO
    # captures may record total_len 0: then the frame itself is the bound.
    end = offset + total_len if total_len >= header_len else len(data)
    wire_payload = (total_len or (len(data) - offset)) - header_len
    if frag & 0x1FFF:  # a later fragment: no transport header in it
        return PacketRecord(
            frame.file_index,
            frame.frame_number,
            frame.time,
            interface,
            direction,
            4,
            src,
            dst,
            ip_id,
            proto,
            payload_len=max(wire_payload, 0),
        )
    return _transport(
        data,
        offset + header_len,
        min(end, len(data)),
        wire_payload,
        proto,
        4,
        src,
        dst,
        ip_id,
        frame,
        interface,
        direction,
        depth,
    )


IPV6_EXTENSION_HEADERS: Final = frozenset({0, 43, 60, 135, 139, 140})


def _ipv6(
    data: bytes,
    offset: int,
    frame: RawFrame,
    interface: str | None,
    direction: str | None,
    depth: int,
) -> PacketRecord | None:
    if len(data) < offset + 40:
        return None
    payload_len = data[offset + 4] << 8 | data[offset + 5]  # byte by byte: see _ipv4
    next_header = data[offset + 6]
    src = _ip6(data[offset + 8 : offset + 24])
    dst = _ip6(data[offset + 24 : offset + 40])
    start = offset + 40
    end = min(start + payload_len, len(data)) if payload_len else len(data)
    wire_payload = payload_len or (len(data) - start)
    for _ in range(8):
        if next_header in IPV6_EXTENSION_HEADERS:
            if len(data) < start + 2:
                return None
            ext_len = (data[start + 1] + 1) * 8
        elif next_header == 44:  # fragment header
            if len(data) < start + 8:
                return None
            if _unpack("!H", data, start + 2)[0] & 0xFFF8:  # not the first fragment
                return PacketRecord(
                    frame.file_index,
                    frame.frame_number,
                    frame.time,
                    interface,
                    direction,
                    6,
                    src,
                    dst,
                    None,
                    data[start],
                    payload_len=wire_payload,
                )
            ext_len = 8
        elif next_header == 51:  # authentication header
            if len(data) < start + 2:
                return None
            ext_len = (data[start + 1] + 2) * 4
        else:
            break
        next_header = data[start]
        start += ext_len
        wire_payload -= ext_len
    return _transport(
        data,
        start,
        end,
        wire_payload,
        next_header,
        6,
        src,
        dst,
        None,
        frame,
        interface,
        direction,
        depth,
    )


def _transport(
    data: bytes,
    start: int,
    end: int,
    wire_payload: int,
    proto: int,
    version: int,
    src: str,
    dst: str,
    ip_id: int | None,
    frame: RawFrame,
    interface: str | None,
    direction: str | None,
    depth: int,
) -> PacketRecord | None:
    if proto == 6 and end - start >= 20:
        # Byte by byte: see _ipv4. (end never passes the data's own end.)
        sport = data[start] << 8 | data[start + 1]
        dport = data[start + 2] << 8 | data[start + 3]
        seq = (data[start + 4] << 24 | data[start + 5] << 16 | data[start + 6] << 8
               | data[start + 7])
        ack = (data[start + 8] << 24 | data[start + 9] << 16 | data[start + 10] << 8
               | data[start + 11])
        header_len = (data[start + 12] >> 4) * 4
        flags = data[start + 13]
        window = data[start + 14] << 8 | data[start + 15]
        # Never a slice that starts past its end: compiled (mypyc 1.x), bytes[a:b] with a > b
        # asks for a negative length and fails, where Python gives b"".
        payload = data[min(start + header_len, end) : end]
        record = PacketRecord(
            frame.file_index,
            frame.frame_number,
            frame.time,
            interface,
            direction,
            version,
            src,
            dst,
            ip_id,
            6,
            sport,
            dport,
            flags,
            seq,
            ack,
            payload,
            max(wire_payload - header_len, 0),
            window=window,
        )
        if payload and (sport == 53 or dport == 53):
            record.dns = parse_dns_tcp(payload) or None
        return record
    if proto == 17 and end - start >= 8:
        sport = data[start] << 8 | data[start + 1]
        dport = data[start + 2] << 8 | data[start + 3]
        payload = data[start + 8 : end]
        if depth < MAX_TUNNEL_DEPTH and dport in TUNNEL_UDP_PORTS:
            inner = _udp_tunnel(
                data, start + 8, end, dport, src, dst, frame, interface, direction, depth
            )
            if inner is not None:
                return inner
        record = PacketRecord(
            frame.file_index,
            frame.frame_number,
            frame.time,
            interface,
            direction,
            version,
            src,
            dst,
            ip_id,
            17,
            sport,
            dport,
            payload=payload,
            payload_len=max(wire_payload - 8, 0),
        )
        if sport in DNS_PORTS or dport in DNS_PORTS:
            info = parse_dns(payload)
            if info is not None:
                record.dns = [info]
        return record
    if depth < MAX_TUNNEL_DEPTH:
        if proto == 47:
            inner = _gre(data, start, end, src, dst, None, frame, interface, direction, depth)
            if inner is not None:
                return inner
        elif proto in (4, 41):  # IP-in-IP, IPv6-in-IP
            inner = _ip_any(data[:end], start, frame, interface, direction, depth + 1)
            if inner is not None:
                return _encapsulated(inner, "ipip", src, dst, None, None)
    return PacketRecord(
        frame.file_index,
        frame.frame_number,
        frame.time,
        interface,
        direction,
        version,
        src,
        dst,
        ip_id,
        proto,
        payload=data[min(start, end) : end],  # see the TCP header's slice
        payload_len=max(wire_payload, 0),
    )


def _encapsulated(
    inner: PacketRecord, kind: str, src: str, dst: str, port: int | None, ident: int | None
) -> PacketRecord:
    """Mark an inner packet with the tunnel that carried it. Nested tunnels keep the
    innermost one: the recursion marks it first, on the way back out."""
    if inner.tunnel is None:
        inner.tunnel = kind
        inner.underlay = Tunnel(kind, src, dst, port, ident)
    return inner


def _udp_tunnel(
    data: bytes,
    start: int,
    end: int,
    dport: int,
    src: str,
    dst: str,
    frame: RawFrame,
    interface: str | None,
    direction: str | None,
    depth: int,
) -> PacketRecord | None:
    """VXLAN, Geneve or GRE-in-UDP after a UDP header at `start`; src/dst are the outer
    addresses. VXLAN and Geneve both carry the 24-bit VNI in bytes 4-6 of their header."""
    if dport in VXLAN_PORTS and end - start >= 8 and data[start] & 0x08:
        inner = _ethernet(data[:end], start + 8, frame, interface, direction, depth + 1)
        if inner is None:
            return None
        vni = _unpack("!I", data, start + 4)[0] >> 8
        return _encapsulated(inner, "vxlan", src, dst, dport, vni)
    if dport == GENEVE_PORT and end - start >= 8 and data[start] >> 6 == 0:
        options_len = (data[start] & 0x3F) * 4
        proto = _unpack("!H", data, start + 2)[0]
        inner_at = start + 8 + options_len
        if proto == ETH_TEB:
            inner = _ethernet(data[:end], inner_at, frame, interface, direction, depth + 1)
        else:
            inner = _ethertype(data[:end], inner_at, proto, frame, interface, direction, depth + 1)
        if inner is None:
            return None
        vni = _unpack("!I", data, start + 4)[0] >> 8
        return _encapsulated(inner, "geneve", src, dst, dport, vni)
    if dport == GRE_IN_UDP_PORT:
        return _gre(data, start, end, src, dst, dport, frame, interface, direction, depth)
    return None


def _gre(
    data: bytes,
    start: int,
    end: int,
    src: str,
    dst: str,
    port: int | None,
    frame: RawFrame,
    interface: str | None,
    direction: str | None,
    depth: int,
) -> PacketRecord | None:
    if end - start < 4:
        return None
    flags, proto = _unpack("!HH", data, start)
    if flags & 0x0007:  # only GRE version 0 carries packets
        return None
    has_checksum = bool(flags & 0x8000)
    offset = start + 4 + 4 * (has_checksum + bool(flags & 0x2000) + bool(flags & 0x1000))
    if proto == ETH_ERSPAN2:
        offset += 8
        proto = ETH_TEB
    if proto == ETH_TEB:
        inner = _ethernet(data[:end], offset, frame, interface, direction, depth + 1)
    else:
        inner = _ethertype(data[:end], offset, proto, frame, interface, direction, depth + 1)
    if inner is None:
        return None
    key = None
    if flags & 0x2000:  # the key follows the checksum word, when there is one
        key_at = start + 4 + 4 * has_checksum
        key = _unpack("!I", data, key_at)[0]
    return _encapsulated(inner, "gre", src, dst, port, key)


def _nflog(
    data: bytes, frame: RawFrame, interface_names: dict[int, str] | None
) -> PacketRecord | None:
    """LINKTYPE_NFLOG: iptables' NFLOG target. The hook names the vantage point."""
    if len(data) < 4:
        return None
    offset = 4
    hook = None
    payload = None
    indev = outdev = None
    while offset + 4 <= len(data):
        length, tlv_type = struct.unpack_from("<HH", data, offset)  # host byte order
        if length < 4:
            break
        value = data[offset + 4 : offset + length]
        if tlv_type == 1 and len(value) >= 3:
            hook = value[2]
        elif tlv_type == 4 and len(value) >= 4:
            indev = _unpack("!I", value)[0]
        elif tlv_type == 5 and len(value) >= 4:
            outdev = _unpack("!I", value)[0]
        elif tlv_type == 9:
            payload = value
        offset += (length + 3) & ~3
    if payload is None:
        return None
    hook_name = NFLOG_HOOKS.get(hook, f"hook{hook}")
    names = interface_names or {}
    device = outdev if hook in (3, 4) else indev
    where = f"nflog:{hook_name}"
    if device:
        where += f":{names.get(device) or f'if{device}'}"
    direction = "out" if hook in (3, 4) else "in"
    return _ip_any(payload, 0, frame, where, direction, 0)
