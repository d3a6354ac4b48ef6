"""An idle viewer stays connected: a socket that gets no event for longer than the channel
layer's blocking read (channels_redis waits up to 5 s per read) is not dropped. With redis-py
8's default 5 s socket timeout, every such read raced the socket's own timeout and the socket
closed with 1011 about every 5 s on any quiet or finished capture."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from captures.jobs.live import LivePublisher
from captures.models import Capture, Status

from . import live_client

pytestmark = pytest.mark.django_db(transaction=True)

IDLE = 16  # seconds: three of channels_redis' 5 s blocking reads


def test_an_idle_viewer_of_a_finished_capture_stays_connected(service_settings, alice_client,
                                                             users):
    assert "RedisChannelLayer" in settings.CHANNEL_LAYERS["default"]["BACKEND"]
    capture = Capture.objects.create(
        name="quiet", owner=users["alice"], target_kind="upload", target_spec={},
        status=Status.COMPLETED, limit_seconds=1, limit_packets=1, limit_bytes=1)
    headers = live_client.session_headers(alice_client)

    async def viewer():
        communicator = await live_client.connect(f"/ws/captures/{capture.id}/", headers)
        await communicator.send_json_to({"resume_after": 0})
        while not await communicator.receive_nothing(timeout=1.0):  # what it replays
            await communicator.receive_output(timeout=1)
        quiet = await communicator.receive_nothing(timeout=IDLE, interval=0.5)
        # Still subscribed after the idle time: an event published now reaches it.
        await sync_to_async(LivePublisher(capture.id).status)(
            Status.COMPLETED, {"packets": 0, "bytes": 0, "elapsed": 0})
        answer = await communicator.receive_output(timeout=10)
        await communicator.disconnect()
        return quiet, answer

    quiet, answer = asyncio.run(viewer())
    assert quiet, "the idle socket received something (a close) while nothing happened"
    assert answer["type"] == "websocket.send", answer
    assert '"status": "completed"' in answer["text"] or '"status":"completed"' in answer["text"]
