"""The engine claims NAT, mTLS or a service-mesh sidecar only where the capture shows one.

None of the corpus captures holds a packet seen both before and after a rewrite, so no `dnat`
or `snat` is ever right here. Only two files show mesh-like behaviour, per SOURCES.md:

* the TLS 1.2 mutual-TLS capture: the server sends a CertificateRequest and the client answers
  with a certificate, so exactly one `mtls` with "client-certificate" evidence;
* the Istio inbound leg: Envoy delivers to the app from its passthrough source 127.0.0.6, so a
  `sidecar` (istio, inbound) may be reported, and nothing else mesh-like.
"""

from __future__ import annotations

import pytest

from .conftest import corpus_dir, corpus_files, corpus_id
from .tshark_reference import canonical_endpoint, parse_endpoint

pytestmark = pytest.mark.timeout(180)

MESH_KINDS = ("dnat", "snat", "mtls", "sidecar")
MTLS_FILE = "tls/zeek_tls12-mutual-tls-client-certificate-sni-alpn.pcap"
ISTIO_INBOUND_FILE = "k8s/deepflow_istio-sidecar-inbound-127.0.0.6-to-productpage-9080.pcap"
SPECIAL = {MTLS_FILE, ISTIO_INBOUND_FILE}

ORDINARY = [p for p in corpus_files() if corpus_id(p) not in SPECIAL]


def _special(name: str):
    root = corpus_dir()
    path = root / name if root else None
    if path is None or not path.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{name} not in the corpus"))]
    return [pytest.param(path, id=name)]


def _mesh_annotations(model: dict) -> list[dict]:
    return [a for a in model["annotations"] if a.get("kind") in MESH_KINDS]


@pytest.mark.parametrize("corpus_file", ORDINARY, ids=[corpus_id(p) for p in ORDINARY])
def test_it_finds_no_nat_mtls_or_sidecar_that_is_not_there(model):
    found = _mesh_annotations(model)
    assert not found, f"mesh findings with no evidence in the capture: {found}"


@pytest.mark.parametrize("corpus_file", _special(MTLS_FILE))
def test_it_reports_one_mtls_for_a_client_certificate_handshake(model, reference):
    found = _mesh_annotations(model)
    mtls = [a for a in found if a["kind"] == "mtls"]
    assert len(mtls) == 1, f"expected exactly one mtls annotation, got {mtls}"
    assert "client-certificate" in mtls[0]["evidence"], mtls[0]
    others = [a for a in found if a["kind"] != "mtls"]
    assert not others, f"nothing else mesh-like happens here: {others}"

    # It is about the connection tshark saw the client certificate on, oriented the same way.
    with_cert = [c for c in reference.connections.values() if c.tls.client_certificate]
    assert len(with_cert) == 1, "tshark should see one client certificate in this capture"
    ref = with_cert[0]
    # The annotation may name endpoints or bare addresses; the addresses must match.
    assert parse_endpoint(mtls[0]["client"])[0] == parse_endpoint(ref.client)[0], (mtls[0], ref)
    assert parse_endpoint(mtls[0]["server"])[0] == parse_endpoint(ref.server)[0], (mtls[0], ref)
    conn = next(c for c in model["connections"] if c["id"] == mtls[0]["connection"])
    assert {canonical_endpoint(conn["client"]), canonical_endpoint(conn["server"])} == {
        ref.client, ref.server}


@pytest.mark.parametrize("corpus_file", _special(ISTIO_INBOUND_FILE))
def test_it_may_see_an_istio_inbound_sidecar_but_nothing_else(model):
    found = _mesh_annotations(model)
    sidecars = [a for a in found if a["kind"] == "sidecar"]
    assert len(sidecars) <= 1, sidecars
    for a in sidecars:
        assert a.get("mesh") == "istio", a
        assert a.get("direction") == "inbound", a
    others = [a for a in found if a["kind"] != "sidecar"]
    assert not others, f"only an inbound sidecar is evident here: {others}"
