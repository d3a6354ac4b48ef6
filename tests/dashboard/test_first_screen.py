"""A big capture opens on its diagram's first screen while the worker lays out the rest: the
worker writes the first screen, announces the capture completed, then builds the whole layout
holding its lock. The page's first request gets the first screen meanwhile; everything else
that needs the layout waits for the worker's build instead of making its own. The real runner
and the real views, on a corpus capture, with the first screen set to a few messages."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings

from captures.jobs import actions, diagram_cache, runner
from captures.models import Capture, Status

pytestmark = pytest.mark.django_db(transaction=True)

EIGHT_CONNS = "dns-http/zeek_dns-search-suffix-nxdomain-then-http11-keepalive-8-conns.pcap"
FIRST_SCREEN = 40  # messages; the capture has 126
LEAN = "layout/?fold=1&part=lean"  # what frontend/static/diagram/api.js asks for first


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def _json(response) -> dict:
    assert response.status_code == 200, _body(response)[:300]
    return json.loads(_body(response))


class Completion:
    """What the layout was when the runner wrote the capture completed (seen through Django's
    own hook on the runner's database statements)."""

    def __init__(self) -> None:
        self.capture_id = None
        self.seen: list[tuple[bool, bool]] = []  # (first screen there, whole layout there)

    def __call__(self, execute, sql, params, many, context):
        if (self.capture_id and sql.startswith('UPDATE "captures_capture"')
                and '"finished"' in sql and Status.COMPLETED in (params or ())):
            capture = Capture.objects.get(id=self.capture_id)
            whole = diagram_cache.variant_dir(capture, True, [], [], "owner")
            self.seen.append((
                diagram_cache.is_fresh(diagram_cache.first_screen_dir(whole),
                                       capture.analysis_file),
                diagram_cache.is_fresh(whole, capture.analysis_file)))
        return execute(sql, params, many, context)


@pytest.fixture
def completion():
    return Completion()


@pytest.fixture
def analysed(service_settings, alice_client, corpus, monkeypatch, completion):
    """An upload of EIGHT_CONNS, run by the runner in this process (its queueing held)."""
    from django.db import connection

    queued = []
    monkeypatch.setattr(actions, "queue", lambda task, capture_id: queued.append(capture_id))
    with override_settings(KVIZ_FIRST_SCREEN_MESSAGES=FIRST_SCREEN):
        answer = alice_client.post("/api/captures/", {"name": "big", "file": SimpleUploadedFile(
            "eight.pcap", (corpus / EIGHT_CONNS).read_bytes())})
        assert answer.status_code == 201, answer.content
        completion.capture_id = capture_id = answer.json()["id"]
        assert [str(queued_id) for queued_id in queued] == [capture_id]
        with connection.execute_wrapper(completion):
            assert runner.run(capture_id, "test:1") == Status.COMPLETED
        yield Capture.objects.get(id=capture_id)


def test_the_capture_is_announced_on_its_first_screen_and_laid_out_whole_after(
        analysed, completion):
    capture = analysed
    whole = diagram_cache.variant_dir(capture, True, [], [], "owner")
    first = diagram_cache.first_screen_dir(whole)
    assert capture.summary["messages"] > FIRST_SCREEN
    # The first screen was there when the capture was written completed; the whole came after.
    assert completion.seen == [(True, False)]
    assert diagram_cache.is_fresh(whole, capture.analysis_file)
    partial = json.loads((first / "head-lean.json").read_text())
    full = json.loads((whole / "head-lean.json").read_text())
    assert partial["first_screen"] == {"messages": capture.summary["messages"]}
    assert "first_screen" not in full
    assert 0 < partial["row_count"] <= FIRST_SCREEN < full["row_count"]
    # The first screen is the whole layout's beginning: the same first rows.
    first_rows = json.loads((first / "rows-0.json").read_text())["rows"]
    whole_rows = json.loads((whole / "rows-0.json").read_text())["rows"][:len(first_rows)]
    assert [(r["message"], r["label"]) for r in first_rows[:10]] == [
        (r["message"], r["label"]) for r in whole_rows[:10]]
    # Its filter lists the connections its rows are on, as the whole layout has them.
    listed = json.loads((first / "connections.json").read_text())["connections"]
    named = {r["connection"] for r in first_rows} - {None}
    assert named and {c["id"] for c in listed} == named
    every = {c["id"]: c for c in json.loads((whole / "connections.json").read_text())[
        "connections"]}
    assert all(every[c["id"]] == c for c in listed)
    assert len(every) > len(listed)


def test_the_page_gets_the_first_screen_while_the_worker_lays_out_the_rest(
        analysed, alice_client):
    capture = analysed
    base = f"/api/captures/{capture.id}/"
    whole, pending = _whole(capture), hold_first_screen(capture)
    assert not diagram_cache.is_fresh(whole, capture.analysis_file)
    try:
        lean = _json(alice_client.get(base + LEAN))
        assert lean["first_screen"] == {"messages": capture.summary["messages"]}
        assert 0 < lean["row_count"] <= FIRST_SCREEN
        # Its own rows and index, named with first=1.
        rows = _json(alice_client.get(base + "layout/rows/0/?fold=1&first=1"))
        assert rows["start"] == 0 and len(rows["rows"]) == lean["row_count"]
        assert alice_client.get(base + "layout/?fold=1&part=index&first=1").status_code == 200

        # Anything else that needs the layout waits for the worker's, and builds none.
        answers: list = []
        waiting = threading.Thread(target=lambda: answers.append(
            _signed_in(alice_client).get(base + "layout/rows/0/?fold=1")))
        waiting.start()
        time.sleep(1.0)
        assert waiting.is_alive() and not answers, "the request did not wait for the worker"
        assert not diagram_cache.is_fresh(whole, capture.analysis_file)
        assert [p.name for p in whole.parent.iterdir() if p.name.startswith(".build-")] == []
    finally:
        pending.finish()
    waiting.join(30)
    assert not waiting.is_alive()
    [answer] = answers
    waited_rows = _json(answer)["rows"]
    full = _json(alice_client.get(base + LEAN))
    assert "first_screen" not in full and full["row_count"] > lean["row_count"]
    assert len(waited_rows) == full["row_count"]  # the whole layout's (one chunk of rows)


def test_a_worker_that_dies_while_laying_out_leaves_the_layout_to_the_web(
        analysed, alice_client):
    capture = analysed
    base = f"/api/captures/{capture.id}/"
    whole, pending = _whole(capture), hold_first_screen(capture)
    assert _json(alice_client.get(base + LEAN))["first_screen"]
    pending.release()  # what the kernel does with the lock of a process that ended
    lean = _json(alice_client.get(base + LEAN))
    assert "first_screen" not in lean and lean["row_count"] > FIRST_SCREEN
    assert diagram_cache.is_fresh(whole, capture.analysis_file)


def test_a_first_screen_that_is_gone_says_so(analysed, alice_client):
    capture = analysed
    base = f"/api/captures/{capture.id}/"
    shutil.rmtree(diagram_cache.first_screen_dir(
        diagram_cache.variant_dir(capture, True, [], [], "owner")))
    answer = alice_client.get(base + "layout/rows/0/?fold=1&first=1")
    assert answer.status_code == 404
    assert "reload the page" in answer.json()["error"]
    # Without first=1: the whole layout, as before.
    assert "first_screen" not in _json(alice_client.get(base + LEAN))


def _whole(capture):
    return diagram_cache.variant_dir(capture, True, [], [], "owner")


def hold_first_screen(capture):
    """Analyse `capture` again and hold its layout as the worker does between announcing it
    and laying it out whole: its first screen written, the layout's lock held."""
    held = []
    with override_settings(KVIZ_FIRST_SCREEN_MESSAGES=FIRST_SCREEN):
        runner.analyse(capture, lambda name, model: held.append(
            diagram_cache.begin_first(capture, model)))
    [pending] = held
    assert pending is not None
    return pending


def _signed_in(client) -> Client:
    other = Client()
    other.cookies = client.cookies
    return other
