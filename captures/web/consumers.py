"""WebSocket consumers: authenticate in connect(), then forward a capture's live events.

`ws/captures/<id>/` for a signed-in user who may see the capture (owner or staff);
`ws/share/<token>/` for whoever holds a valid share token (a redacted link gets no packets).

A client may send `{"resume_after": N}` (N = the last seq it saw, 0 for everything kept): the
consumer replays the stored events after N, then forwards live ones. It tracks the last seq it
sent, drops duplicates and, should the channel layer have dropped an event (a slow consumer's
channel is capped), fetches the gap from the store, so the client sees every seq exactly once.
The only I/O in handlers is that store read; there is no database work after connect().

Without Redis (the embedded default) the capture runs in another thread of this process, whose
in-memory channel layer cannot wake a consumer waiting in the server's event loop; there the
consumer reads the in-process store a few times a second instead.
"""

from __future__ import annotations

import asyncio
import contextlib

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from captures.jobs import live
from captures.models import Capture

CLOSE_FORBIDDEN = 4403


@database_sync_to_async
def _capture_for_user(capture_id, user):
    capture = Capture.objects.filter(id=capture_id).only("id", "owner_id", "status").first()
    return capture if capture and capture.visible_to(user) else None


@database_sync_to_async
def _capture_for_share(token):
    from captures.jobs import actions

    link = actions.find_share(token)
    return (link.capture, link.redacted) if link else (None, False)


class _LiveConsumer(AsyncJsonWebsocketConsumer):
    redacted = False

    async def _start(self, capture) -> None:
        if capture is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.capture_id = str(capture.id)
        self.group = live.group_name(self.capture_id)
        self.store = live.store()
        self.last_seq: int | None = None  # None until the client or a live event sets it
        self.first_seq = 0  # the first event forwarded live, before any resume_after
        # Join before answering: an event published from now on reaches us, and anything
        # earlier is in the store for resume_after.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"kind": "hello", "capture": self.capture_id,
                              "status": capture.status, "redacted": self.redacted})
        if isinstance(self.store, live.MemoryStore):
            self.poller = asyncio.get_running_loop().create_task(self._poll())

    POLL_SECONDS = 0.1

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.POLL_SECONDS)
            if self.last_seq is not None:
                await self._replay()

    async def disconnect(self, code) -> None:
        poller = getattr(self, "poller", None)
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        after = content.get("resume_after") if isinstance(content, dict) else None
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            await self.send_json({"kind": "error", "error": "send {\"resume_after\": <seq>}"})
            return
        if self.last_seq is None:
            self.last_seq = after
            await self._replay()
        elif after + 1 < self.first_seq:
            # Live events came first: send the older ones the client lacks, once each.
            older = [e for e in await self.store.after(self.capture_id, after)
                     if e["seq"] < self.first_seq]
            self.first_seq = after + 1
            for event in older:
                await self.send_json(self._shown(event))

    async def _replay(self) -> None:
        for event in await self.store.after(self.capture_id, self.last_seq):
            await self._forward(event)

    async def capture_event(self, message) -> None:
        event = message["event"]
        if self.last_seq is not None and event["seq"] > self.last_seq + 1:
            await self._replay()  # the layer lost something: the store has it
        await self._forward(event)

    async def _forward(self, event) -> None:
        if self.last_seq is not None and event["seq"] <= self.last_seq:
            return
        if self.last_seq is None:
            self.first_seq = event["seq"]
        self.last_seq = event["seq"]
        await self.send_json(self._shown(event))

    def _shown(self, event: dict) -> dict:
        if self.redacted and event.get("kind") == "batch":
            return {**event, "rows": [], "redacted": True}
        return event


class CaptureConsumer(_LiveConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        capture_id = self.scope["url_route"]["kwargs"]["capture_id"]
        await self._start(await _capture_for_user(capture_id, user))


class ShareConsumer(_LiveConsumer):
    async def connect(self) -> None:
        capture, self.redacted = await _capture_for_share(
            self.scope["url_route"]["kwargs"]["token"])
        await self._start(capture)
