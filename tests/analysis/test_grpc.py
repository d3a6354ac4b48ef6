"""gRPC over HTTP/2: each call named by its method (`:path`), its grpc-status from the
trailers, and the messages each side sent, checked against tshark's gRPC dissector on the
corpus' gRPC captures; the connection's control frames are named instead of counted in bytes."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from captures.analysis import analyze_files
from captures.analysis.narrative import narrate
from tests.support.corpus import corpus_files

from .tshark_reference import decode_as_for, tshark_binary

SEP = "\x1f"
GRPC_FILES = [p for p in corpus_files() if p.parent.name == "h2-grpc" and "grpc" in p.name
              and "no-hpack-context" not in p.name]


def tshark_calls(path) -> dict:
    """stream → {":path", "grpc-status", "sent", "received"} as tshark reads them; sent and
    received count gRPC messages by the side that sent the packet."""
    argv = [tshark_binary(), "-n", "-r", str(path), "-T", "fields", "-E", "separator=/t",
            "-E", "occurrence=a", "-E", f"aggregator={SEP}", "-e", "ip.src", "-e", "tcp.srcport",
            "-e", "http2.streamid", "-e", "http2.header.name", "-e", "http2.header.value",
            "-e", "grpc.message_length", "-e", "tcp.flags.syn", "-e", "tcp.flags.ack"]
    for spec in decode_as_for(path):
        argv[1:1] = ["-d", spec]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    calls: dict[int, dict] = {}
    client = None
    for line in out.splitlines():
        src, port, ids, names, values, lengths = [*line.split("\t"), *[""] * 6][:6]
        streams = [int(s) for s in ids.split(SEP) if s and s != "0"]
        if not streams:
            continue
        stream = streams[0]  # one call per packet in these captures
        call = calls.setdefault(stream, {"sent": 0, "received": 0})
        headers = dict(zip(names.split(SEP), values.split(SEP), strict=False))
        if ":path" in headers:
            call[":path"] = headers[":path"]
            client = client or (src, port)
        if "grpc-status" in headers:
            call["grpc-status"] = headers["grpc-status"]
        if lengths:
            side = "sent" if (src, port) == client else "received"
            call[side] += len(lengths.split(SEP))
    return calls


@pytest.mark.parametrize("path", GRPC_FILES, ids=lambda p: p.name)
def test_it_reads_each_call_as_tshark_does(path):
    expected = tshark_calls(path)
    requests = [r for r in analyze_files([path]).to_dict()["http"] if r.get("grpc")]
    assert requests, "no gRPC call read"
    for request in requests:
        seen = expected[request["stream"]]
        call = request["grpc"]
        assert call["method"] == request["target"] == seen[":path"]
        status = {"0": "OK", "14": "UNAVAILABLE"}.get(seen.get("grpc-status"),
                                                      seen.get("grpc-status"))
        assert call["status"] == status
        assert (call["sent"], call["received"]) == (seen["sent"], seen["received"])


def test_a_client_streaming_call_reads_as_one_line_with_its_messages():
    [path] = [p for p in GRPC_FILES if "client-streaming" in p.name]
    model = analyze_files([path])
    lines = [line for line in narrate(model) if "gRPC #" in line]
    assert len(lines) == 1
    assert "gRPC #0 call 1: /StreamingService/ClientStreamRPC → OK" in lines[0]
    assert "3 messages sent, 1 received (client streaming)" in lines[0]


def test_the_connection_frames_are_named_not_counted_in_bytes():
    [path] = [p for p in GRPC_FILES if "client-streaming" in p.name]
    labels = [m["label"] for m in analyze_files([path]).to_dict()["messages"]]
    assert "HTTP/2 preface" in labels
    assert not [label for label in labels if label.startswith("data ")]
    words = Counter(word for label in labels for word in label.replace(",", " ").split())
    for name in ("SETTINGS", "ACK", "WINDOW_UPDATE", "PING"):
        assert words[name], name
    assert "gRPC s1 /StreamingService/ClientStreamRPC" in labels
    assert any(label.endswith("gRPC s1 → OK") for label in labels)


def test_a_server_streaming_call_with_lost_segments_says_its_count_may_be_short():
    [path] = [p for p in GRPC_FILES if "server-streaming" in p.name]
    [request] = analyze_files([path]).to_dict()["http"]
    assert request["grpc"]["gaps"] is True
    assert request["grpc"]["received"] == 5

