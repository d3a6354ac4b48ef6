"""A short seeded run of the fuzzer (bench/fuzz.py): mutants of the real corpus never crash,
hang or blow up the analysis; and the mutants that once crashed it stay fixed."""

from __future__ import annotations

import struct

import pytest

from bench import fuzz
from captures.analysis import CaptureFile, analyze_files
from tests.support.corpus import corpus_dir, corpus_files

MUTANTS = 3000


def test_a_seeded_run_finds_no_crash_hang_or_blow_up():
    files = corpus_files()
    if not files:
        pytest.skip("no corpus")
    found = []
    counts = fuzz.fuzz(files, MUTANTS, seed=11, timeout=30, memory_mb=2048,
                       report=found.append)
    assert (counts["crash"], counts["hang"], counts["memory"]) == (0, 0, 0), found
    # The run really exercised both paths: files read despite damage, and files refused.
    assert counts["ok"] > MUTANTS // 2 and counts["clean_error"] > 0


def test_every_mutation_kind_changes_the_file():
    files = corpus_files()
    if not files:
        pytest.skip("no corpus")
    kinds = {name.rsplit(":", 1)[1] for name, _data in fuzz.mutants(files, 400, seed=5)}
    assert {"bit flips", "truncated", "record length", "block type", "link type",
            "inner length"} <= kinds
    originals = {p.name: p.read_bytes() for p in files}
    for name, data in fuzz.mutants(files, 200, seed=5):
        assert data != originals[name.split(":")[1]], name


def test_an_obsolete_packet_block_too_short_for_its_header_is_a_warning(tmp_path):
    """The crash 30,000 mutants found: a pcapng Packet Block (type 2) whose body is shorter
    than its 20-byte header. Made from a real capture: its first packet block turned into one."""
    root = corpus_dir()
    if root is None:
        pytest.skip("no corpus")
    data = bytearray((root / "linktype/zeek_pcapng-two-interfaces-dns.pcapng").read_bytes())
    offset, blocks = 0, []
    while offset + 12 <= len(data):
        btype, total = struct.unpack_from("<II", data, offset)
        blocks.append((offset, btype, total))
        offset += total
    at, _btype, total = next(b for b in blocks if b[1] == 6)
    shortened = struct.pack("<II", 2, 20) + bytes(data[at + 8:at + 16]) + struct.pack("<I", 20)
    data[at:at + total] = shortened
    path = tmp_path / "short-block.pcapng"
    path.write_bytes(bytes(data))
    model = analyze_files([CaptureFile(path)])
    try:
        warnings = model.capture["warnings"]
    finally:
        model.close()
    assert any("short packet block" in w for w in warnings), warnings
