"""How connections end, from real traffic between two namespaces: refused, unanswered, and a
client port reused for a second connection. tshark's reading of each capture is the reference
for what the packets were."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from captures.analysis import analyze_files
from tests.support.netns import capture, http_server, paired, require_netns, run
from tests.support.tshark import fields

SERVER, CLIENT = "10.199.1.1", "10.199.1.2"
OPEN_PORT, CLOSED_PORT, SILENT_PORT = 8080, 8081, 8082
REUSED_CLIENT_PORT = 40123
# Two requests from one client port. Each reads to the end of the response before closing, so
# the server (HTTP/1.0: it closes after answering) sends FIN first and keeps TIME_WAIT; the
# client's port is free again at once.
REUSING_CLIENT = f"""
import socket
for _ in range(2):
    with socket.create_connection(("{SERVER}", {OPEN_PORT}), timeout=10,
                                  source_address=("{CLIENT}", {REUSED_CLIENT_PORT})) as s:
        s.sendall(b"GET / HTTP/1.0\\r\\nHost: {SERVER}\\r\\n\\r\\n")
        response = b""
        while chunk := s.recv(65536):
            response += chunk
        assert response.startswith(b"HTTP/1.0 200"), response[:80]
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """One capture per case, on the client's side of a veth pair."""
    require_netns()
    root = tmp_path_factory.mktemp("outcomes")
    (root / "www").mkdir()
    (root / "www" / "index.html").write_text("kviz\n")
    paths = {}
    with paired(str(os.getpid() % 100000), CLIENT, SERVER) as (client, server):
        # A firewall that drops silently: the client's SYNs go unanswered.
        run("iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(SILENT_PORT), "-j", "DROP",
            ns=server)

        def curl(name, *args):
            paths[name] = root / f"{name}.pcapng"
            with capture(client, "c0", paths[name]):
                done = subprocess.run(["ip", "netns", "exec", client, "curl", "-s", "-o",
                                       "/dev/null", "-w", "%{http_code}", *args],
                                      capture_output=True, text=True, timeout=30)
            return done.stdout

        assert curl("refused", "--max-time", "5", f"http://{SERVER}:{CLOSED_PORT}/") == "000"
        assert curl("unanswered", "--connect-timeout", "3.5",
                    f"http://{SERVER}:{SILENT_PORT}/") == "000"
        with http_server(server, SERVER, OPEN_PORT, root / "www"):
            paths["reused"] = root / "reused.pcapng"
            with capture(client, "c0", paths["reused"]):
                run(sys.executable, "-c", REUSING_CLIENT, ns=client, timeout=30)
    return paths


@pytest.mark.timeout(120)
def test_a_refused_connection_says_refused_and_who_reset_it(outcomes):
    doc = analyze_files([outcomes["refused"]]).to_dict()
    resets = fields(outcomes["refused"], "tcp.flags.reset==1", "ip.src", "tcp.srcport")
    assert resets and all(ip == SERVER for ip, _port in resets)
    (conn,) = doc["connections"]
    assert conn["handshake"] == "refused"
    assert conn["closed"] == "rst"
    assert conn["server"] == f"{SERVER}:{CLOSED_PORT}"
    rst = [a for a in doc["annotations"] if a["kind"] == "rst"]
    assert [a["by"] for a in rst] == [f"{SERVER}:{CLOSED_PORT}"]


@pytest.mark.timeout(120)
def test_an_unanswered_connection_counts_its_repeated_syns(outcomes):
    doc = analyze_files([outcomes["unanswered"]]).to_dict()
    syns = fields(outcomes["unanswered"], "tcp.flags.syn==1 && tcp.flags.ack==0",
                  "tcp.seq_raw")
    assert len(syns) >= 2 and len({seq for (seq,) in syns}) == 1  # one SYN, sent again
    (conn,) = doc["connections"]
    assert conn["handshake"] == "no-answer"
    assert conn["closed"] == "open"
    assert conn["retransmissions"] == len(syns) - 1
    labels = [m["label"] for m in doc["messages"] if m["proto"] == "tcp"]  # not IPv6 chatter
    assert labels == ["SYN"] + ["SYN (retransmission)"] * (len(syns) - 1)


@pytest.mark.timeout(120)
def test_a_reused_client_port_makes_two_connections_each_answered(outcomes):
    doc = analyze_files([outcomes["reused"]]).to_dict()
    streams = {s for (s,) in fields(outcomes["reused"], "tcp", "tcp.stream")}
    assert len(streams) == 2  # tshark sees the port reuse too
    connections = doc["connections"]
    assert len(connections) == 2
    assert {c["client"] for c in connections} == {f"{CLIENT}:{REUSED_CLIENT_PORT}"}
    for conn in connections:
        assert conn["handshake"] == "complete"
        assert conn["closed"] == "fin"
        assert conn["requests"] == 1
        assert conn["retransmissions"] == 0
    assert [(r["connection"], r["status"]) for r in doc["http"]] == [
        (connections[0]["id"], 200), (connections[1]["id"], 200)]
