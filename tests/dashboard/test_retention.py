"""Retention, pins and quotas: expired captures go with their files, pinned ones stay, a user's
storage quota refuses uploads and captures with 507, and `manage.py kviz_cleanup` does it all
from a CronJob. On PostgreSQL, with real files in a data directory of the test's own."""

from __future__ import annotations

import datetime
import io
import json
import os
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.utils import timezone

from captures.jobs import actions, retention
from captures.models import Capture, ShareLink, Status, StoredFile, TargetKind

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

DAY = datetime.timedelta(days=1)


@pytest.fixture(autouse=True)
def data(settings, tmp_path, monkeypatch):
    settings.DATA_DIR = tmp_path
    settings.KVIZ_RETENTION_DAYS = 30
    settings.KVIZ_USER_QUOTA_BYTES = 0
    settings.KVIZ_MAX_CAPTURES_PER_USER = 0
    monkeypatch.setattr(actions, "queue", lambda task, capture_id: None)  # nothing runs
    return tmp_path


def stored(owner, name: str, *, age_days: float = 0, status: str = Status.COMPLETED,
           pinned: bool = False, nbytes: int = 1000) -> Capture:
    """A capture with a pcap and an analysis on disk, finished `age_days` ago."""
    finished = timezone.now() - age_days * DAY
    capture = Capture.objects.create(
        name=name, owner=owner, target_kind=TargetKind.UPLOAD, target_spec={}, status=status,
        limit_seconds=1, limit_packets=1, limit_bytes=1, bytes=nbytes, pinned=pinned,
        created=finished - datetime.timedelta(minutes=5),
        finished=finished if status in (Status.COMPLETED, Status.FAILED) else None)
    capture.directory.mkdir(parents=True)
    (capture.directory / "capture.pcap").write_bytes(b"\0" * nbytes)
    (capture.directory / "analysis.json").write_text('{"annotations":[]}')
    (capture.directory / "layout").mkdir()
    (capture.directory / "layout" / "head.json").write_text("{}")
    StoredFile.objects.create(capture=capture, position=0,
                              path=f"captures/{capture.id}/capture.pcap", bytes=nbytes)
    Capture.objects.filter(id=capture.id).update(
        analysis_path=f"captures/{capture.id}/analysis.json")
    return capture


def test_it_deletes_expired_captures_with_their_files_and_keeps_the_rest(users, data):
    alice = users["alice"]
    old = stored(alice, "old", age_days=31)
    shared = ShareLink.objects.create(capture=old, token_hash="x" * 64, created_by=alice,
                                      expires=timezone.now() + DAY)
    pinned = stored(alice, "pinned", age_days=90, pinned=True)
    recent = stored(alice, "recent", age_days=29)
    failed = stored(alice, "failed-old", age_days=40, status=Status.FAILED)
    running = stored(alice, "running", age_days=60, status=Status.RUNNING)

    report = retention.cleanup()

    assert sorted(report["deleted"]) == sorted([str(old.id), str(failed.id)])
    assert report["freed_bytes"] == 2000
    assert set(Capture.objects.values_list("name", flat=True)) == {"pinned", "recent",
                                                                   "running"}
    assert not old.directory.exists() and not failed.directory.exists()
    assert not ShareLink.objects.filter(id=shared.id).exists()
    for kept in (pinned, recent, running):
        assert (kept.directory / "capture.pcap").exists()


def test_a_capture_never_finished_expires_from_when_it_was_made(users):
    interrupted = stored(users["alice"], "cut", age_days=45, status=Status.INTERRUPTED)
    assert interrupted.finished is None
    assert retention.cleanup()["deleted"] == [str(interrupted.id)]


def test_nothing_expires_when_retention_is_off(users, settings):
    settings.KVIZ_RETENTION_DAYS = 0
    old = stored(users["alice"], "old", age_days=400)
    assert retention.cleanup()["deleted"] == []
    assert old.directory.exists()
    assert retention.expires(Capture.objects.get(id=old.id)) is None


