"""A TLS key log given with an upload: the analysis reads inside the TLS it has keys for; the
secrets live apart from the capture (DATA_DIR/keys/<id>/), never reach a share link or a
bundle, and are deleted on their own (API DELETE, the page's button), which analyses the
capture again without them."""

from __future__ import annotations

import json
import stat

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from captures.models import Capture

from .conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SAMPLE = "tls/zeek_tls12-sni-alpn-http11-decryptable"


def _body(response) -> bytes:
    if hasattr(response, "streaming_content"):
        return b"".join(response.streaming_content)
    return response.content


def _finished(client, capture_id):
    return wait_for(lambda: doc if (doc := client.get(f"/api/captures/{capture_id}/").json())
                    ["status"] in ("completed", "failed") else None, 60,
                    what="the upload's analysis")


def _http(client, capture_id) -> list[dict]:
    return json.loads(_body(client.get(f"/api/captures/{capture_id}/analysis")))["http"]


@pytest.fixture
def sample(corpus):
    pcap, keylog = corpus / f"{SAMPLE}.pcap", corpus / f"{SAMPLE}.keylog"
    secret = keylog.read_text().split()[2]
    return pcap, keylog, secret


def upload(client, pcap, keylog, name="with-keys"):
    return client.post("/api/captures/", {
        "name": name,
        "file": SimpleUploadedFile("tls.pcap", pcap.read_bytes()),
        "keylog": SimpleUploadedFile("sslkeys.log", keylog.read_bytes())})


def test_it_decrypts_with_the_key_log_and_keeps_it_apart(worker, alice_client, sample):
    pcap, keylog, secret = sample
    response = upload(alice_client, pcap, keylog)
    assert response.status_code == 201, response.content
    capture_id = response.json()["id"]
    done = _finished(alice_client, capture_id)
    assert done["status"] == "completed", done
    assert done["keylog"] is True
    [request] = _http(alice_client, capture_id)
    assert (request["method"], request["target"], request["status"]) == ("GET", "/", 301)
    assert request["decrypted"] is True

    stored = settings.DATA_DIR / "keys" / capture_id / "keylog"
    assert stored.read_bytes() == keylog.read_bytes()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    capture = Capture.objects.get(id=capture_id)
    assert not any(secret in p.read_text(errors="replace")
                   for p in capture.directory.rglob("*") if p.is_file())


@pytest.mark.parametrize("redacted", [False, True], ids=["full", "redacted"])
def test_no_share_or_bundle_holds_the_secrets(worker, alice_client, sample, redacted):
    pcap, keylog, secret = sample
    capture_id = upload(alice_client, pcap, keylog).json()["id"]
    assert _finished(alice_client, capture_id)["status"] == "completed"
    token = alice_client.post(f"/api/captures/{capture_id}/share/",
                              json.dumps({"redacted": redacted}),
                              content_type="application/json").json()["token"]
    anyone = Client()
    answers = [anyone.get(f"/api/share/{token}/"), anyone.get(f"/s/{token}/"),
               anyone.get(f"/api/share/{token}/analysis"),
               anyone.get(f"/api/share/{token}/bundle")]
    assert any(a.status_code == 200 for a in answers)
    for answer in answers:
        body = _body(answer)
        assert secret.encode() not in body and secret.lower().encode() not in body
        assert b"\"keylog\"" not in body
    owner_bundle = _body(alice_client.get(f"/api/captures/{capture_id}/bundle"))
    assert secret.encode() not in owner_bundle


def test_deleting_the_key_log_removes_it_and_what_it_decrypted(worker, alice_client, users,
                                                                sample):
    pcap, keylog, _secret = sample
    capture_id = upload(alice_client, pcap, keylog).json()["id"]
    assert _finished(alice_client, capture_id)["status"] == "completed"
    before = Capture.objects.get(id=capture_id).analysis_path

    bob = Client()
    bob.force_login(users["bob"])
    assert bob.delete(f"/api/captures/{capture_id}/keylog").status_code == 404
    assert (settings.DATA_DIR / "keys" / capture_id / "keylog").exists()

    answer = alice_client.delete(f"/api/captures/{capture_id}/keylog")
    assert answer.status_code == 200, answer.content
    assert not (settings.DATA_DIR / "keys" / capture_id).exists()
    assert alice_client.get(f"/api/captures/{capture_id}/").json()["keylog"] is False
    try:
        # The suite's one worker may still be busy with an earlier test's work.
        wait_for(lambda: _http(alice_client, capture_id) == [], 120,
                 what="the analysis without the key log")
    except AssertionError as exc:
        log = Capture.objects.get(id=capture_id).log
        raise AssertionError(f"{exc}\ncapture log:\n{log}\nworker:\n{worker.tail(60)}") from None
    assert Capture.objects.get(id=capture_id).analysis_path == before
    assert alice_client.delete(f"/api/captures/{capture_id}/keylog").status_code == 404


def test_something_that_is_not_a_key_log_refuses_the_upload(worker, alice_client, sample):
    pcap, _keylog, _secret = sample
    before = Capture.objects.count()
    keys = settings.DATA_DIR / "keys"
    kept = set(keys.iterdir()) if keys.exists() else set()
    response = alice_client.post("/api/captures/", {
        "name": "bad-keys", "file": SimpleUploadedFile("tls.pcap", pcap.read_bytes()),
        "keylog": SimpleUploadedFile("keys.txt", b"not a key log\n")})
    assert response.status_code == 400
    assert "key log" in response.json()["error"]
    assert Capture.objects.count() == before
    assert (set(keys.iterdir()) if keys.exists() else set()) == kept


def test_the_form_takes_a_key_log_and_the_page_deletes_it(worker, alice_client, sample):
    pcap, keylog, _secret = sample
    response = alice_client.post("/captures/new/", {
        "name": "form-keys", "target": "upload",
        "file": SimpleUploadedFile("tls.pcap", pcap.read_bytes()),
        "keylog": SimpleUploadedFile("sslkeys.log", keylog.read_bytes())})
    assert response.status_code == 302, response.content[:500]
    capture = Capture.objects.get(name="form-keys")
    assert _finished(alice_client, capture.id)["keylog"] is True
    page = alice_client.get(f"/captures/{capture.id}/").content.decode()
    assert 'id="delete-keylog"' in page
    answer = alice_client.post(f"/captures/{capture.id}/keylog/delete/")
    assert answer.status_code == 302
    assert not (settings.DATA_DIR / "keys" / str(capture.id)).exists()
    assert 'id="delete-keylog"' not in alice_client.get(f"/captures/{capture.id}/").content.decode()


def test_deleting_the_capture_deletes_its_key_log(worker, alice_client, sample):
    pcap, keylog, _secret = sample
    capture_id = upload(alice_client, pcap, keylog).json()["id"]
    assert _finished(alice_client, capture_id)["status"] == "completed"
    assert (settings.DATA_DIR / "keys" / capture_id / "keylog").exists()
    assert alice_client.delete(f"/api/captures/{capture_id}/").status_code == 200
    wait_for(lambda: not (settings.DATA_DIR / "keys" / capture_id).exists() or None, 10,
             what="the key log's removal")
