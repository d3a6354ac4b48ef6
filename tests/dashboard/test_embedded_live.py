"""The embedded default (no Redis): the capture runs in a thread of the web process and its live
events still reach the browser, every seq once, through the in-process store."""

from __future__ import annotations

import threading
import time

import pytest
from asgiref.sync import async_to_sync

from captures.jobs import live
from captures.models import Capture

from .live_client import assert_no_gaps, connect, events_until, is_final, session_headers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def embedded(settings):
    from channels.layers import channel_layers

    settings.REDIS_URL = ""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def test_it_streams_events_published_from_the_runner_thread(embedded, users, client):
    capture = Capture.objects.create(
        name="embedded", owner=users["alice"], target_kind="local",
        target_spec={"interface": "lo"}, limit_seconds=30, limit_packets=100,
        limit_bytes=10**6)
    client.force_login(users["alice"])
    headers = session_headers(client)

    def runner_thread():  # what the runner does, from its own thread
        publisher = live.LivePublisher(capture.id)
        for n in range(5):
            publisher.batch([{"n": n, "info": "row"}], 0, {"packets": n + 1})
            time.sleep(0.05)
        publisher.status("completed", {"packets": 5})

    async def browser():
        communicator = await connect(f"/ws/captures/{capture.id}/", headers)
        await communicator.send_json_to({"resume_after": 0})
        thread = threading.Thread(target=runner_thread)
        thread.start()
        try:
            events = await events_until(communicator, is_final, timeout=10)
        finally:
            thread.join(timeout=10)
            await communicator.disconnect()
        return events

    events = async_to_sync(browser)()
    assert_no_gaps(events)
    assert [e["kind"] for e in events] == ["batch"] * 5 + ["status"]
    assert [e["rows"][0]["n"] for e in events[:5]] == list(range(5))
