"""Uploading a capture: stored byte for byte, analysed by the worker, counted right."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from captures.analysis import CaptureFile, analyze_files
from captures.models import Capture

from .conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CORPUS_FILE = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"


def upload(client, path, name="upload-one", **extra):
    data = path.read_bytes() if hasattr(path, "read_bytes") else path
    return client.post("/api/captures/", {"name": name, "file": SimpleUploadedFile(
        "whatever.bin", data, content_type="application/octet-stream")}, **extra)


def test_it_stores_an_upload_byte_for_byte_and_analyses_it(worker, alice_client, corpus):
    path = corpus / CORPUS_FILE
    response = upload(alice_client, path)
    assert response.status_code == 201, response.content
    capture_id = response.json()["id"]

    done = wait_for(lambda: alice_client.get(f"/api/captures/{capture_id}/").json()
                    if alice_client.get(f"/api/captures/{capture_id}/").json()["status"]
                    in ("completed", "failed") else None, 30, what="the upload's analysis")
    assert done["status"] == "completed", done

    stored = alice_client.get(f"/api/captures/{capture_id}/pcap")
    assert stored.status_code == 200
    body = b"".join(stored.streaming_content)
    assert hashlib.sha256(body).digest() == hashlib.sha256(path.read_bytes()).digest()

    expected = analyze_files([CaptureFile(path)]).to_dict()["capture"]["packets"]
    assert done["counters"]["packets"] == expected > 0
    analysis = alice_client.get(f"/api/captures/{capture_id}/analysis")
    assert analysis.status_code == 200
    document = json.loads(b"".join(analysis.streaming_content))
    assert document["schema"] == "kviz.sequence/1"
    assert document["capture"]["packets"] == expected
    assert Capture.objects.get(id=capture_id).summary["packets"] == expected


def test_it_accepts_pcapng_by_content_whatever_the_name(worker, alice_client, corpus):
    path = corpus / "linktype/zeek_pcapng-two-interfaces-dns.pcapng"
    response = upload(alice_client, path, name="ng")
    assert response.status_code == 201, response.content
    capture = Capture.objects.get(id=response.json()["id"])
    assert capture.stored_files()[0].path.endswith("capture.pcapng")


@pytest.fixture(scope="module")
def dnat_recording(tmp_path_factory):
    from tests.support.dnat import record_dnat

    return record_dnat(tmp_path_factory.mktemp("upload-dnat"), "kvu")


def test_it_analyses_an_upload_with_its_interface_names_and_inventory(
        worker, alice_client, dnat_recording):
    from tests.support.dnat import SERVER, VIP

    meta = {"schema": "kviz.capture-meta/1", "vantage": "node/router",
            "interfaces": {str(k): v for k, v in dnat_recording.router_interfaces.items()}}
    inventory = {"schema": "kviz.inventory/1",
                 "pods": [{"namespace": "default", "name": "web", "ips": [SERVER]}],
                 "services": [{"namespace": "default", "name": "web", "cluster_ips": [VIP]}]}
    response = alice_client.post("/api/captures/", {
        "name": "with-names",
        "file": SimpleUploadedFile("router.pcapng", dnat_recording.router.read_bytes()),
        "meta": SimpleUploadedFile("router.pcapng.meta.json", json.dumps(meta).encode()),
        "inventory": json.dumps(inventory)})
    assert response.status_code == 201, response.content
    capture_id = response.json()["id"]
    wait_for(lambda: alice_client.get(f"/api/captures/{capture_id}/").json()["status"]
             in ("completed", "failed") or None, 30, what="the upload's analysis")
    document = json.loads(b"".join(
        alice_client.get(f"/api/captures/{capture_id}/analysis").streaming_content))
    dnat = next(a for a in document["annotations"] if a["kind"] == "dnat")
    assert dnat["where"] == "r0 → r1"  # interface names from the uploaded metadata
    named = {p["ip"]: (p["name"], p["kind"]) for p in document["participants"]}
    assert named[VIP] == ("web", "service") and named[SERVER] == ("web", "pod")


@pytest.mark.parametrize("field, value, message", [
    ("meta", "not json", "capture metadata is not valid JSON"),
    ("meta", '{"schema": "other"}', "kviz.capture-meta/1"),
    ("meta", '{"schema": "kviz.capture-meta/1", "interfaces": {"eth": "x"}}',
     "interfaces must map"),
    ("inventory", "[1]", "inventory must be a JSON object"),
    ("inventory", '{"pods": 3}', "pods must be a list"),
])
def test_it_refuses_bad_metadata_or_inventory_and_stores_nothing(
        alice_client, corpus, field, value, message):
    response = alice_client.post("/api/captures/", {
        "name": "bad-extra",
        "file": SimpleUploadedFile("a.pcap", (corpus / CORPUS_FILE).read_bytes()),
        field: value})
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not Capture.objects.exists()
