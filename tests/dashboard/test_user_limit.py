"""A user runs at most KVIZ_MAX_CAPTURES_PER_USER live captures at once (queued, running or
stopping): one more is refused with 429 and a sentence saying why and what to do, by the API
and on the new-capture form; parallel requests never get past the limit (PostgreSQL, a thread
and a connection per request). Nothing here runs a capture: the queue only records."""

from __future__ import annotations

import pytest

from captures.jobs import actions
from captures.models import Capture, Status, TargetKind

from .test_caps import in_parallel, signed_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

LOOPBACK = {"kind": "local", "interface": "lo"}


@pytest.fixture(autouse=True)
def queued(monkeypatch, settings):
    """What was queued; never run (a live capture of lo would run for its whole limit)."""
    settings.KVIZ_MAX_CAPTURES_PER_USER = 2
    settings.KVIZ_USER_QUOTA_BYTES = 0
    found: list = []
    monkeypatch.setattr(actions, "queue", lambda task, capture_id: found.append(capture_id))
    return found


def start(client, name: str):
    return client.post("/api/captures/", {"name": name, "target": LOOPBACK,
                                          "limits": {"seconds": 5}},
                       content_type="application/json")


def row(owner, name: str, status: str, kind: str = TargetKind.LOCAL) -> Capture:
    return Capture.objects.create(name=name, owner=owner, target_kind=kind,
                                  target_spec={"interface": "lo"}, status=status,
                                  limit_seconds=5, limit_packets=10, limit_bytes=10)


def test_it_refuses_a_capture_beyond_the_limit_with_429_and_says_why(users, alice_client,
                                                                       queued):
    assert start(alice_client, "first").status_code == 201
    assert start(alice_client, "second").status_code == 201
    refused = start(alice_client, "third")
    assert refused.status_code == 429
    message = refused.json()["error"]
    assert "2 captures queued or running (first, second)" in message
    assert "at once (2)" in message
    assert "stop one of your running captures" in message
    # When to try again: the soonest time limit (5 s) at the latest.
    assert 1 <= int(refused["Retry-After"]) <= 5
    assert "one ends within" in message
    assert list(Capture.objects.filter(owner=users["alice"]).values_list("name", flat=True)
                .order_by("name")) == ["first", "second"]
    assert len(queued) == 2  # nothing queued for the refused one


def test_it_counts_running_and_stopping_captures_but_not_finished_ones_or_uploads(
        users, alice_client):
    alice = users["alice"]
    row(alice, "running", Status.RUNNING)
    row(alice, "stopping", Status.STOPPING)
    for status in (Status.COMPLETED, Status.FAILED, Status.INTERRUPTED):
        row(alice, f"done-{status}", status)
    row(alice, "analysing", Status.RUNNING, kind=TargetKind.UPLOAD)
    assert start(alice_client, "more").status_code == 429
    Capture.objects.filter(name="stopping").update(status=Status.COMPLETED)
    assert start(alice_client, "more").status_code == 201


def test_the_limit_is_per_user(users, alice_client):
    alice, root = users["alice"], users["root"]
    row(alice, "a1", Status.RUNNING)
    row(alice, "a2", Status.QUEUED)
    assert start(alice_client, "a3").status_code == 429
    # Staff may capture the host too; alice's captures do not count against them.
    assert start(signed_in(root), "r1").status_code == 201


def test_no_limit_when_it_is_zero(users, alice_client, settings):
    settings.KVIZ_MAX_CAPTURES_PER_USER = 0
    for index in range(4):
        assert start(alice_client, f"c{index}").status_code == 201


def test_parallel_starts_never_get_past_the_limit(users, settings):
    settings.KVIZ_MAX_CAPTURES_PER_USER = 3
    clients = [signed_in(users["alice"]) for _ in range(12)]
    statuses = in_parallel(12, lambda i: start(clients[i], f"p{i}").status_code)
    assert sorted(statuses) == [201] * 3 + [429] * 9
    assert Capture.objects.filter(owner=users["alice"]).count() == 3


def test_the_form_says_why_it_refused(users, alice_client):
    alice = users["alice"]
    row(alice, "a1", Status.RUNNING)
    row(alice, "a2", Status.QUEUED)
    page = alice_client.post("/captures/new/", {"name": "from-form", "target": "local:lo",
                                                "limit_seconds": "5"})
    assert page.status_code == 429
    assert 1 <= int(page["Retry-After"]) <= 5
    text = page.content.decode()
    assert 'id="form-error"' in text and "2 captures queued or running" in text
    # The captures to stop, each linked to its live page (where Stop is).
    assert 'id="busy-captures"' in text
    for capture in Capture.objects.filter(owner=alice):
        assert f'href="/captures/{capture.id}/live/">{capture.name}</a>' in text
    assert not Capture.objects.filter(name="from-form").exists()


def test_retry_after_is_when_the_first_running_capture_reaches_its_time_limit(users,
                                                                             alice_client):
    import datetime

    from django.utils import timezone

    alice = users["alice"]
    long = row(alice, "long", Status.RUNNING)
    soon = row(alice, "soon", Status.RUNNING)
    now = timezone.now()
    Capture.objects.filter(id=long.id).update(limit_seconds=3600, started=now)
    Capture.objects.filter(id=soon.id).update(limit_seconds=600,
                                              started=now - datetime.timedelta(seconds=500))
    refused = start(alice_client, "third")
    assert refused.status_code == 429
    assert 95 <= int(refused["Retry-After"]) <= 100
    assert "(long, soon)" in refused.json()["error"]
