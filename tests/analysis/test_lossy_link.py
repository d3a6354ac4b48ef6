"""Real packet loss: downloads through a router that drops some of the server's segments.

Client, router and server namespaces; the router forwards, and iptables there drops a random
8% of what the server sends (the statistic match kube-proxy itself uses). The loss must be on
the way, not in the server's own OUTPUT chain: a segment dropped there never left, and TCP just
sends it again as if for the first time. Segmentation offload is off on the server so the wire
carries segments, not 64 KB bursts. The client side is recorded by dumpcap. tshark's reading
of the same file is the reference: every segment it flags as a retransmission, a fast
retransmission or out-of-order (on a fast link, most refills of a lost segment arrive within
its out-of-order window) is one the engine counts as a retransmission, and no other.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from captures.analysis import analyze_files
from tests.support.netns import capture, http_server, require_netns, routed, run
from tests.support.tshark import fields

CLIENT, ROUTER_IN, ROUTER_OUT, SERVER = "10.199.0.2", "10.199.0.1", "10.199.6.1", "10.199.6.2"
PORT = 8080
DOWNLOADS = 3
BODY = 400_000
LOSS = "0.08"


def _downloads_through_router(root, name: str, drop_rule: list[str], downloads: int):
    """Record `downloads` downloads of a BODY-byte file through a router whose FORWARD chain
    drops what `drop_rule` (iptables match arguments) picks; (capture path, drops)."""
    (root / "www").mkdir(exist_ok=True)
    (root / "www" / "blob.bin").write_bytes(os.urandom(BODY))
    path = root / f"{name}.pcapng"
    tag = str(os.getpid() % 100000)
    with routed(tag, CLIENT, ROUTER_IN, ROUTER_OUT, SERVER) as (client, router, server):
        run("iptables", "-A", "FORWARD", "-p", "tcp", "--sport", str(PORT), *drop_rule,
            "-j", "DROP", ns=router)
        with http_server(server, SERVER, PORT, root / "www"), capture(client, "c0", path):
            for _ in range(downloads):
                done = run("curl", "-s", "-o", "/dev/null", "--max-time", "60", "-w",
                           "%{http_code} %{size_download}", f"http://{SERVER}:{PORT}/blob.bin",
                           ns=client, timeout=90)
                assert done == f"200 {BODY}", done
        dropped = run("iptables", "-L", "FORWARD", "-v", "-n", "-x", ns=router)
    return path, int(dropped.splitlines()[-1].split()[0])


@pytest.fixture(scope="module")
def lossy_capture(tmp_path_factory):
    require_netns()
    return _downloads_through_router(
        tmp_path_factory.mktemp("lossy"), "lossy",
        ["-m", "statistic", "--mode", "random", "--probability", LOSS], DOWNLOADS)


@pytest.fixture(scope="module")
def lost_status_line(tmp_path_factory):
    """The response's first segment, its status line, is lost once: every second segment
    carrying it is dropped, so the first copy never arrives and its retransmission does,
    after the body segments the server sent behind it."""
    require_netns()
    return _downloads_through_router(
        tmp_path_factory.mktemp("status"), "status",
        ["-m", "string", "--string", "HTTP/1.0 200", "--algo", "bm",
         "-m", "statistic", "--mode", "nth", "--every", "2", "--packet", "0"], 1)


def _tshark_refills(path) -> Counter:
    """Per connection (its client port): frames, in either direction, that tshark flags as a
    retransmission, a fast retransmission or out-of-order."""
    rows = fields(path, "tcp.analysis.retransmission or tcp.analysis.fast_retransmission "
                  "or tcp.analysis.out_of_order", "tcp.srcport", "tcp.dstport")
    return Counter(int(dport) if int(sport) == PORT else int(sport) for sport, dport in rows)


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


@pytest.mark.timeout(180)
def test_a_response_whose_status_line_was_lost_is_still_paired_with_its_request(
    lost_status_line,
):
    path, drops = lost_status_line
    assert drops == 1
    refill = [number for (number,) in fields(
        path, 'tcp.payload contains "HTTP/1.0 200" and (tcp.analysis.retransmission '
        "or tcp.analysis.fast_retransmission or tcp.analysis.out_of_order)", "frame.number")]
    assert len(refill) == 1  # tshark too sees the status line only as a late refill
    doc = analyze_files([path]).to_dict()
    assert [request["status"] for request in doc["http"]] == [200]
    (message,) = [m for m in doc["messages"] if m["frame"][1] == int(refill[0])]
    assert message["label"].startswith("HTTP 200 OK")
    assert "retransmission" in message["label"]


@pytest.mark.timeout(120)
def test_a_hole_only_the_capture_has_is_given_up_at_the_receivers_next_ack():
    """A capture that missed a response the client did get (the corpus' 1000 keep-alive
    requests, one response not captured): the client's ACK covers the hole, so the engine
    stops waiting for a retransmission at once. One segment is held, not the rest of the
    connection, and every later response keeps its status."""
    from tests.support.corpus import corpus_dir

    corpus = corpus_dir()
    if corpus is None:
        pytest.skip("no capture corpus found")
    path = corpus / "keepalive" / "zeek_http11-1000-requests-one-conn-one-dropped-response.pcap"
    doc = analyze_files([path]).to_dict()
    held = [m for m in doc["messages"] if "out of order" in m["label"]]
    assert len(held) == 1
    statuses = [request["status"] for request in doc["http"]]
    assert len(statuses) == 1000 and statuses.count(None) == 1
