"""The diagram the owner's page asks for first is laid out by the worker, before the capture is
announced completed: opening the page reads it and builds nothing. A re-analysis (the key log
deleted) lays it out again. Real captures from the corpus, the real worker."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from captures.jobs import diagram_cache
from captures.models import Capture

from .conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CORPUS_FILE = "k8s/deepflow_istio-sidecar-inbound-127.0.0.6-to-productpage-9080.pcap"
TLS_SAMPLE = "tls/zeek_tls12-sni-alpn-http11-decryptable"
FIRST = "layout/?fold=1&part=lean"  # what frontend/static/diagram/api.js asks for first


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def _finished(client, capture_id) -> dict:
    return wait_for(lambda: doc if (doc := client.get(f"/api/captures/{capture_id}/").json())
                    ["status"] in ("completed", "failed") else None, 60,
                    what="the upload's analysis")


def _first_variant(capture_id):
    capture = Capture.objects.get(id=capture_id)
    return capture, diagram_cache.variant_dir(capture, True, [], [], "owner")


def _files(variant) -> dict:
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns)
            for path in variant.iterdir()}


def test_an_upload_has_its_first_layout_before_it_is_completed(worker, alice_client, corpus):
    path = corpus / CORPUS_FILE
    response = alice_client.post("/api/captures/", {
        "name": "first-view", "file": SimpleUploadedFile("node-7-eth0.pcap", path.read_bytes())})
    assert response.status_code == 201, response.content
    capture_id = response.json()["id"]
    assert _finished(alice_client, capture_id)["status"] == "completed"

    capture, variant = _first_variant(capture_id)
    head = variant / "head-lean.json"
    assert head.exists() and (variant / "index.bin").exists(), sorted(variant.parent.iterdir())
    # Written before the row was finished, from the analysis it was finished with.
    assert head.stat().st_mtime <= capture.finished.timestamp()
    assert diagram_cache.is_fresh(variant, capture.analysis_file)

    before = _files(variant)
    answer = alice_client.get(f"/api/captures/{capture_id}/{FIRST}")
    assert answer.status_code == 200
    lean = json.loads(_body(answer))
    assert lean["lean"] is True and lean["row_count"] > 0
    # Its phases come as columns (what frontend/static/diagram/api.js makes objects of again):
    # the same phases as the whole head's.
    whole = json.loads(_body(alice_client.get(f"/api/captures/{capture_id}/layout/?fold=1")))
    columns = lean.pop("phase_columns")
    assert "phases" not in lean and whole["phases"]
    phases = [dict(zip(columns, values, strict=True))
              for values in zip(*columns.values(), strict=True)]
    assert phases == whole["phases"]
    rows = alice_client.get(f"/api/captures/{capture_id}/layout/rows/0/?fold=1")
    index = alice_client.get(f"/api/captures/{capture_id}/layout/?fold=1&part=index")
    assert rows.status_code == index.status_code == 200
    assert _files(variant) == before  # read, not built again
    # One variant (beside it, the lock its builders take).
    assert [p.name for p in variant.parent.iterdir() if p.is_dir()] == [variant.name]

    # The owner's view names no server path: the stored analysis does (where the worker
    # read the file), the layout gives the file's name only.
    data_dir = str(settings.DATA_DIR)
    assert data_dir in capture.analysis_file.read_text()
    for part in variant.iterdir():
        assert data_dir not in part.read_bytes().decode("utf-8", "replace"), part.name
    assert [f["path"] for f in lean["capture"]["files"]] == [
        capture.stored_files()[0].path.rsplit("/", 1)[1]]


def test_a_reanalysis_lays_the_first_view_out_again(worker, alice_client, corpus):
    pcap, keylog = corpus / f"{TLS_SAMPLE}.pcap", corpus / f"{TLS_SAMPLE}.keylog"
    capture_id = alice_client.post("/api/captures/", {
        "name": "with-keys", "file": SimpleUploadedFile("tls.pcap", pcap.read_bytes()),
        "keylog": SimpleUploadedFile("sslkeys.log", keylog.read_bytes())}).json()["id"]
    assert _finished(alice_client, capture_id)["status"] == "completed"
    capture, variant = _first_variant(capture_id)
    decrypted = (variant / "rows-0.json").read_text()
    before = _files(variant)
    analysed = capture.analysis_file.stat().st_mtime_ns

    assert alice_client.delete(f"/api/captures/{capture_id}/keylog").status_code == 200
    # Only the worker is asked anything meanwhile: no layout request reaches the web.
    try:
        wait_for(lambda: capture.analysis_file.stat().st_mtime_ns > analysed
                 and diagram_cache.is_fresh(variant, capture.analysis_file), 120,
                 what="the re-analysis and its layout")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nworker:\n{worker.tail(60)}") from None
    after = _files(variant)
    assert after.keys() == before.keys()
    assert all(after[name] != before[name] for name in before)  # every file written anew
    assert (variant / "rows-0.json").read_text() != decrypted  # what the key log opened: gone