def test_a_capture_pinned_while_cleanup_runs_is_kept(users, monkeypatch):
    old = stored(users["alice"], "old", age_days=31)
    listed = retention.expired

    def pin_after_listing(now=None):
        ids = list(listed(now).values_list("id", flat=True))
        Capture.objects.filter(id=old.id).update(pinned=True)  # the user was faster
        return Capture.objects.filter(id__in=ids)  # as listed, before the pin

    monkeypatch.setattr(retention, "expired", pin_after_listing)
    report = retention.cleanup()
    assert report["expired"] == [str(old.id)] and report["deleted"] == []
    assert Capture.objects.filter(id=old.id).exists() and old.directory.exists()


def test_it_sweeps_directories_without_a_row_once_they_are_old(users, data):
    base = data / "captures"
    orphan = base / "0b6d0a4e-93a5-4b4c-8c7e-2f1d6a3c9e11"
    young = base / "1b6d0a4e-93a5-4b4c-8c7e-2f1d6a3c9e12"  # an upload writing its files
    other = base / "not-a-capture"
    for directory in (orphan, young, other):
        directory.mkdir(parents=True)
        (directory / "capture.pcap").write_bytes(b"x")
    old = time.time() - retention.ORPHAN_GRACE - 60
    os.utime(orphan, (old, old))
    os.utime(other, (old, old))
    kept = stored(users["alice"], "kept")
    os.utime(kept.directory, (old, old))
    assert retention.sweep_orphans() == [orphan.name]
    assert not orphan.exists() and young.exists() and other.exists() and kept.directory.exists()


