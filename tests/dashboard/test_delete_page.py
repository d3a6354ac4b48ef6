"""Deleting a capture from the dashboard: a confirmation page (GET changes nothing), then a
CSRF-checked POST that deletes the row and the files and goes back to the list with a message.
Only the owner or staff (anyone else: 404, as for every page of a capture they cannot see); a
capture still recording is stopped first (409); a pinned one needs an explicit "although it is
pinned" (or unpinning first), while the API's DELETE, which names the capture by id, deletes it
as before. The browser side is tests/browser/test_delete_capture.py."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.utils import timezone

from captures.models import Capture, Note, ShareLink, Status

# `data`: test_retention's autouse fixture (a data directory of the test's own, a queue that
# runs nothing), used here as it is there.
from .test_retention import DAY, data, stored  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def delete_url(capture) -> str:
    return f"/captures/{capture.id}/delete/"


def csrf_client(user) -> Client:
    """A browser's view of the forms: CSRF is enforced, as it is outside tests."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def token_from(client: Client, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200, page.content[:300]
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]


def test_it_asks_first_then_deletes_the_row_and_the_files_and_says_so(users):
    alice = users["alice"]
    capture = stored(alice, "to-delete", nbytes=2048)
    Note.objects.create(capture=capture, author=alice, target="message:1", text="look")
    ShareLink.objects.create(capture=capture, token_hash="d" * 64, created_by=alice,
                             expires=timezone.now() + DAY)
    client = csrf_client(alice)

    page = client.get(delete_url(capture))
    text = page.content.decode()
    assert page.status_code == 200
    assert "Delete to-delete?" in text
    assert "1 capture file (2.0 kB)" in text and "1 note" in text
    assert "1 active share link" in text
    assert 'id="pinned-warning"' not in text
    assert Capture.objects.filter(id=capture.id).exists()  # GET changes nothing

    token = token_from(client, delete_url(capture))
    answer = client.post(delete_url(capture), {"csrfmiddlewaretoken": token})
    assert answer.status_code == 302 and answer["Location"] == "/"
    assert not Capture.objects.filter(id=capture.id).exists()
    assert not capture.directory.exists()
    assert not Note.objects.filter(capture_id=capture.id).exists()
    listing = client.get("/")
    assert "Deleted to-delete: its 1 capture file (2.0 kB), analysis, notes and share links." \
        in listing.content.decode()


def test_a_post_without_the_csrf_token_is_refused(users):
    capture = stored(users["alice"], "kept")
    answer = csrf_client(users["alice"]).post(delete_url(capture))
    assert answer.status_code == 403
    assert Capture.objects.filter(id=capture.id).exists()
    assert (capture.directory / "capture.pcap").exists()


def test_only_the_owner_or_staff_may_delete(users):
    capture = stored(users["alice"], "alices")
    bob = Client()
    bob.force_login(users["bob"])
    assert bob.get(delete_url(capture)).status_code == 404
    assert bob.post(delete_url(capture)).status_code == 404
    assert Capture.objects.filter(id=capture.id).exists()

    staff = Client()
    staff.force_login(users["root"])
    page = staff.get(delete_url(capture))
    assert page.status_code == 200 and "alice" in page.content.decode()  # whose it is
    assert staff.post(delete_url(capture)).status_code == 302
    assert not Capture.objects.filter(id=capture.id).exists()


def test_a_capture_still_recording_is_stopped_first(users, alice_client):
    capture = stored(users["alice"], "recording", status=Status.RUNNING)
    page = alice_client.get(delete_url(capture)).content.decode()
    assert 'id="delete-running"' in page and "stop it first" in page
    assert 'id="confirm-delete"' not in page
    answer = alice_client.post(delete_url(capture))
    assert answer.status_code == 409
    assert "the capture is running: stop it first" in answer.content.decode()
    assert (capture.directory / "capture.pcap").exists()


def test_a_pinned_capture_needs_an_explicit_confirmation(users, alice_client):
    capture = stored(users["alice"], "precious", pinned=True)
    page = alice_client.get(delete_url(capture)).content.decode()
    assert 'id="pinned-warning"' in page and "This capture is pinned" in page
    assert 'name="pinned_too"' in page

    # The button alone (a form sent without the tick): refused, the capture stays.
    refused = alice_client.post(delete_url(capture))
    assert refused.status_code == 409
    assert "precious is pinned: confirm" in refused.content.decode()
    assert Capture.objects.filter(id=capture.id).exists()

    answer = alice_client.post(delete_url(capture), {"pinned_too": "yes"})
    assert answer.status_code == 302
    assert not Capture.objects.filter(id=capture.id).exists()
    assert not capture.directory.exists()


def test_unpinning_first_comes_back_to_the_confirmation(users, alice_client):
    capture = stored(users["alice"], "precious", pinned=True)
    back = alice_client.post(f"/captures/{capture.id}/pin/",
                             {"pinned": "false", "next": delete_url(capture)})
    assert back.status_code == 302 and back["Location"] == delete_url(capture)
    page = alice_client.get(delete_url(capture)).content.decode()
    assert 'id="pinned-warning"' not in page
    assert alice_client.post(delete_url(capture)).status_code == 302
    assert not Capture.objects.filter(id=capture.id).exists()


def test_the_api_deletes_a_pinned_capture_as_it_always_did(users, alice_client):
    capture = stored(users["alice"], "scripted", pinned=True)
    answer = alice_client.delete(f"/api/captures/{capture.id}/")
    assert answer.status_code == 200 and answer.json() == {"deleted": True}
    assert not capture.directory.exists()
    running = stored(users["alice"], "running", status=Status.RUNNING)
    refused = alice_client.delete(f"/api/captures/{running.id}/")
    assert refused.status_code == 409
    assert refused.json()["error"] == "the capture is running: stop it first"


def test_it_goes_back_to_the_same_search_and_never_off_site(users, alice_client):
    first, second = stored(users["alice"], "first"), stored(users["alice"], "second")
    answer = alice_client.post(delete_url(first), {"next": "/?q=fir&page=1"})
    assert answer["Location"] == "/?q=fir&page=1"
    answer = alice_client.post(delete_url(second), {"next": "https://evil.example/"})
    assert answer["Location"] == "/"


def test_the_list_and_the_capture_page_offer_it_for_finished_captures(users, alice_client):
    done = stored(users["alice"], "done")
    running = stored(users["alice"], "busy", status=Status.RUNNING)
    listing = alice_client.get("/?q=").content.decode()
    assert f'method="get" action="/captures/{done.id}/delete/"' in listing
    assert 'aria-label="Delete done"' in listing
    assert f"/captures/{running.id}/delete/" not in listing
    detail = alice_client.get(f"/captures/{done.id}/").content.decode()
    assert f'id="delete-capture" href="/captures/{done.id}/delete/"' in detail
    assert 'id="delete-capture"' not in alice_client.get(
        f"/captures/{running.id}/").content.decode()


def test_a_capture_deleted_already_is_not_found(users, alice_client):
    capture = stored(users["alice"], "twice")
    assert alice_client.post(delete_url(capture)).status_code == 302
    assert alice_client.post(delete_url(capture)).status_code == 404  # no such capture now
