"""Uploading a capture: stored byte for byte, analysed by the worker, counted right."""

from __future__ import annotations

import hashlib

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
    document = __import__("json").loads(b"".join(analysis.streaming_content))
    assert document["schema"] == "kviz.sequence/1"
    assert document["capture"]["packets"] == expected
    assert Capture.objects.get(id=capture_id).summary["packets"] == expected


def test_it_accepts_pcapng_by_content_whatever_the_name(worker, alice_client, corpus):
    path = corpus / "linktype/zeek_pcapng-two-interfaces-dns.pcapng"
    response = upload(alice_client, path, name="ng")
    assert response.status_code == 201, response.content
    capture = Capture.objects.get(id=response.json()["id"])
    assert capture.pcap_path.endswith("capture.pcapng")
