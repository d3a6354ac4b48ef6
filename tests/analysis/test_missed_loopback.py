"""`capture_missed_loopback` is said only where the capture shows a sidecar and lacks lo; the
public corpus has no such file, so the note must never appear in it, whatever vantage the file
is said to be from.

The lab's own recordings (a meshed pod on eth0 only, and the same traffic with `-i any`) are
in tests/lab/test_sidecar_capture.py: they need root.
"""

from __future__ import annotations

import pytest

from captures.analysis import CaptureFile, analyze_files

from .conftest import corpus_dir, corpus_files, corpus_id

pytestmark = pytest.mark.timeout(180)

KIND = "capture_missed_loopback"
MTLS_FILE = "tls/zeek_tls12-mutual-tls-client-certificate-sni-alpn.pcap"
ISTIO_INBOUND_FILE = "k8s/deepflow_istio-sidecar-inbound-127.0.0.6-to-productpage-9080.pcap"
PRODUCTPAGE_IP = "10.233.64.230"  # the app Envoy delivers to, per SOURCES.md

FILES = corpus_files()


def _corpus_file(name: str):
    root = corpus_dir()
    path = root / name if root else None
    if path is None or not path.is_file():
        pytest.skip(f"{name} is not in the corpus")
    return path


def _notes(files, inventory=None) -> list[dict]:
    doc = analyze_files(files, inventory=inventory).to_dict()
    return [a for a in doc["annotations"] if a["kind"] == KIND]


@pytest.mark.parametrize("vantage", ["pod/default/corpus", "node/corpus"])
@pytest.mark.parametrize("path", FILES, ids=[corpus_id(p) for p in FILES])
def test_it_never_claims_a_missed_lo_in_a_public_capture(path, vantage):
    assert _notes([CaptureFile(path, vantage=vantage)]) == []


def test_it_takes_a_client_certificate_alone_for_no_sidecar():
    # Mutual TLS an application does itself (SNI certauth.idrix.fr, ALPN h2): no mesh.
    path = _corpus_file(MTLS_FILE)
    assert _notes([CaptureFile(path, vantage="pod/default/client")]) == []


def test_it_says_nothing_when_the_capture_holds_lo_even_for_a_known_sidecar():
    # Envoy hands the request to productpage from 127.0.0.6: a sidecar's inbound leg, which
    # only lo carries. With the inventory naming that pod, its sidecar is certain, and so is
    # lo being in the capture.
    path = _corpus_file(ISTIO_INBOUND_FILE)
    inventory = {"schema": "kviz.inventory/1", "pods": [
        {"namespace": "default", "name": "productpage", "ips": [PRODUCTPAGE_IP]}]}
    doc = analyze_files([CaptureFile(path, vantage="pod/default/productpage")],
                        inventory=inventory).to_dict()
    assert [a for a in doc["annotations"] if a["kind"] == "sidecar"], "the sign is there"
    assert [a for a in doc["annotations"] if a["kind"] == KIND] == []
