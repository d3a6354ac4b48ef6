"""gRPC recorded in namespaces this test creates: a Python grpcio server and client (bytes
in, bytes out: no generated code) make a unary call, a server-streaming call, a bidirectional
streaming call and a call that fails with UNAVAILABLE. The engine names each call by its
method, reads its grpc-status and grpc-message and counts the messages each way, and its
HPACK decoder (grpc-core's encoder uses the dynamic table and Huffman coding) reads every
header block as tshark does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter

import pytest

from captures.analysis import analyze_files
from captures.analysis.narrative import narrate
from tests.support import netns

from .test_hpack import engine_header_blocks, tshark_header_blocks
from .tshark_reference import tshark_binary

grpc = pytest.importorskip("grpc", reason="grpcio (requirements-dev.txt) is not installed")

CLIENT_IP, SERVER_IP, PORT = "10.77.41.1", "10.77.41.2", 50051
SERVICE = "kviz.lab.Echo"

SERVER = f"""
import threading

import grpc
from concurrent import futures

def say(request, context):
    return b"hello " + request

def count(request, context):
    for i in range(int(request)):
        yield b"n%d" % i

def chat(requests, context):
    for request in requests:
        yield request.upper()

def fail(request, context):
    context.abort(grpc.StatusCode.UNAVAILABLE, "backend draining: try later")

def drain(request, context):
    # A graceful stop: the server says GOAWAY on the connection still open.
    threading.Timer(0.2, lambda: server.stop(2)).start()
    return b"draining"

handlers = {{
    "Say": grpc.unary_unary_rpc_method_handler(say),
    "Count": grpc.unary_stream_rpc_method_handler(count),
    "Chat": grpc.stream_stream_rpc_method_handler(chat),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
    "Drain": grpc.unary_unary_rpc_method_handler(drain),
}}
server = grpc.server(futures.ThreadPoolExecutor(4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("{SERVICE}", handlers),))
server.add_insecure_port("{SERVER_IP}:{PORT}")
server.start()
server.wait_for_termination()
"""

CLIENT = f"""
import threading
import time

import grpc

channel = grpc.insecure_channel("{SERVER_IP}:{PORT}")
idle = threading.Event()  # the server's GOAWAY sends the channel from READY back to IDLE
assert channel.unary_unary("/{SERVICE}/Say")(b"kviz") == b"hello kviz"
assert len(list(channel.unary_stream("/{SERVICE}/Count")(b"3"))) == 3
assert len(list(channel.stream_stream("/{SERVICE}/Chat")(iter([b"a", b"b", b"c", b"d"])))) == 4
try:
    channel.unary_unary("/{SERVICE}/Fail")(b"x")
except grpc.RpcError as exc:
    assert exc.code() == grpc.StatusCode.UNAVAILABLE
