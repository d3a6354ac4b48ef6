"""Several capture files → one pcapng, in time order, with an interface per place and interface.

A capture of a path is several files (the client pod, its node, each backend and its node).
Wireshark opens the merged file with every packet's origin intact: each output interface is
named "<vantage> <interface>" (`node/node-1 eth0`, `pod/default/ubuntu lo`), so
`frame.interface_name` says where a copy was seen, as the separate files did.

Exact on purpose, unlike the analysis' reader (captures.analysis.pcapfile), which keeps only
what the analysis needs: timestamps are whole nanoseconds, the original length, the direction
flags and the link type are copied as stored. A cooked `-i any` capture (Linux cooked v2)
written as classic pcap carries only the interface index in each packet, so the file's
interface names (its meta: index → name) name one output interface per index seen.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from captures.analysis.pcapfile import MAX_BLOCK, MAX_RECORD, PCAP_MAGICS, PCAPNG_SHB
from captures.analysis.records import CaptureError

LINUX_SLL2 = 276
CHUNK = 256 * 1024  # bytes handed out at a time
NANOSECONDS = 10**9


def block(btype: int, body: bytes) -> bytes:
    """A pcapng block: type, total length, body padded to 32 bits, total length again."""
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


END_OF_OPTIONS = struct.pack("<HH", 0, 0)


def section_header(application: str = "kviz") -> bytes:
    return block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
                 + option(4, application.encode()) + END_OF_OPTIONS)


def interface_block(linktype: int, name: str, resolution: int = 6) -> bytes:
    """An interface with its name, its timestamps in units of 10^-resolution s (6: the
    microseconds dumpcap records in)."""
    return block(1, struct.pack("<HHI", linktype, 0, 0) + option(2, name.encode())
                 + option(9, bytes([resolution])) + END_OF_OPTIONS)


def packet_block(interface: int, seconds: float, data: bytes, resolution: int = 6) -> bytes:
    """A recorded frame's bytes at another time or on another interface (its interface's
    `resolution`)."""
    ticks = round(seconds * 10**resolution)
    return block(6, struct.pack("<IIIII", interface, ticks >> 32, ticks & 0xFFFFFFFF,
                                len(data), len(data)) + data)


@dataclass(frozen=True)
class MergeInput:
    """One file to merge: its path, and how to name its interfaces."""

    path: str
    label: str  # the vantage, or the uploaded file's name
    interfaces: dict[int, str] = field(default_factory=dict)  # index → name (cooked captures)


@dataclass(slots=True)
class _Record:
    ns: int
    order: int  # which input: equal timestamps keep the inputs' order
    key: tuple  # the input's interface: (order, interface id) or (order, "sll2", ifindex)
    linktype: int
    if_name: str | None
    data: bytes
    wire_length: int
    flags: int | None

    def __lt__(self, other: _Record) -> bool:
        return (self.ns, self.order) < (other.ns, other.order)


def merged_pcapng(inputs: Iterable[MergeInput]) -> Iterator[bytes]:
    """The merged file, in chunks. A file that cannot be read raises CaptureError before the
    first chunk (each is opened first); one cut off mid-record ends where it ends."""
    inputs = list(inputs)
    streams = [_records(item, order) for order, item in enumerate(inputs)]
    for stream in streams:
        next(stream)  # opens the file and reads its header: errors surface now
    ids: dict[tuple, int] = {}
    pending = [section_header()]
    size = len(pending[0])
    for record in heapq.merge(*streams):
        interface = ids.get(record.key)
        if interface is None:
            interface = ids[record.key] = len(ids)
            described = _interface_block(record, inputs[record.order])
            pending.append(described)
            size += len(described)
        packet = _packet_block(interface, record)
        pending.append(packet)
        size += len(packet)
        if size >= CHUNK:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _interface_block(record: _Record, item: MergeInput) -> bytes:
    name = f"{item.label} {record.if_name}" if record.if_name else item.label
    options = (option(2, name.encode()[:200]) + option(3, item.label.encode()[:200])
               + option(9, bytes([9])) + END_OF_OPTIONS)
    return block(1, struct.pack("<HHI", record.linktype, 0, 0) + options)


def _packet_block(interface: int, record: _Record) -> bytes:
    head = struct.pack("<IIIII", interface, record.ns >> 32, record.ns & 0xFFFFFFFF,
                       len(record.data), record.wire_length)
    data = record.data + b"\0" * (-len(record.data) % 4)
    options = b""
    if record.flags is not None:
        options = option(2, struct.pack("<I", record.flags)) + END_OF_OPTIONS
    return block(6, head + data + options)


def _records(item: MergeInput, order: int) -> Iterator[_Record | None]:
    """Yields None once the header is read, then the file's records."""
    with open(item.path, "rb") as fp:
        magic = fp.read(4)
        if magic in PCAP_MAGICS:
            reader = _pcap_records(fp, magic, item, order)
        elif magic == PCAPNG_SHB:
            reader = _pcapng_records(fp, item, order)
        else:
            raise CaptureError(f"{item.label}: not a pcap or pcapng capture")
        yield None
        yield from reader


