"""What happened, on the capture's page, whatever the analysis' size: the worker writes the
owner's description from the model it has just stored, before the capture is announced; the
page reads that file, not the analysis; a share link's is made once from the stored head; a new
analysis makes them again. The real runner and pages, on corpus captures with failures."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from captures.jobs import actions, derived, described, runner
from captures.jobs.owner_view import OWNER
from captures.models import Capture, Status

pytestmark = pytest.mark.django_db(transaction=True)

REFUSED = "tcp/deepflow_syn-answered-by-rst.pcap"
QUEUE_FULL = "tcp/deepflow_server-accept-queue-full-retransmissions.pcap"


def _run_upload(client, corpus, name: str, monkeypatch) -> Capture:
    queued = []
    monkeypatch.setattr(actions, "queue", lambda task, capture_id: queued.append(capture_id))
    answer = client.post("/api/captures/", {"name": name.split("/")[-1][:40].replace(
        "_", "-").replace(".", "-").strip("-").lower(),
        "file": SimpleUploadedFile("up.pcap", (corpus / name).read_bytes())})
    assert answer.status_code == 201, answer.content
    assert runner.run(answer.json()["id"], "test:1") == Status.COMPLETED
    return Capture.objects.get(id=answer.json()["id"])


@pytest.mark.parametrize("name", [REFUSED, QUEUE_FULL])
def test_the_worker_describes_the_analysis_as_the_page_would(
        service_settings, alice_client, corpus, monkeypatch, name):
    capture = _run_upload(alice_client, corpus, name, monkeypatch)
    kept = described.path(capture, OWNER)
    assert derived.is_current(kept, capture.analysis_file)  # there when it was announced
    by_worker = json.loads(kept.read_text())
    assert by_worker["causes"], "a capture with a failure says what broke"
    # The same as the web makes it from the stored document (its head, the paths cut first).
    from captures.web import redaction

    kept.unlink()
    assert redaction.describe(capture, OWNER) == by_worker
    assert derived.is_current(kept, capture.analysis_file)


def test_the_page_reads_the_description_not_the_analysis(
        service_settings, alice_client, corpus, monkeypatch):
    capture = _run_upload(alice_client, corpus, REFUSED, monkeypatch)
    kept = described.path(capture, OWNER)
    cause = json.loads(kept.read_text())["causes"][0]["text"]
    analysis = capture.analysis_file
    # The analysis no longer readable as JSON, with its time kept: the page must not need it.
    stamp = analysis.stat().st_mtime_ns
    original = analysis.read_bytes()
    analysis.write_bytes(b"\x00" * 16)
    derived.stamp(analysis, stamp)
    try:
        page = alice_client.get(f"/captures/{capture.id}/")
        assert page.status_code == 200
        text = page.content.decode()
        assert 'id="what-happened"' in text and cause.split(":")[0] in text
    finally:
        analysis.write_bytes(original)
        derived.stamp(analysis, stamp)


def test_a_share_link_describes_once_and_a_new_analysis_describes_again(
        service_settings, alice_client, corpus, monkeypatch, client):
    from captures.web import redaction

    capture = _run_upload(alice_client, corpus, REFUSED, monkeypatch)
    token = alice_client.post(f"/api/captures/{capture.id}/share/", {"redacted": True},
                              content_type="application/json").json()["token"]
    client.logout()
    kept = described.path(capture, redaction.REDACTED)
    assert not kept.exists()
    page = client.get(f"/s/{token}/")
    assert page.status_code == 200 and 'id="what-happened"' in page.content.decode()
    assert derived.is_current(kept, capture.analysis_file)
    first = kept.stat().st_ino
    assert client.get(f"/s/{token}/").status_code == 200
    assert kept.stat().st_ino == first  # read, not made again

    # A new analysis (as when a key log is added or removed): both made again.
    owner_file = described.path(capture, OWNER)
    before = owner_file.stat().st_ino
    assert runner.reanalyse(capture.id)
    capture.refresh_from_db()
    assert derived.is_current(owner_file, capture.analysis_file)
    assert owner_file.stat().st_ino != before  # the worker's, written anew
    assert not derived.is_current(kept, capture.analysis_file)
    assert client.get(f"/s/{token}/").status_code == 200
    assert derived.is_current(kept, capture.analysis_file)
