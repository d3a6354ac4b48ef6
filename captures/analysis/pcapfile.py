"""Reading pcap and pcapng files into RawFrames, streaming, with bounded memory.

Damage is reported, not raised, once the file has proved to be a capture: a cut-off last
record or a corrupt block ends the reading with a warning, and everything before it is kept.
Only input that is not a capture at all (wrong magic, empty) raises CaptureError.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

from .records import CaptureError, RawFrame

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
# No real link layer frame comes near this; a record that claims more is corruption.
MAX_RECORD = 262_144 * 4
MAX_BLOCK = 16 * 1024 * 1024
# Interface descriptions kept per pcapng section; packets on interfaces past these are skipped
# (a capture tool writes one per interface it captured on: a few, or a few hundred).
MAX_INTERFACES = 4096


MAX_WARNINGS = 100  # distinct warnings kept; the flag `partial` counts them all


class Warnings:
    """Collects what went wrong while reading, so the result can be flagged partial.

    Past a bound, a warning is added for every packet it concerns: the check is a set lookup,
    and once MAX_WARNINGS are kept, a length test."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.seen: set[str] = set()
        self.partial = False

    def add(self, message: str, partial: bool = True) -> None:
        if len(self.messages) < MAX_WARNINGS and message not in self.seen:
            self.seen.add(message)
            self.messages.append(message)
        self.partial = self.partial or partial


def read_frames(
    fp: BinaryIO, file_index: int, warnings: Warnings, name: str = "capture"
) -> tuple[list[int], Iterator[RawFrame]]:
    """Open a capture: returns (link types seen in its header(s), frame iterator)."""
    head = fp.read(4)
    if not head:
        raise CaptureError(f"{name}: the file is empty")
    if head in PCAP_MAGICS:
        return _open_pcap(fp, head, file_index, warnings, name)
    if head == PCAPNG_SHB:
        return _open_pcapng(fp, file_index, warnings, name)
    if head[:2] == b"\x1f\x8b":
        raise CaptureError(f"{name}: this is a gzip file; decompress it first (gunzip)")
    raise CaptureError(f"{name}: not a pcap or pcapng capture (starts with bytes {head.hex()})")


def _open_pcap(
    fp: BinaryIO, magic: bytes, file_index: int, warnings: Warnings, name: str
) -> tuple[list[int], Iterator[RawFrame]]:
    endian, unit = PCAP_MAGICS[magic]
    header = fp.read(20)
    if len(header) < 20:
        raise CaptureError(f"{name}: the pcap header is cut off")
    _major, _minor, _zone, _sigfigs, snaplen, network = struct.unpack(endian + "HHiIII", header)
    linktype = network & 0x0FFFFFFF  # upper bits carry FCS info on some writers
    if snaplen == 0 or snaplen > MAX_RECORD:
        warnings.add(
            f"{name}: header snaplen {snaplen} is implausible; "
            "reading records by their own lengths",
            partial=False,
        )
    little = endian == "<"

    def frames() -> Iterator[RawFrame]:
        number = 0
        more = _refiller(fp)
        buf, pos = b"", 0
        while True:
            if len(buf) - pos < 16:
                buf, pos = more(buf, pos, 16)
                if len(buf) < 16:
                    if buf:
                        warnings.add(
                            f"{name}: file ends inside a record header after frame {number}"
                        )
                    return
            sec = _u32(buf, pos, little)
            frac = _u32(buf, pos + 4, little)
            caplen = _u32(buf, pos + 8, little)
            if caplen > MAX_RECORD:
                warnings.add(
                    f"{name}: record after frame {number} claims {caplen} bytes; "
                    "the rest of the file is unreadable"
                )
                return
            end = pos + 16 + caplen
            if end > len(buf):
                buf, pos = more(buf, pos, 16 + caplen)
                end = 16 + caplen
                if end > len(buf):
                    warnings.add(f"{name}: file ends inside frame {number + 1} (cut off)")
                    return
            number += 1
            yield RawFrame(file_index, number, sec + frac * unit, linktype, buf[pos + 16 : end])
            pos = end

    return [linktype], frames()