def _pcap_records(fp, magic: bytes, item: MergeInput, order: int) -> Iterator[_Record]:
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nanosecond = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    header = fp.read(20)
    if len(header) < 20:
        raise CaptureError(f"{item.label}: the pcap header is cut off")
    linktype = struct.unpack(endian + "I", header[16:20])[0] & 0x0FFFFFFF
    record_head = struct.Struct(endian + "IIII")
    while True:
        head = fp.read(16)
        if len(head) < 16:
            return
        seconds, fraction, caplen, wire_length = record_head.unpack(head)
        if caplen > MAX_RECORD:
            return
        data = fp.read(caplen)
        if len(data) < caplen:
            return
        ns = seconds * NANOSECONDS + (fraction if nanosecond else fraction * 1000)
        yield _cooked(item, order, linktype, _only_name(item), (order, 0), ns, data,
                      wire_length, None)


def _cooked(item: MergeInput, order: int, linktype: int, name: str | None, key: tuple, ns: int,
            data: bytes, wire_length: int, flags: int | None) -> _Record:
    """A record; a `-i any` capture's (Linux cooked v2) is split by the interface index the
    packet carries at bytes 4-7, so each real interface is its own output interface."""
    if linktype == LINUX_SLL2 and len(data) >= 8:
        ifindex = struct.unpack_from(">I", data, 4)[0]
        return _Record(ns, order, (order, "sll2", ifindex), linktype,
                       item.interfaces.get(ifindex) or f"if{ifindex}", data, wire_length, flags)
    return _Record(ns, order, key, linktype, name, data, wire_length, flags)


def _only_name(item: MergeInput) -> str | None:
    # A classic pcap of one interface names none; the meta names it when it lists just one.
    return next(iter(item.interfaces.values())) if len(item.interfaces) == 1 else None


def _pcapng_records(fp, item: MergeInput, order: int) -> Iterator[_Record]:
    head, section, endian = PCAPNG_SHB, 0, "<"
    interfaces: list[tuple[int, str | None, int, int, int]] = []
    while True:
        head += fp.read(12 - len(head))
        if len(head) < 12:
            return
        if head[:4] == PCAPNG_SHB:  # a section has its own byte order and interfaces
            endian = "<" if head[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
            section += 1
            interfaces = []
        btype, total = struct.unpack_from(endian + "II", head)
        if total < 12 or total % 4 or total > MAX_BLOCK:
            return  # corrupt: the rest cannot be placed
        body = head[8:] + fp.read(total - 12)
        head = b""
        if len(body) < total - 8:
            return  # cut off
        body = body[:total - 12]
        if btype == 1 and len(body) >= 8:
            interfaces.append(_describe(body, endian, item, len(interfaces)))
        elif btype == 6 and len(body) >= 20:
            iface, high, low, caplen, wire_length = struct.unpack_from(endian + "IIIII", body)
            if iface >= len(interfaces):
                continue
            linktype, name, multiplier, divisor, offset = interfaces[iface]
            packet = body[20:20 + caplen]
            flags = None
            for code, value in _options(body, 20 + ((caplen + 3) & ~3), endian):
                if code == 2 and len(value) == 4:
                    flags = struct.unpack(endian + "I", value)[0]
            ns = ((high << 32) | low) * multiplier // divisor + offset
            yield _cooked(item, order, linktype, name, (order, section, iface), ns, packet,
                          wire_length, flags)


def _describe(body: bytes, endian: str, item: MergeInput, index: int):
    """An input interface: (linktype, name, ns = ticks * multiplier // divisor + offset)."""
    linktype = struct.unpack_from(endian + "H", body)[0]
    name, multiplier, divisor, offset = None, 1000, 1, 0  # default resolution: microseconds
    for code, value in _options(body, 8, endian):
        if code == 2:
            name = value.rstrip(b"\0").decode("utf-8", "replace") or None
        elif code == 9 and value:
            exponent = value[0] & 0x7F
            if value[0] & 0x80:  # 2^-exponent seconds per tick
                multiplier, divisor = NANOSECONDS, 1 << exponent
            elif exponent <= 9:
                multiplier, divisor = 10 ** (9 - exponent), 1
            else:  # finer than nanoseconds: kept to the nanosecond
                multiplier, divisor = 1, 10 ** (exponent - 9)
        elif code == 14 and len(value) == 8:
            offset = struct.unpack(endian + "q", value)[0] * NANOSECONDS
    return linktype, name or item.interfaces.get(index), multiplier, divisor, offset


def _options(body: bytes, offset: int, endian: str) -> Iterator[tuple[int, bytes]]:
    while offset + 4 <= len(body):
        code, length = struct.unpack_from(endian + "HH", body, offset)
        if code == 0:
            return
        yield code, body[offset + 4:offset + 4 + length]
        offset += 4 + ((length + 3) & ~3)
