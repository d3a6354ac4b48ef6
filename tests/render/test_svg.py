"""The standalone SVG: valid XML on every capture, with the names, labels and badges drawn,
and the DNAT badge on real traffic NATed the way kube-proxy does it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from captures.analysis import analyze_files
from captures.render import build_layout, render_svg
from tests.support.dnat import PORT, SERVER, VIP, record_dnat

from .conftest import corpus_params, corpus_path, model_of

SVG = "{http://www.w3.org/2000/svg}"


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
    router with `-i any` (interface names kept)."""
    return record_dnat(tmp_path_factory.mktemp("dnat"), "kvr").router_file()


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
