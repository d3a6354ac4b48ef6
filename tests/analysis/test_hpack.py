"""HPACK (RFC 7541): every header block of the corpus' HTTP/2 captures decodes to the header
fields tshark decodes, dynamic table and Huffman coding included; where a capture starts
mid-connection, the fields tshark cannot name are the ones the decoder calls unknown."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from captures.analysis import analyze_files
from captures.analysis.http import H2Direction
from tests.support.corpus import corpus_files

from .tshark_reference import decode_as_for, tshark_binary

H2_FILES = [p for p in corpus_files() if p.parent.name == "h2-grpc"]
SEP = "\x1f"


def tshark_header_blocks(path, decode_as: list[str] | None = None) -> Counter:
    """(stream, ((name, value), ...)) for each HEADERS frame tshark decoded; a name tshark
    cannot know (its table entry came before the capture) is None, and its value dropped."""
    argv = [tshark_binary(), "-n", "-r", str(path), "-T", "fields", "-E", "separator=/t",
            "-E", "occurrence=a", "-E", f"aggregator={SEP}", "-e", "http2.streamid",
            "-e", "http2.type", "-e", "http2.header.count", "-e", "http2.header.name",
            "-e", "http2.header.value"]
    for spec in decode_as_for(path) if decode_as is None else decode_as:
        argv[1:1] = ["-d", spec]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    blocks: Counter = Counter()
    for line in out.splitlines():
        ids, types, counts, names, values = [*line.split("\t"), "", "", "", ""][:5]
        if not counts:
            continue
        header_streams = [
            int(s) for s, t in zip(ids.split(SEP), types.split(SEP), strict=False)
            if t in ("1", "5")
        ]
        names, values = names.split(SEP), values.split(SEP)
        at = 0
        for stream, count in zip(header_streams, counts.split(SEP), strict=False):
            fields = []
            for name, value in zip(names[at:at + int(count)], values[at:at + int(count)],
                                   strict=False):
                fields.append((None, None) if name == "<unknown>" else (name, value))
            at += int(count)
            blocks[(stream, tuple(fields))] += 1
    return blocks


def engine_header_blocks(path, monkeypatch) -> Counter:
    blocks: Counter = Counter()
    decode = H2Direction._decode

    def recording(self, frame, block):
        decode(self, frame, block)
        fields = tuple((None, None) if name is None else (name, value)
                       for name, value in frame.headers or ())
        blocks[(frame.stream, fields)] += 1

    monkeypatch.setattr(H2Direction, "_decode", recording)
    analyze_files([path]).close()
    return blocks


@pytest.mark.parametrize("path", H2_FILES, ids=lambda p: p.name)
def test_it_decodes_every_header_block_as_tshark_does(path, monkeypatch):
    expected = tshark_header_blocks(path)
    assert expected, "tshark decoded no header block: the decode-as list is wrong"
    assert engine_header_blocks(path, monkeypatch) == expected


def test_it_reads_huffman_coded_paths_that_the_static_table_does_not_hold():
    [path] = [p for p in H2_FILES if "unary-via-k8s-nodeport" in p.name]
    [request] = analyze_files([path]).to_dict()["http"]
    assert (request["method"], request["target"], request["host"]) == (
        "POST", "/agent.Synchronizer/Sync", "10.1.23.21:30035")


def test_a_capture_begun_mid_connection_says_some_headers_are_unknown():
    [path] = [p for p in H2_FILES if "midstream-no-hpack-context" in p.name]
    doc = analyze_files([path]).to_dict()
    assert any("HPACK" in w and "before the capture began" in w
               for w in doc["capture"]["warnings"])
    assert any("(some headers unknown)" in m["label"] for m in doc["messages"])
    # What the static table still gives is read: the method and the status.
    assert {(r["method"], r["status"]) for r in doc["http"]} == {("POST", 200)}
