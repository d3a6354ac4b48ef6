"""A receiver that stops reading: its window closes, then reopens when it reads again.

A server in one namespace sends 1 MB as fast as it can; the client in the other connects,
waits a second before reading a byte, then reads everything. Its receive buffer fills, and
its ACKs advertise a zero window until it reads. tshark's reading is the reference.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from captures.analysis import analyze_files
from tests.support.netns import capture, paired, require_netns, run
from tests.support.tshark import fields

SERVER, CLIENT, PORT = "10.199.5.1", "10.199.5.2", 5002
SIZE = 1_000_000
SENDER = f"""
import socket
with socket.create_server(("{SERVER}", {PORT})) as server:
    print("listening", flush=True)
    conn, _ = server.accept()
    with conn:
        conn.sendall(bytes({SIZE}))
"""
SLOW_READER = f"""
import socket, time
with socket.create_connection(("{SERVER}", {PORT}), timeout=20) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    time.sleep(1.0)  # not reading: the window closes
    got = 0
    while chunk := s.recv(65536):
        got += len(chunk)
    print(s.getsockname()[1], got)
"""


@pytest.fixture(scope="module")
def stalled_capture(tmp_path_factory):
    require_netns()
    path = tmp_path_factory.mktemp("zerowin") / "zerowin.pcapng"
    with paired(str(os.getpid() % 100000), CLIENT, SERVER) as (client, server):
        sender = subprocess.Popen(["ip", "netns", "exec", server, sys.executable, "-c", SENDER],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert sender.stdout.readline().strip() == "listening"
            with capture(client, "c0", path):
                port, got = run(sys.executable, "-c", SLOW_READER, ns=client,
                                timeout=60).split()
            sender.wait(timeout=10)
        finally:
            sender.kill()
            sender.wait()
    assert int(got) == SIZE
    return path, int(port)


@pytest.mark.timeout(120)
def test_a_receiver_that_stops_reading_is_named_with_its_zero_windows(stalled_capture):
    path, port = stalled_capture
    zero = [port for (port,) in fields(path, "tcp.analysis.zero_window", "tcp.srcport")]
    assert zero and set(zero) == {str(port)}  # only the slow reader closed its window

    doc = analyze_files([path]).to_dict()
    (conn,) = doc["connections"]
    assert conn["zero_windows"] == len(zero)
    (note,) = [a for a in doc["annotations"] if a["kind"] == "zero_window"]
    assert note["by"] == f"{CLIENT}:{port}" and note["count"] == len(zero)
    assert doc["annotations"].index(note) in conn["annotations"]
    assert sum("zero window" in m["label"] for m in doc["messages"]) == len(zero)
