"""The merged download: every corpus file, and pairs of them, merged and read back by tshark
with each packet's time (to the nanosecond), lengths and dissection unchanged."""

from __future__ import annotations

import subprocess

import pytest

from captures.analysis.pcapmerge import MergeInput, merged_pcapng
from captures.analysis.records import CaptureError
from tests.support.corpus import corpus_files

FILES = corpus_files()
FIELDS = ("frame.time_epoch", "frame.len", "frame.cap_len", "frame.protocols")


def fields_of(path) -> list[tuple[str, ...]]:
    argv = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for field in (*FIELDS, "frame.interface_name"):
        argv += ["-e", field]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    return [tuple(line.split("|")) for line in out.splitlines()]


def merge(tmp_path, *inputs: MergeInput):
    merged = tmp_path / "merged.pcapng"
    merged.write_bytes(b"".join(merged_pcapng(inputs)))
    return merged


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_one_file_merged_alone_reads_as_it_did(path, tmp_path):
    original = fields_of(path)
    merged = fields_of(merge(tmp_path, MergeInput(str(path), "node/n1")))
    # Keyed by what tshark reads: a damaged original may end early; the merge ends with it.
    assert [row[:4] for row in merged] == [row[:4] for row in original][:len(merged)]
    assert len(merged) >= len(original) - 1
    assert all(row[4].startswith("node/n1") for row in merged)


def test_two_files_interleave_in_time_order_each_packet_named_by_its_place(tmp_path):
    first, second = FILES[0], FILES[1]
    merged = fields_of(merge(tmp_path, MergeInput(str(first), "pod/a/client"),
                             MergeInput(str(second), "node/n2")))
    expected = sorted(row[:4] for row in fields_of(first) + fields_of(second))
    assert sorted(row[:4] for row in merged) == expected
    times = [float(row[0]) for row in merged]
    assert times == sorted(times)
    assert {row[4].split(" ")[0] for row in merged} == {"pod/a/client", "node/n2"}


def test_a_file_that_is_no_capture_is_refused_before_anything_is_sent(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a capture\n")
    chunks = merged_pcapng([MergeInput(str(FILES[0]), "a"), MergeInput(str(text), "b")])
    with pytest.raises(CaptureError, match="b: not a pcap"):
        next(chunks)
