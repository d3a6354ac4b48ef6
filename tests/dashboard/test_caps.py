"""Caps that must hold under parallel requests, on PostgreSQL: share links per capture, their
lifetime, notes per capture. Each request runs in its own thread, on its own connection."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test import Client

from captures.models import Capture, Note, ShareLink, Status
from captures.web import notes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def capture(users):
    return Capture.objects.create(
        name="capped", owner=users["alice"], target_kind="upload", target_spec={},
        status=Status.COMPLETED, limit_seconds=1, limit_packets=1, limit_bytes=1)


def in_parallel(count: int, request) -> list:
    """request(index) from `count` threads released together; their answers."""
    answers: list = [None] * count
    gate = threading.Barrier(count)

    def run(index: int) -> None:
        try:
            gate.wait(timeout=20)
            answers[index] = request(index)
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return answers


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_parallel_shares_never_make_more_valid_links_than_the_cap(capture, users, settings):
    settings.KVIZ_SHARE_MAX_LINKS = 5
    clients = [signed_in(users["alice"]) for _ in range(30)]
    statuses = in_parallel(30, lambda i: clients[i].post(
        f"/api/captures/{capture.id}/share/", {}, content_type="application/json").status_code)
    assert sorted(statuses) == [201] * 5 + [409] * 25
    assert ShareLink.objects.filter(capture=capture).count() == 5
    # A revoked link no longer counts.
    link = ShareLink.objects.filter(capture=capture).first()
    ShareLink.objects.filter(id=link.id).update(revoked=True)
    assert clients[0].post(f"/api/captures/{capture.id}/share/", {},
                           content_type="application/json").status_code == 201


def test_a_link_is_valid_at_most_the_longest_lifetime(capture, alice_client, settings):
    settings.KVIZ_SHARE_MAX_DAYS = 30

    def share(days):
        return alice_client.post(f"/api/captures/{capture.id}/share/", {"days": days},
                                 content_type="application/json")

    refused = share(31)
    assert refused.status_code == 400 and "1 to 30" in refused.json()["error"]
    assert share(365).status_code == 400
    assert share(30).status_code == 201
    settings.KVIZ_SHARE_DAYS = 90  # a default above the longest is cut to it
    answer = alice_client.post(f"/api/captures/{capture.id}/share/", {},
                               content_type="application/json")
    assert answer.status_code == 201
    link = ShareLink.objects.order_by("-id").first()
    assert (link.expires - link.created).days == 30


def test_parallel_notes_stop_exactly_at_the_cap(capture, users):
    Note.objects.bulk_create(Note(capture=capture, target="message:1", author=users["alice"],
                                  text=f"note {i}") for i in range(notes.MAX_NOTES - 10))
    clients = [signed_in(users["alice"]) for _ in range(40)]
    statuses = in_parallel(40, lambda i: clients[i].post(
        f"/api/captures/{capture.id}/notes/", {"target": "message:2", "text": f"late {i}"},
        content_type="application/json").status_code)
    assert sorted(statuses) == [201] * 10 + [409] * 30
    assert capture.notes.count() == notes.MAX_NOTES