def test_the_command_deletes_and_reports(users):
    old = stored(users["alice"], "old", age_days=31)
    out = io.StringIO()
    call_command("kviz_cleanup", "--dry-run", stdout=out)
    assert "1 captures would be deleted" in out.getvalue() and str(old.id) in out.getvalue()
    assert old.directory.exists()
    out = io.StringIO()
    call_command("kviz_cleanup", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["deleted"] == [str(old.id)] and report["freed_bytes"] == 1000
    assert not Capture.objects.filter(id=old.id).exists() and not old.directory.exists()


# -- pins -----------------------------------------------------------------------------------


def test_the_owner_pins_and_unpins_through_the_api(users, alice_client, client):
    old = stored(users["alice"], "old", age_days=10)
    doc = alice_client.get(f"/api/captures/{old.id}/").json()
    assert doc["pinned"] is False
    assert doc["expires"].startswith((old.finished + 30 * DAY).date().isoformat())
    pinned = alice_client.post(f"/api/captures/{old.id}/pin/")
    assert pinned.status_code == 200
    assert pinned.json()["pinned"] is True and pinned.json()["expires"] is None
    assert Capture.objects.get(id=old.id).pinned
    unpinned = alice_client.delete(f"/api/captures/{old.id}/pin/")
    assert unpinned.json()["pinned"] is False and unpinned.json()["expires"]
    # Someone else's capture is not there for bob.
    client.force_login(users["bob"])
    assert client.post(f"/api/captures/{old.id}/pin/").status_code == 404
    assert not Capture.objects.get(id=old.id).pinned


def test_the_capture_page_pins_and_goes_back(users, alice_client):
    old = stored(users["alice"], "old", age_days=10)
    page = alice_client.get(f"/captures/{old.id}/").content.decode()
    assert 'id="pin"' in page and "kept until" in page
    answer = alice_client.post(f"/captures/{old.id}/pin/", {"pinned": "true", "next": "/?q=old"})
    assert answer.status_code == 302 and answer["Location"] == "/?q=old"
    assert Capture.objects.get(id=old.id).pinned
    # A `next` elsewhere is not followed.
    answer = alice_client.post(f"/captures/{old.id}/pin/",
                               {"pinned": "false", "next": "https://evil.example/"})
    assert answer["Location"] == f"/captures/{old.id}/"
    assert not Capture.objects.get(id=old.id).pinned


def test_a_share_link_does_not_show_retention(users, alice_client):
    old = stored(users["alice"], "old", age_days=1)
    link = alice_client.post(f"/api/captures/{old.id}/share/", {},
                             content_type="application/json").json()
    doc = alice_client.get(f"/api/share/{link['token']}/").json()
    assert "pinned" not in doc and "findings" not in doc
    assert doc["expires"] == link["expires"]  # the link's own end, not the capture's


def test_the_owner_deletes_a_finished_capture_but_not_a_running_one(users, alice_client):
    done = stored(users["alice"], "done")
    running = stored(users["alice"], "running", status=Status.RUNNING)
    assert alice_client.delete(f"/api/captures/{done.id}/").json() == {"deleted": True}
    assert not Capture.objects.filter(id=done.id).exists() and not done.directory.exists()
    refused = alice_client.delete(f"/api/captures/{running.id}/")
    assert refused.status_code == 409 and "stop it first" in refused.json()["error"]
    assert running.directory.exists()


# -- quota ----------------------------------------------------------------------------------


def upload(client, name: str, size: int):
    header = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")  # pcap, no packets
    return client.post("/api/captures/", {"name": name, "file": SimpleUploadedFile(
        "x.pcap", header + b"\0" * (size - len(header)))})


def test_an_upload_over_the_quota_is_refused_with_507(users, alice_client, settings):
    settings.KVIZ_USER_QUOTA_BYTES = 10_000
    stored(users["alice"], "big", nbytes=9_000)
    refused = upload(alice_client, "more", 2_000)
    assert refused.status_code == 507
    message = refused.json()["error"]
    assert "over your storage quota of 10.0 kB" in message and "delete captures" in message
    assert not Capture.objects.filter(name="more").exists()
    # Another user's storage is theirs.
    stored(users["bob"], "bobs", nbytes=9_500)
    assert upload(alice_client, "fits", 1_000).status_code == 201


def test_a_live_capture_is_refused_at_the_quota_and_cut_to_what_is_left(users, alice_client,
                                                                        settings):
    settings.KVIZ_USER_QUOTA_BYTES = 10_000
    existing = stored(users["alice"], "big", nbytes=10_000)
    body = {"name": "live", "target": {"kind": "local", "interface": "lo"}}
    refused = alice_client.post("/api/captures/", body, content_type="application/json")
    assert refused.status_code == 507
    assert "your whole storage quota of 10.0 kB" in refused.json()["error"]
    Capture.objects.filter(id=existing.id).update(bytes=6_000)
    started = alice_client.post("/api/captures/", body, content_type="application/json")
    assert started.status_code == 201
    assert started.json()["limits"]["bytes"] == 4_000  # it stops where the quota ends


# -- as deployed ----------------------------------------------------------------------------


def test_deploy_runs_the_cleanup_hourly():
    import yaml

    from tests.support.services import ROOT

    [job] = [doc for doc in yaml.safe_load_all((ROOT / "deploy/kubernetes/cleanup.yaml")
                                               .read_text()) if doc]
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["python", "manage.py", "kviz_cleanup"]
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert compose["cleanup"]["command"][:3] == ["python", "manage.py", "kviz_cleanup"]
    assert "--every" in compose["cleanup"]["command"]


def test_the_repeating_command_stops_at_once_on_sigterm(tmp_path):
    import signal
    import subprocess
    import sys

    from tests.support.services import ROOT

    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "REDIS_URL")}
    env.update(KVIZ_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="kviz.settings")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env,
                   check=True, timeout=120)
    process = subprocess.Popen([sys.executable, "manage.py", "kviz_cleanup", "--every", "3600"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()
        assert first.startswith("deleted 0 expired captures"), first
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert time.monotonic() - started < 3
    finally:
        process.kill()