assert channel.unary_unary("/{SERVICE}/Drain")(b"") == b"draining"
channel.subscribe(lambda state: state == grpc.ChannelConnectivity.IDLE and idle.set())
print("GOAWAY seen" if idle.wait(20) else "no GOAWAY in 20 s", flush=True)
time.sleep(0.5)
channel.close()
"""

# method → (grpc-status, grpc-message, messages sent, messages received)
CALLS = {
    f"/{SERVICE}/Say": ("OK", None, 1, 1),
    f"/{SERVICE}/Count": ("OK", None, 1, 3),
    f"/{SERVICE}/Chat": ("OK", None, 4, 4),
    f"/{SERVICE}/Fail": ("UNAVAILABLE", "backend draining: try later", 1, 0),
    f"/{SERVICE}/Drain": ("OK", None, 1, 1),
}


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    netns.require_netns()
    work = tmp_path_factory.mktemp("grpc-lab")
    (work / "server.py").write_text(SERVER)
    (work / "client.py").write_text(CLIENT)
    pcap = work / "grpc.pcapng"
    tag = str(os.getpid() % 10000)
    with netns.paired(f"gr{tag}", CLIENT_IP, SERVER_IP) as (client, server_ns):
        server = subprocess.Popen(["ip", "netns", "exec", server_ns, sys.executable,
                                   str(work / "server.py")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        try:
            for _ in range(100):
                if f":{PORT}" in netns.run("ss", "-ltn", ns=server_ns):
                    break
                time.sleep(0.1)
            with netns.capture(client, "c0", pcap):
                said = subprocess.run(["ip", "netns", "exec", client, sys.executable,
                                       str(work / "client.py")], check=True, timeout=60,
                                      capture_output=True, text=True).stdout
            assert "GOAWAY seen" in said, said
        finally:
            server.kill()
            server.wait(timeout=10)
    return pcap


def test_each_call_reads_with_its_method_status_and_messages(recording):
    model = analyze_files([recording])
    requests = model.to_dict()["http"]
    seen = {r["grpc"]["method"]: (r["grpc"]["status"], r["grpc"]["message"],
                                  r["grpc"]["sent"], r["grpc"]["received"])
            for r in requests if r.get("grpc")}
    assert seen == CALLS
    assert all(r["target"] == r["grpc"]["method"] and r["method"] == "POST" for r in requests)
    lines = [line for line in narrate(model) if "gRPC #" in line]
    assert any(f"/{SERVICE}/Fail → UNAVAILABLE (backend draining: try later)" in line
               for line in lines)
    assert any("4 messages sent, 4 received (bidirectional streaming)" in line for line in lines)
    assert any("1 message sent, 3 received (server streaming)" in line for line in lines)


def test_the_arrows_name_the_calls_and_the_connection_frames(recording):
    labels = [m["label"] for m in analyze_files([recording]).to_dict()["messages"]]
    words = Counter(w for label in labels for w in label.replace(",", " ").split())
    assert "HTTP/2 preface" in " ".join(labels)
    for name in ("SETTINGS", "WINDOW_UPDATE", "PING"):
        assert words[name], (name, labels)
    assert any(f"gRPC s1 /{SERVICE}/Say" in label for label in labels)
    assert any("gRPC s7 → UNAVAILABLE: backend draining: try later" in label for label in labels)
    # Every segment's bytes are read as frames; only a segment the lab's loopback sent again
    # (under load it does) is the opaque retransmission its first copy was read from.
    assert not [label for label in labels
                if label.startswith("data ") and not label.endswith("(retransmission)")], labels
    # A graceful stop says GOAWAY twice (RFC 9113 6.8): first with the largest stream id, and
    # once the client's PING answer shows it has seen that, with the last stream served. The
    # second is a race in grpc-core (a client that closes first gets none; CI saw that), so each
    # GOAWAY tshark reads is an arrow naming its last stream, and the first (the client waits
    # for it) is always there.
    said = Counter(f"{error} (last stream {last})" for label in labels
                   for error, last in re.findall(r"GOAWAY (\S+) \(last stream (\d+)\)", label))
    assert said == tshark_goaways(recording), labels
    assert said["NO_ERROR (last stream 2147483647)"] == 1, labels


def tshark_goaways(path) -> Counter:
    argv = [tshark_binary(), "-n", "-r", str(path), "-d", f"tcp.port=={PORT},http2",
            "-Y", "http2.type == 7", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
            "-e", "http2.goaway.error", "-e", "http2.goaway.last_stream_id"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    names = {0: "NO_ERROR"}
    return Counter(f"{names.get(int(error, 0), error)} (last stream {last})"
                   for line in out.splitlines()
                   for error, last in zip(*(f.split(",") for f in line.split("\t")),
                                          strict=True))


def test_every_header_block_decodes_as_tshark_decodes_it(recording, monkeypatch):
    expected = tshark_header_blocks(recording, [f"tcp.port=={PORT},http2"])
    assert len(expected) >= 8  # a request and an answer per call, and trailers
    assert engine_header_blocks(recording, monkeypatch) == expected