def _open_pcapng(
    fp: BinaryIO, file_index: int, warnings: Warnings, name: str
) -> tuple[list[int], Iterator[RawFrame]]:
    # Read the first section header now: a broken one means this is no capture at all.
    probe = Warnings()
    endian = _read_shb(fp, PCAPNG_SHB + fp.read(4), name, probe)
    if endian is None:
        raise CaptureError(f"{name}: pcapng section header is damaged ({probe.messages[0]})")
    return [], _pcapng_frames(fp, file_index, warnings, name, endian)


def _options(body: bytes, offset: int, endian: str) -> Iterator[tuple[int, bytes]]:
    unpack = struct.unpack_from
    while offset + 4 <= len(body):
        code, length = unpack(endian + "HH", body, offset)
        if code == 0:
            return
        value = body[offset + 4 : offset + 4 + length]
        yield code, value
        offset += 4 + ((length + 3) & ~3)


def _pcapng_frames(
    fp: BinaryIO, file_index: int, warnings: Warnings, name: str, endian: str
) -> Iterator[RawFrame]:
    # Per section: interfaces are (linktype, name, seconds-per-tick).
    interfaces: list[tuple[int, str | None, float]] = []
    described = 0  # interface blocks in this section, kept or not (MAX_INTERFACES)
    number = 0
    more = _refiller(fp)
    buf, pos = b"", 0
    # Typed, so that the compiled build does their arithmetic on machine integers.
    btype: int
    total: int
    iface: int
    ts_high: int
    ts_low: int
    caplen: int
    if not endian:
        return
    little = endian == "<"
    while True:  # a new section's byte order is never empty: an unreadable one returns
        if len(buf) - pos < 8:
            buf, pos = more(buf, pos, 8)
            if len(buf) < 8:
                if buf:
                    warnings.add(f"{name}: file ends inside a block header after frame {number}")
                return
        btype, total = _u32(buf, pos, little), _u32(buf, pos + 4, little)
        if btype == 0x0A0D0D0A:  # a new section: its own byte order, its own interfaces
            if len(buf) - pos < 12:
                buf, pos = more(buf, pos, 12)
            section_endian = _section_endian(buf[pos + 8 : pos + 12])
            if section_endian is None:
                warnings.add(f"{name}: corrupt pcapng section header")
                return
            endian = section_endian
            little = endian == "<"
            total = _u32(buf, pos + 4, little)
            if total < 28:
                warnings.add(f"{name}: corrupt pcapng section header")
                return
            interfaces = []
            described = 0
        if total < 12 or total % 4 or total > MAX_BLOCK:
            warnings.add(f"{name}: corrupt block after frame {number}; the rest is unreadable")
            return
        end = pos + total
        if end > len(buf):
            buf, pos = more(buf, pos, total)
            end = total
            if end > len(buf):
                warnings.add(f"{name}: file ends inside a block after frame {number} (cut off)")
                return
        start, body_end, pos = pos + 8, end - 4, end
        if btype == 6:  # Enhanced Packet Block
            if body_end - start < 20:
                warnings.add(f"{name}: short packet block after frame {number}")
                continue
            iface = _u32(buf, start, little)
            ts_high = _u32(buf, start + 4, little)
            ts_low = _u32(buf, start + 8, little)
            caplen = _u32(buf, start + 12, little)
            data_at = start + 20
            data_end = data_at + caplen
            data = buf[data_at : data_end if data_end <= body_end else body_end]
            direction = None
            opts_at = data_at + ((caplen + 3) & ~3)
            if opts_at < body_end:
                for code, value in _options(buf[opts_at:body_end], 0, endian):
                    if code == 2 and len(value) == 4:  # epb_flags
                        bits = struct.unpack(endian + "I", value)[0] & 3
                        direction = {1: "in", 2: "out"}.get(bits)
            number += 1
            if iface >= len(interfaces):
                if iface < described:
                    warnings.add(f"{name}: more than {MAX_INTERFACES} interfaces in a section: "
                                 "packets on the later ones are skipped")
                else:
                    warnings.add(f"{name}: frame {number} names interface {iface}, "
                                 "not described")
                continue
            linktype, if_name, tick = interfaces[iface]
            yield RawFrame(
                file_index,
                number,
                ((ts_high << 32) | ts_low) * tick,
                linktype,
                data,
                if_name,
                direction,
            )
            continue
        body = buf[start:body_end]
        if btype == 1:  # Interface Description Block
            if len(body) < 8:
                warnings.add(f"{name}: short interface block")
                continue
            linktype, _reserved, _snaplen = struct.unpack_from(endian + "HHI", body)
            if_name, tick, offset = None, 1e-6, 0.0
            for code, value in _options(body, 8, endian):
                if code == 2:
                    if_name = value.rstrip(b"\0").decode("utf-8", "replace") or None
                elif code == 9 and value:
                    resol = value[0]
                    tick = 2.0 ** -(resol & 0x7F) if resol & 0x80 else 10.0**-resol
                elif code == 14 and len(value) == 8:
                    offset = float(struct.unpack(endian + "q", value)[0])
            if offset:
                warnings.add(f"{name}: interface time offsets are ignored", partial=False)
            described += 1
            if len(interfaces) < MAX_INTERFACES:
                interfaces.append((linktype, if_name, tick))
        elif btype == 3:  # Simple Packet Block: interface 0, no timestamp
            number += 1
            if not interfaces:
                continue
            linktype, if_name, _tick = interfaces[0]
            yield RawFrame(file_index, number, 0.0, linktype, body[4:], if_name)
        elif btype == 2:  # obsolete Packet Block
            if len(body) < 20:
                warnings.add(f"{name}: short packet block after frame {number}")
                continue
            iface, _drops, ts_high, ts_low, caplen, _wirelen = struct.unpack_from(
                endian + "HHIIII", body
            )
            number += 1
            if iface >= len(interfaces) > 0 and iface < described:
                warnings.add(f"{name}: more than {MAX_INTERFACES} interfaces in a section: "
                             "packets on the later ones are skipped")
            elif iface < len(interfaces):
                linktype, if_name, tick = interfaces[iface]
                yield RawFrame(
                    file_index,
                    number,
                    ((ts_high << 32) | ts_low) * tick,
                    linktype,
                    body[20 : 20 + caplen],
                    if_name,
                )
        # other blocks (name resolution, statistics, custom) carry nothing we use


