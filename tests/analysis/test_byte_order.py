"""A capture written in either byte order gives the same analysis. pcap and pcapng files carry
their writer's byte order (a big-endian host writes big-endian headers); every capture in the
corpus is little-endian, so real ones are rewritten here, block by block and field by field,
in both orders from the same parsed blocks, and analysed in both builds (the reader's fields
are read byte by byte: compiled code, and each order has its own branch)."""

from __future__ import annotations

import io
import json
import struct

import pytest

from captures.analysis import CaptureFile, analyze_files
from tests.support.corpus import corpus_files

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": 0xA1B2C3D4, b"\x4d\x3c\xb2\xa1": 0xA1B23C4D}
SHB, IDB, EPB = 0x0A0D0D0A, 1, 6
# Numeric option values (pcapng spec) by block: option code -> struct format.
NUMERIC_OPTIONS = {
    IDB: {8: "Q", 14: "q", 16: "Q", 17: "Q"},  # if_speed, if_tsoffset, tx/rx speed
    EPB: {2: "I", 4: "Q", 5: "Q", 6: "I"},  # epb_flags, dropcount, packetid, queue
}


def _pcap_in(data: bytes, order: str) -> bytes:
    """A little-endian pcap file rewritten in `order` ("<" or ">"): its header and every
    record's header; the frames stay as they are (network byte order is no writer's)."""
    magic = PCAP_MAGICS[data[:4]]
    major, minor, zone, sigfigs, snaplen, network = struct.unpack_from("<HHiIII", data, 4)
    out = [struct.pack(order + "IHHiIII", magic, major, minor, zone, sigfigs, snaplen, network)]
    at = 24
    while at + 16 <= len(data):
        sec, frac, caplen, wirelen = struct.unpack_from("<IIII", data, at)
        out.append(struct.pack(order + "IIII", sec, frac, caplen, wirelen))
        out.append(data[at + 16 : at + 16 + caplen])
        at += 16 + caplen
    return b"".join(out)


def _options(body: bytes, kind: int, order: str) -> bytes:
    numeric = NUMERIC_OPTIONS.get(kind, {})
    out, at = [], 0
    while at + 4 <= len(body):
        code, length = struct.unpack_from("<HH", body, at)
        value = body[at + 4 : at + 4 + length]
        if code in numeric and len(value) == struct.calcsize(numeric[code]):
            value = struct.pack(order + numeric[code], *struct.unpack("<" + numeric[code], value))
        out.append(struct.pack(order + "HH", code, length) + value + b"\0" * (-length % 4))
        at += 4 + length + (-length % 4)
        if code == 0:
            break
    return b"".join(out)


def _pcapng_in(data: bytes, order: str) -> bytes:
    """A little-endian pcapng file rewritten in `order`: section, interface and enhanced
    packet blocks with their fields and numeric options (the other blocks, statistics and
    name resolution, are left out of both orders alike)."""
    out, at = [], 0
    while at + 12 <= len(data):
        kind, total = struct.unpack_from("<II", data, at)
        body = data[at + 8 : at + total - 4]
        if kind == SHB:
            _magic, major, minor, length = struct.unpack_from("<IHHq", body)
            body = struct.pack(order + "IHHq", 0x1A2B3C4D, major, minor, length) + _options(
                body[16:], kind, order)
        elif kind == IDB:
            linktype, reserved, snaplen = struct.unpack_from("<HHI", body)
            body = struct.pack(order + "HHI", linktype, reserved, snaplen) + _options(
                body[8:], kind, order)
        elif kind == EPB:
            fields = struct.unpack_from("<IIIII", body)
            padded = fields[3] + (-fields[3] % 4)
            body = (struct.pack(order + "IIIII", *fields) + body[20 : 20 + padded]
                    + _options(body[20 + padded :], kind, order))
        else:
            at += total
            continue
        out.append(struct.pack(order + "II", kind, len(body) + 12) + body
                   + struct.pack(order + "I", len(body) + 12))
        at += total
    return b"".join(out)


def _document(path) -> dict:
    out = io.StringIO()
    analyze_files([CaptureFile(path)]).write_json(out)
    document = json.loads(out.getvalue())
    for facts in document["capture"]["files"]:
        facts.pop("path")
    return document


def _chosen() -> list:
    pcapng = [p for p in corpus_files() if p.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"]
    nanosecond = [p for p in corpus_files() if p.read_bytes()[:4] == b"\x4d\x3c\xb2\xa1"]
    dns = [p for p in corpus_files() if "dns-search-suffix" in p.name]
    return pcapng + nanosecond + dns


@pytest.mark.parametrize("source", _chosen(), ids=lambda p: p.name)
def test_a_capture_reads_the_same_in_either_byte_order(source, tmp_path):
    data = source.read_bytes()
    rewrite = _pcapng_in if data[:4] == b"\x0a\x0d\x0d\x0a" else _pcap_in
    (tmp_path / "le").mkdir()
    (tmp_path / "be").mkdir()
    little, big = tmp_path / "le" / source.name, tmp_path / "be" / source.name
    little.write_bytes(rewrite(data, "<"))
    big.write_bytes(rewrite(data, ">"))
    assert little.read_bytes() != big.read_bytes()
    as_little = _document(little)
    assert as_little["messages"]  # something was read, and the same from the other order:
    assert _document(big) == as_little
