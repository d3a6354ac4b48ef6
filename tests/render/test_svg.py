"""The standalone SVG: valid XML on every capture, with the names, labels and badges drawn,
and the DNAT badge on real traffic NATed the way kube-proxy does it."""

from __future__ import annotations

import os
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from captures.analysis import CaptureFile, analyze_files
from captures.render import build_layout, render_svg
from tests.support.netns import capture, interface_indexes, namespaces, require_netns, run

from .conftest import corpus_params, corpus_path, model_of

SVG = "{http://www.w3.org/2000/svg}"
VIP, SERVER, PORT = "10.96.9.10", "10.4.0.2", 8080


def _texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    return ["".join(node.itertext()) for node in root.iter(f"{SVG}text")]


@pytest.mark.parametrize("capture_path", corpus_params())
def test_it_writes_valid_standalone_svg_for_every_capture(capture_path):
    layout = build_layout(model_of(str(capture_path)))
    svg = render_svg(layout, title=capture_path.name)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    # Standalone: no stylesheet, script or external reference to lose when pasted elsewhere.
    assert not list(root.iter(f"{SVG}style")) and not list(root.iter(f"{SVG}script"))
    assert "href" not in svg
    texts = _texts(svg)
    for lane in layout.lanes:
        assert lane.name in texts
    drawn = [row for row in layout.visible_rows()]
    assert len(root.findall(f".//{SVG}line")) + len(root.findall(f".//{SVG}path")) >= len(drawn)


def test_it_draws_the_mtls_lock_with_its_evidence_and_the_idle_gap():
    layout = build_layout(model_of(str(corpus_path(
        "tls/zeek_tls12-mutual-tls-client-certificate-sni-alpn.pcap"))))
    texts = _texts(render_svg(layout))
    assert "mTLS (client-certificate, certificate-request)" in texts
    assert "… 5.0 s idle …" in texts
    assert "no FIN: kept open" in texts


def test_it_shows_the_sidecar_redirect_on_the_arrow_and_the_lifeline():
    layout = build_layout(model_of(str(corpus_path(
        "k8s/deepflow_istio-sidecar-inbound-127.0.0.6-to-productpage-9080.pcap"))))
    texts = _texts(render_svg(layout))
    assert any(t.startswith("istio sidecar redirect (inbound, port 9080") for t in texts)
    assert "external · istio sidecar" in texts


@pytest.fixture(scope="module")
def dnat_capture(tmp_path_factory):
    """A client curls a Service VIP that a router namespace DNATs to a server, recorded on the
    router with `-i any` (interface names kept), as in tests/analysis/test_multi_vantage.py."""
    require_netns()
    out = tmp_path_factory.mktemp("dnat")
    tag = f"kvr{os.getpid() % 100000}"
    client, router, server = f"{tag}c", f"{tag}r", f"{tag}s"
    with namespaces(client, router, server):
        run("ip", "-n", router, "link", "add", "r0", "type", "veth", "peer", "name", "eth0",
            "netns", client)
        run("ip", "-n", router, "link", "add", "r1", "type", "veth", "peer", "name", "eth0",
            "netns", server)
        for ns, dev, addr in ((client, "eth0", "10.3.0.2/24"), (router, "r0", "10.3.0.1/24"),
                              (router, "r1", "10.4.0.1/24"), (server, "eth0", "10.4.0.2/24")):
            run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", client, "route", "add", "default", "via", "10.3.0.1")
        run("ip", "-n", server, "route", "add", "default", "via", "10.4.0.1")
        run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", ns=router)
        run("iptables", "-t", "nat", "-A", "PREROUTING", "-d", VIP, "-p", "tcp", "--dport", "80",
            "-j", "DNAT", "--to-destination", f"{SERVER}:{PORT}", ns=router)
        server_process = subprocess.Popen(
            ["ip", "netns", "exec", server, "python3", "-m", "http.server", str(PORT),
             "--bind", SERVER],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(50):  # until the server listens, at most 5 s
                if f":{PORT}" in run("ss", "-ltn", ns=server):
                    break
                time.sleep(0.1)
            names = interface_indexes(router)
            with capture(router, "any", out / "router.pcapng", linktype="LINUX_SLL2"):
                run("curl", "-sS", "-o", "/dev/null", "-m", "5", f"http://{VIP}/", ns=client)
        finally:
            server_process.kill()
            server_process.wait(timeout=5)
    return CaptureFile(out / "router.pcapng", "router", {int(k): v for k, v in names.items()})


def test_it_writes_the_dnat_badge_with_vip_server_and_where(dnat_capture):
    model = analyze_files([dnat_capture])
    try:
        layout = build_layout(model)
    finally:
        model.close()
    svg = render_svg(layout)
    ET.fromstring(svg)  # parses as XML
    badge = f"DNAT {VIP}:80 → {SERVER}:{PORT} at r0 → r1"
    assert badge in _texts(svg)
    syn = next(row for row in layout.rows if row.flags == "S")
    assert any(b["kind"] == "dnat" for b in syn.badges)
    assert "via r0 → r1" in _texts(svg)  # the hop chain, written on the first arrow
    assert "hops: r0 → r1" in svg  # and in every arrow's tooltip
