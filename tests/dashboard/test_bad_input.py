"""Hostile or broken requests: each a clear 4xx, with nothing queued, run, stored or lost."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from captures.adapters import sniffer
from captures.jobs import actions, tasks
from captures.models import Capture, ShareLink, Status, TargetKind

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE = ["; rm -rf /", "$(id)", "`id`", "a\nb", "x" * 10_000, "UPPER", "-dash", "dot.ted",
           "", None, 42]


@pytest.fixture
def nothing_runs(monkeypatch, tmp_path):
    """Fails the test if anything is queued or a capture process is started."""
    queued = []
    monkeypatch.setattr(tasks, "enqueue", lambda *args: queued.append(args))

    def no_capture(*args, **kwargs):
        raise AssertionError("a capture process was started")

    monkeypatch.setattr(sniffer, "start", no_capture)
    yield queued
    assert queued == [], "a task was queued"


@pytest.fixture
def settings_for_uploads(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    settings.KVIZ_MAX_UPLOAD_BYTES = 4096
    return settings


def start(client, **body):
    payload = {"name": "ok", "target": {"kind": "local", "interface": "lo"}} | body
    return client.post("/api/captures/", payload, content_type="application/json")


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_it_rejects_names_that_are_not_dns1123_labels(alice_client, nothing_runs, name):
    response = start(alice_client, name=name)
    assert response.status_code == 400
    assert "DNS-1123" in response.json()["error"]
    assert not Capture.objects.exists()


@pytest.mark.parametrize("bpf", ["; rm -rf /", "$(touch {canary})", "tcp\nport 80",
                                 "tcp or " * 1500 + "udp", "port 99999", "tcp and and"],
                         ids=["semicolon", "substitution", "newline", "10k", "range", "syntax"])
def test_it_rejects_filters_that_do_not_compile(alice_client, nothing_runs, tmp_path, bpf):
    canary = tmp_path / "canary"
    response = start(alice_client, filter=bpf.format(canary=canary))
    assert response.status_code == 400
    assert "filter" in response.json()["error"]
    assert not canary.exists(), "the filter reached a shell"
    assert not Capture.objects.exists()


@pytest.mark.parametrize("target", [
    {"kind": "local", "interface": "lo; rm -rf /"},
    {"kind": "local", "interface": "../../etc"},
    {"kind": "local", "interface": "x" * 10_000},
    {"kind": "local", "interface": "nosuchif0"},
    {"kind": "lab", "target": "pod/default/../../etc"},
    {"kind": "lab", "target": "pod/Default/ubuntu"},
    {"kind": "lab", "target": "node/$(id)"},
    {"kind": "upload"},
    {"kind": "shell", "command": "id"},
    "local",
], ids=repr)
def test_it_rejects_targets_that_do_not_exist_or_are_hostile(alice_client, nothing_runs, target):
    response = start(alice_client, target=target)
    assert response.status_code == 400
    assert response.json()["error"]
    assert not Capture.objects.exists()


CLUSTER_TARGETS = {
    "pod": {"kind": "pod", "namespace": "default", "pod": "x"},
    "node": {"kind": "node", "node": "x"},
    "service": {"kind": "service", "namespace": "default", "service": "x"},
}


@pytest.mark.parametrize("kind", sorted(CLUSTER_TARGETS))
def test_it_refuses_a_cluster_target_not_granted_before_asking_any_cluster(
    alice_client, nothing_runs, kind
):
    response = start(alice_client, target=CLUSTER_TARGETS[kind])
    assert response.status_code == 400
    assert "not granted to you" in response.json()["error"]


@pytest.mark.parametrize("kind", sorted(CLUSTER_TARGETS))
def test_it_says_no_cluster_is_configured_for_granted_cluster_kinds(
    users, alice_client, nothing_runs, kind
):
    alice = users["alice"]
    for group in ("k8s-ns:default", "k8s-nodes"):
        alice.groups.add(Group.objects.get_or_create(name=group)[0])
    response = start(alice_client, target=CLUSTER_TARGETS[kind])
    assert response.status_code == 400
    assert "no cluster configured" in response.json()["error"]


@pytest.mark.parametrize("limits", [{"seconds": 10**9}, {"packets": 0}, {"bytes": -1},
                                    {"seconds": "10"}, {"seconds": True}, {"hours": 1}, [1]],
                         ids=repr)
def test_it_rejects_limits_beyond_the_maxima(alice_client, nothing_runs, limits):
    response = start(alice_client, limits=limits)
    assert response.status_code == 400
    assert "limit" in response.json()["error"]


def test_it_rejects_a_body_that_is_not_json(alice_client, nothing_runs):
    response = alice_client.post("/api/captures/", "{nope", content_type="application/json")
    assert response.status_code == 400


def upload(client, data: bytes, name="up"):
    return client.post("/api/captures/", {"name": name, "file": SimpleUploadedFile(
        "capture.pcap", data, content_type="application/vnd.tcpdump.pcap")})


def test_it_refuses_an_oversize_upload(alice_client, nothing_runs, settings_for_uploads, corpus):
    big = (corpus / "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap").read_bytes()
    assert len(big) > settings_for_uploads.KVIZ_MAX_UPLOAD_BYTES
    response = upload(alice_client, big)
    assert response.status_code == 413
    assert not Capture.objects.exists()
    assert not list((settings_for_uploads.DATA_DIR).rglob("*.pcap*"))


@pytest.mark.parametrize("data", [
    b"this is a text file named capture.pcap\n" * 10,
    b"\x1f\x8b\x08\x00" + b"\x00" * 100,
    b"\xd4\xc3\xb2\xa1\x02\x00",  # a pcap magic, then nothing
    b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00garbage!",  # a pcapng magic, broken section header
    b"",
], ids=["text", "gzip", "cut-pcap-header", "broken-pcapng", "empty"])
def test_it_refuses_an_upload_that_is_not_a_capture(alice_client, nothing_runs,
                                                    settings_for_uploads, data):
    response = upload(alice_client, data)
    assert response.status_code in (400, 415), response.content
    assert response.json()["error"]
    assert not Capture.objects.exists()
    left = [p for p in settings_for_uploads.DATA_DIR.rglob("*") if p.name != "captures"]
    assert not left, "a rejected upload left files"


def make_capture(owner, **fields) -> Capture:
    defaults = dict(name="theirs", target_kind=TargetKind.LOCAL, target_spec={"interface": "lo"},
                    limit_seconds=10, limit_packets=10, limit_bytes=10, status=Status.RUNNING)
    return Capture.objects.create(owner=owner, **(defaults | fields))


def test_another_users_capture_is_not_found(client, users, nothing_runs):
    theirs = make_capture(users["alice"])
    client.force_login(users["bob"])
    base = f"/api/captures/{theirs.id}/"
    assert client.get(base).status_code == 404
    assert client.post(base + "stop/").status_code == 404
    assert client.get(base + "pcap").status_code == 404
    assert client.get(base + "analysis").status_code == 404
    assert client.post(base + "share/", {}, content_type="application/json").status_code == 404
    assert client.get("/api/captures/").json()["captures"] == []
    theirs.refresh_from_db()
    assert theirs.status == Status.RUNNING
    assert not ShareLink.objects.exists()


def test_anonymous_requests_are_refused(client, users, nothing_runs):
    theirs = make_capture(users["alice"])
    assert client.get("/api/captures/").status_code == 401
    assert client.get(f"/api/captures/{theirs.id}/").status_code == 401
    assert client.post(f"/api/captures/{theirs.id}/stop/").status_code == 401
    assert client.get("/api/targets/").status_code == 401
    assert start(client).status_code == 401
    theirs.refresh_from_db()
    assert theirs.status == Status.RUNNING


def test_expired_and_revoked_share_links_are_refused(client, users, nothing_runs):
    capture = make_capture(users["alice"], status=Status.COMPLETED)
    expired, expired_token = actions.share_capture(users["alice"], capture)
    ShareLink.objects.filter(pk=expired.pk).update(
        expires=timezone.now() - datetime.timedelta(seconds=1))
    _revoked, revoked_token = actions.share_capture(users["alice"], capture)
    client.force_login(users["alice"])
    assert client.delete(f"/api/captures/{capture.id}/share/{revoked_token}/").status_code == 200
    client.logout()
    for token in (expired_token, revoked_token, "not-a-token", "x" * 5000):
        for suffix in ("", "pcap", "analysis"):
            response = client.get(f"/api/share/{token}/{suffix}")
            assert response.status_code == 404, (token[:10], suffix)
    capture.refresh_from_db()
    assert capture.status == Status.COMPLETED


def test_a_valid_share_link_is_read_only_and_redaction_hides_the_packets(client, users,
                                                                          nothing_runs):
    capture = make_capture(users["alice"], status=Status.COMPLETED)
    client.force_login(users["alice"])
    shared = client.post(f"/api/captures/{capture.id}/share/", {"redacted": True},
                         content_type="application/json")
    assert shared.status_code == 201
    link = shared.json()
    token = link["token"]
    assert link["url"].endswith(f"/s/{token}/") and link["api_url"].endswith(
        f"/api/share/{token}/")
    client.logout()
    page = client.get(f"/s/{token}/")  # the link people open: a page, no sign-in
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    seen = client.get(f"/api/share/{token}/")
    assert seen.status_code == 200
    assert seen.json()["status"] == "completed"
    assert "target" not in seen.json() and "filter" not in seen.json()
    assert client.get(f"/api/share/{token}/pcap").status_code == 403
    assert client.delete(f"/api/share/{token}/").status_code == 404  # anonymous cannot revoke
    assert client.get(f"/api/share/{token}/").status_code == 200


def test_stopping_a_finished_capture_is_a_conflict(alice_client, users, nothing_runs):
    capture = make_capture(users["alice"], status=Status.COMPLETED)
    response = alice_client.post(f"/api/captures/{capture.id}/stop/")
    assert response.status_code == 409
    capture.refresh_from_db()
    assert capture.status == Status.COMPLETED