READ_BLOCK = 1 << 20


def _refiller(fp: BinaryIO) -> Callable[[bytes, int, int], tuple[bytes, int]]:
    """more(buf, pos, need) -> (buf, 0): the unread rest of buf with at least `need` bytes,
    read from fp in large blocks (fewer only at the end of the file). Framing then slices one
    buffer instead of making two read calls per frame. A file being written reads through
    `read1`, which returns what has arrived without waiting for a whole block."""
    read = getattr(fp, "read1", None) or fp.read

    def more(buf: bytes, pos: int, need: int) -> tuple[bytes, int]:
        rest = buf[pos:]
        while len(rest) < need:
            block = read(max(READ_BLOCK, need - len(rest)))
            if not block:
                break
            rest += block
        return rest, 0

    return more


def _u32(buf: bytes, at: int, little: bool) -> int:
    """A 32-bit unsigned integer in the section's byte order. Byte by byte rather than with
    struct: compiled, this is native code, where a Struct's unpack_from was a Python method
    call (two a packet block, a thousand instructions each with the objects they made)."""
    if little:
        return buf[at] | buf[at + 1] << 8 | buf[at + 2] << 16 | buf[at + 3] << 24
    return buf[at] << 24 | buf[at + 1] << 16 | buf[at + 2] << 8 | buf[at + 3]


def _section_endian(magic: bytes) -> str | None:
    if magic == b"\x4d\x3c\x2b\x1a":
        return "<"
    if magic == b"\x1a\x2b\x3c\x4d":
        return ">"
    return None


def _read_shb(fp: BinaryIO, head: bytes, name: str, warnings: Warnings) -> str | None:
    """The rest of a file's first section header, whose type and length are in `head`: its
    byte order."""
    rest = fp.read(4)
    if len(head) < 8 or len(rest) < 4:
        warnings.add(f"{name}: file ends inside a section header")
        return None
    endian = _section_endian(rest)
    if endian is None:
        warnings.add(f"{name}: corrupt pcapng section header")
        return None
    (total,) = struct.unpack(endian + "I", head[4:8])
    if total < 28 or total > MAX_BLOCK or total % 4:
        warnings.add(f"{name}: corrupt pcapng section header")
        return None
    body = fp.read(total - 12)
    if len(body) < total - 12:
        warnings.add(f"{name}: file ends inside a section header")
        return None
    return endian
