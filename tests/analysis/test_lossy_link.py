"""Real packet loss: downloads over a link that drops some of the server's segments.

Two namespaces joined by a veth pair; in the server's, iptables drops a random 8% of what it
sends (the statistic match kube-proxy itself uses), and segmentation offload is off so the
capture sees wire-sized segments. The client side is recorded by dumpcap. tshark's reading of
the same file is the reference: every segment it flags as a retransmission, a fast
retransmission or out-of-order (on a fast link, most refills of a lost segment arrive within
its out-of-order window) is one the engine counts as a retransmission, and no other.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter

import pytest

from captures.analysis import analyze_files
from tests.support.netns import capture, http_server, namespaces, require_netns, run

SERVER, CLIENT, PORT = "10.199.0.1", "10.199.0.2", 8080
DOWNLOADS = 3
BODY = 400_000
LOSS = "0.08"


@pytest.fixture(scope="module")
def lossy_capture(tmp_path_factory):
    require_netns()
    root = tmp_path_factory.mktemp("lossy")
    (root / "www").mkdir()
    (root / "www" / "blob.bin").write_bytes(os.urandom(BODY))
    path = root / "lossy.pcapng"
    tag = os.getpid() % 100000
    client, server = f"kvlc{tag}", f"kvls{tag}"
    with namespaces(client, server):
        run("ip", "link", "add", "c0", "netns", client, "type", "veth", "peer", "name", "s0",
            "netns", server)
        run("ip", "addr", "add", f"{CLIENT}/24", "dev", "c0", ns=client)
        run("ip", "addr", "add", f"{SERVER}/24", "dev", "s0", ns=server)
        # One wire-sized segment per packet: with offload, a drop loses a 64 KB burst.
        run("ip", "link", "set", "s0", "gso_max_segs", "1", "gso_max_size", "1500", ns=server)
        run("ip", "link", "set", "s0", "up", ns=server)
        run("ip", "link", "set", "c0", "up", ns=client)
        run("iptables", "-A", "OUTPUT", "-p", "tcp", "--sport", str(PORT), "-m", "statistic",
            "--mode", "random", "--probability", LOSS, "-j", "DROP", ns=server)
        with http_server(server, SERVER, PORT, root / "www"), capture(client, "c0", path):
            for _ in range(DOWNLOADS):
                done = run("curl", "-s", "-o", "/dev/null", "--max-time", "60", "-w",
                           "%{http_code} %{size_download}", f"http://{SERVER}:{PORT}/blob.bin",
                           ns=client, timeout=90)
                assert done == f"200 {BODY}", done
        dropped = run("iptables", "-L", "OUTPUT", "-v", "-n", "-x", ns=server)
    drops = int(dropped.splitlines()[-1].split()[0])
    return path, drops


def _tshark_refills(path) -> Counter:
    """Per connection (its client port): frames, in either direction, that tshark flags as a
    retransmission, a fast retransmission or out-of-order."""
    out = subprocess.run(
        ["tshark", "-r", str(path), "-n", "-T", "fields", "-E", "separator=,", "-e",
         "tcp.srcport", "-e", "tcp.dstport", "-Y",
         "tcp.analysis.retransmission or tcp.analysis.fast_retransmission "
         "or tcp.analysis.out_of_order"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    refills = Counter()
    for line in out.split():
        sport, dport = map(int, line.split(","))
        refills[dport if sport == PORT else sport] += 1
    return refills


@pytest.mark.timeout(180)
def test_every_download_over_a_lossy_link_is_whole_and_its_retransmissions_counted(
    lossy_capture,
):
    path, drops = lossy_capture
    assert drops > 0  # the link really lost segments
    doc = analyze_files([path]).to_dict()

    connections = doc["connections"]
    assert len(connections) == DOWNLOADS
    for conn in connections:
        assert conn["handshake"] == "complete"
        assert conn["closed"] == "fin"
        assert conn["requests"] == 1
    assert [request["status"] for request in doc["http"]] == [200] * DOWNLOADS

    expected = _tshark_refills(path)
    assert sum(expected.values()) > 0
    counted = Counter(
        {int(conn["client"].rsplit(":", 1)[1]): conn["retransmissions"] for conn in connections}
    )
    assert +counted == +expected
    # Each refill is one message that says so, on the connection that carried it.
    labelled = sum("retransmission" in m["label"] for m in doc["messages"])
    assert labelled == sum(expected.values())
