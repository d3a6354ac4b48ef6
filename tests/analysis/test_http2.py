"""HTTP/2 requests: one per client stream, with the method and status that HPACK's static
table (or a plain literal) gives away, compared with tshark's own reading of each stream."""

from __future__ import annotations

import subprocess

import pytest

from captures.analysis import analyze_files
from tests.support.corpus import corpus_files

from .tshark_reference import decode_as_for, tshark_binary

H2_FILES = [p for p in corpus_files() if p.parent.name == "h2-grpc"]


def tshark_streams(path) -> dict[int, dict[str, str]]:
    """stream id → {"method", "status"} from tshark's HTTP/2 dissection."""
    argv = [tshark_binary(), "-n", "-r", str(path), "-T", "fields", "-E", "separator=/t",
            "-E", "occurrence=a", "-E", "aggregator=|", "-e", "http2.streamid",
            "-e", "http2.headers.method", "-e", "http2.headers.status"]
    for spec in decode_as_for(path):
        argv[1:1] = ["-d", spec]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    streams: dict[int, dict[str, str]] = {}
    for line in out.splitlines():
        ids, methods, statuses = [*line.split("\t"), "", "", ""][:3]
        # Several frames per packet: a method or status belongs to a HEADERS frame's stream;
        # tshark lists them in frame order, so pair them with the stream ids that carry them.
        stream_ids = [int(s) for s in ids.split("|") if s and s != "0"]
        for key, values in (("method", methods), ("status", statuses)):
            values = [v for v in values.split("|") if v]
            for stream, value in zip(_headers_streams(stream_ids, len(values)), values,
                                     strict=False):
                streams.setdefault(stream, {}).setdefault(key, value)
    return streams


def _headers_streams(stream_ids: list[int], count: int) -> list[int]:
    # When a packet carries one HEADERS value, it belongs to its only stream with headers;
    # with several, to its distinct streams in order.
    distinct = list(dict.fromkeys(stream_ids))
    return distinct[:count] if len(distinct) >= count else distinct * count


@pytest.mark.parametrize("path", H2_FILES, ids=lambda p: p.name)
def test_it_reads_the_status_tshark_reads_for_each_http2_request(path):
    doc = analyze_files([path]).to_dict()
    seen = tshark_streams(path)
    requests = {r["stream"]: r for r in doc["http"] if r.get("stream")}
    for stream, request in requests.items():
        expected = seen.get(stream, {})
        if request["status"] is not None:
            assert str(request["status"]) == expected.get("status"), (stream, expected)
        if request["method"] is not None:
            assert request["method"] == expected.get("method"), (stream, expected)
    # Where tshark decoded a status from the static table, so must the engine.
    assert any(r["status"] for r in requests.values()) == any(
        s.get("status") for s in seen.values() if s.get("status") in
        ("200", "204", "206", "304", "400", "404", "500"))


def test_the_upgraded_request_gets_its_final_answer_on_stream_1():
    [path] = [p for p in H2_FILES if "upgrade-to-h2c" in p.name]
    http = analyze_files([path]).to_dict()["http"]
    first = http[0]
    assert (first["method"], first["target"]) == ("GET", "/robots.txt")
    assert first["status"] == int(tshark_streams(path)[1]["status"])  # not the interim 101
