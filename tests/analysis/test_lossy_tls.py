"""A mutual-TLS handshake whose server flight loses its first segment on the way.

openssl s_server (TLS 1.2, client certificate required) behind a router namespace; its
certificate names 300 hosts, so the server's flight (ServerHello, Certificate,
CertificateRequest, ServerHelloDone) spans several segments. The router drops the first one
once; the client's side sees the rest arrive, then the retransmission fill the hole. Read in
arrival order the flight is garbage; the engine holds what follows the hole until the refill
comes, then reads the handshake in order, as the client's TCP does. tshark, told to
reassemble out-of-order segments too (tcp.reassemble_out_of_order), is the reference.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from captures.analysis import analyze_files
from captures.lab import pki
from tests.support.netns import capture, require_netns, routed, run
from tests.support.tshark import fields

CLIENT, ROUTER_IN, ROUTER_OUT, SERVER = "10.199.7.2", "10.199.7.1", "10.199.8.1", "10.199.8.2"
PORT = 8443
NAME = "server.kviz.test"


@pytest.fixture(scope="module")
def lossy_handshake(tmp_path_factory):
    require_netns()
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    root = tmp_path_factory.mktemp("lossytls")
    ca = pki.make_ca(root / "ca")
    names = (NAME, *(f"host{i}.kviz.test" for i in range(300)))
    server_id = pki.issue(ca, root / "ca", "server", [], names)
    client_id = pki.issue(ca, root / "ca", "client", [pki.spiffe_id("default", "client")])
    path = root / "handshake.pcapng"
    with routed(str(os.getpid() % 100000), CLIENT, ROUTER_IN, ROUTER_OUT, SERVER) as (
        client, router, server,
    ):
        # The first segment naming the server is dropped; its retransmission passes.
        run("iptables", "-A", "FORWARD", "-p", "tcp", "--sport", str(PORT), "-m", "string",
            "--string", NAME, "--algo", "bm", "-m", "statistic", "--mode", "nth", "--every",
            "2", "--packet", "0", "-j", "DROP", ns=router)
        tls_server = subprocess.Popen(
            ["ip", "netns", "exec", server, "openssl", "s_server", "-quiet", "-tls1_2",
             "-accept", f"{SERVER}:{PORT}", "-cert", str(server_id.cert), "-key",
             str(server_id.key), "-CAfile", str(ca.cert), "-Verify", "1", "-naccept", "1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and f":{PORT} " not in run("ss", "-ltn", ns=server):
                time.sleep(0.1)
            with capture(client, "c0", path):
                done = subprocess.run(
                    ["ip", "netns", "exec", client, "openssl", "s_client", "-tls1_2",
                     "-connect", f"{SERVER}:{PORT}", "-servername", NAME, "-CAfile",
                     str(ca.cert), "-verify_return_error", "-cert", str(client_id.cert),
                     "-key", str(client_id.key)],
                    input="", capture_output=True, text=True, timeout=30)
            assert "Verify return code: 0 (ok)" in done.stdout, done.stdout[-500:]
        finally:
            tls_server.kill()
            tls_server.wait()
        dropped = run("iptables", "-L", "FORWARD", "-v", "-n", "-x", ns=router)
    assert int(dropped.splitlines()[-1].split()[0]) == 1
    return path


def tshark(path, display_filter, *names) -> list[str]:
    """The values, with tshark reassembling out-of-order segments as a receiver does."""
    rows = fields(path, display_filter, *names, options=("-o", "tcp.reassemble_out_of_order:TRUE"))
    return [value for row in rows for value in row]


@pytest.mark.timeout(120)
def test_a_handshake_read_in_order_despite_a_lost_segment(lossy_handshake):
    # The capture really shows a hole, then its refill.
    assert tshark(lossy_handshake, "tcp.analysis.lost_segment", "frame.number")
    assert tshark(lossy_handshake, "tcp.srcport == 8443 and (tcp.analysis.retransmission or "
                  "tcp.analysis.fast_retransmission or tcp.analysis.out_of_order)",
                  "frame.number")
    hello = tshark(lossy_handshake, "tls.handshake.type == 2", "tls.handshake.version")
    assert hello == ["0x0303"]  # reassembled, the ServerHello says TLS 1.2
    assert tshark(lossy_handshake, "tls.handshake.type == 13", "frame.number")  # CertRequest

    doc = analyze_files([lossy_handshake]).to_dict()
    (conn,) = doc["connections"]
    tls = conn["tls"]
    assert tls["version"] == "TLS 1.2" and tls["sni"] == NAME
    assert tls["certificate_request"] is True
    assert tls["client_certificate"] is True
    (mtls,) = [a for a in doc["annotations"] if a["kind"] == "mtls"]
    assert {"client-certificate", "certificate-request"} <= set(mtls["evidence"])
    labels = [m["label"] for m in doc["messages"]]
    assert any(label.startswith("TLS (out of order)") for label in labels)
    assert any("ServerHello" in label and "retransmission" in label for label in labels)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("limit", ["MAX_HELD", "MAX_HELD_IN_ALL"])
def test_holding_for_holes_stays_bounded_and_gives_up_cleanly(lossy_handshake, monkeypatch,
                                                             limit):
    """With room for almost nothing behind a hole (per direction, or in all connections),
    the engine gives the hole up at once: the handshake's later messages are still read, in
    arrival order, and the analysis completes."""
    from captures.analysis import reassembly

    monkeypatch.setattr(reassembly, limit, 1)
    doc = analyze_files([lossy_handshake]).to_dict()
    (conn,) = doc["connections"]
    assert conn["tls"]["client_certificate"] is True  # the client's flight had no hole
    assert conn["tls"]["version"] is None  # the ServerHello was in the hole given up
