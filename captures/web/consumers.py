"""WebSocket consumers: authenticate in connect(), then forward a capture's live events.

`ws/captures/<id>/` for a signed-in user who may see the capture (owner or staff);
`ws/share/<token>/` for whoever holds a valid share token (a redacted link gets no packets).

A client may send `{"resume_after": N}` (N = the last seq it saw, 0 for everything kept): the
consumer replays the stored events after N, then forwards live ones. It tracks the last seq it
sent, drops duplicates and, should the channel layer have dropped an event (a slow consumer's
channel is capped), fetches the gap from the store, so the client sees every seq exactly once.
The only I/O in handlers is that store read, and for a share socket a look at its link.

Live events that arrive before the client has said where to resume are not forwarded: a page
that reconnects after an outage (a restarted Redis) meets a burst of held events at once, and
forwarding the newest before the older ones it lacks made it skip those as already seen. They
are in the store (an event is stored before it is sent), so the replay after N brings them in
order. A client that never sends resume_after gets them from the first one it missed after
RESUME_WAIT seconds.

A share socket lasts only as long as its link: revoking a link tells the link's group
(`share.<link id>`, captures.jobs.live.share_revoked) and its open sockets close at once with
CLOSE_GONE; a timer closes it when the link expires; and, should that message be lost, the
socket looks at its link again before forwarding an event when it last looked more than
KVIZ_SHARE_RECHECK_SECONDS ago. After the close nothing more is sent.

Without Redis (the embedded default) the capture runs in another thread of this process, whose
in-memory channel layer cannot wake a consumer waiting in the server's event loop; there the
in-process store wakes the consumer (live.MemoryStore.subscribe) when it has new events. Either
way an idle socket costs no work: nothing polls.

Share sockets are the ones anybody with a link may open, so they are counted: at most
KVIZ_SHARE_SOCKETS_PER_LINK per link and KVIZ_SHARE_SOCKETS_PER_ADDRESS per client address
(slots shared by all web processes, captures.access.limits); beyond them the handshake is
refused with CLOSE_BUSY. A socket's slots are leases it renews while open, so a killed web
process' sockets stop counting after SOCKET_LEASE seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import SimpleNamespace

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from captures.access import limits
from captures.access.throttle import client_address
from captures.jobs import live
from captures.models import Capture, ShareLink
from captures.web import redaction

CLOSE_FORBIDDEN = 4403  # the handshake: no such capture for this user, or no valid link
CLOSE_GONE = 4410  # an open share socket: its link was revoked or has expired
CLOSE_BUSY = 4429  # the handshake: the link or the client address has its most sockets open
SOCKET_LEASE = 600.0  # seconds; renewed at half of it
RESUME_WAIT = 2.0  # seconds a socket waits for the client's resume_after before going live


@database_sync_to_async
def _capture_for_user(capture_id, user):
    capture = Capture.objects.filter(id=capture_id).only("id", "owner_id", "status").first()
    return capture if capture and capture.visible_to(user) else None


@database_sync_to_async
def _share_for(token):
    from captures.jobs import actions

    return actions.find_share(token)


@database_sync_to_async
def _link_valid(link_id) -> bool:
    link = ShareLink.objects.filter(id=link_id).only("revoked", "expires").first()
    return bool(link and link.is_valid())


class _LiveConsumer(AsyncJsonWebsocketConsumer):
    view = redaction.OWNER  # what this socket may see (captures.web.redaction)

    async def _start(self, capture) -> None:
        if capture is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.capture_id = str(capture.id)
        self.group = live.group_name(self.capture_id)
        self.store = live.store()
        self.last_seq: int | None = None  # None until the client says (or RESUME_WAIT)
        self.first_seq = 0  # the first event forwarded live, before any resume_after
        self.first_held: int | None = None  # the first live event held for resume_after
        # Join before answering: an event published from now on reaches us, and anything
        # earlier is in the store for resume_after.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json(self._shown({"kind": "hello", "capture": self.capture_id,
                                          "status": capture.status,
                                          "redacted": self.view == redaction.REDACTED}))
        if isinstance(self.store, live.MemoryStore):
            self.wakeup = self.store.subscribe(self.capture_id)
            self.poller = asyncio.get_running_loop().create_task(self._follow_memory())
        self.waiter = asyncio.get_running_loop().create_task(self._go_live_unasked())

    async def _go_live_unasked(self) -> None:
        """A client that has not sent resume_after within RESUME_WAIT gets the live events
        from the first one held for it."""
        await asyncio.sleep(RESUME_WAIT)
        if self.last_seq is None and self.first_held is not None:
            self.first_seq, self.last_seq = self.first_held, self.first_held - 1
            await self._replay()

    async def _follow_memory(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()  # before reading: an append from now on wakes us again
            if self.last_seq is not None:
                await self._replay()

    async def disconnect(self, code) -> None:
        waiter = getattr(self, "waiter", None)
        if waiter is not None:
            waiter.cancel()
        poller = getattr(self, "poller", None)
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            self.store.unsubscribe(self.capture_id, self.wakeup)
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
                if not await self._allowed():
                    return
                await self.send_json(self._shown(event))

    async def _replay(self) -> None:
        for event in await self.store.after(self.capture_id, self.last_seq):
            await self._forward(event)

    async def capture_event(self, message) -> None:
        event = message["event"]
        if self.last_seq is None:  # held: the replay after resume_after brings it in order
            if self.first_held is None or event["seq"] < self.first_held:
                self.first_held = event["seq"]
            return
        if event["seq"] > self.last_seq + 1:
            await self._replay()  # the layer lost something: the store has it
        await self._forward(event)

    async def _forward(self, event) -> None:
        if self.last_seq is not None and event["seq"] <= self.last_seq:
            return
        if not await self._allowed():
            return
        if self.last_seq is None:
            self.first_seq = event["seq"]
        self.last_seq = event["seq"]
        await self.send_json(self._shown(event))

    def _shown(self, event: dict) -> dict:
        return redaction.live_event(event, self.view)

    async def _allowed(self) -> bool:
        """Whether events may still be sent (a share socket's link may have gone)."""
        return True


class CaptureConsumer(_LiveConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        capture_id = self.scope["url_route"]["kwargs"]["capture_id"]
        await self._start(await _capture_for_user(capture_id, user))


def _scope_address(scope) -> str:
    headers = dict(scope.get("headers") or ())
    return client_address(SimpleNamespace(META={
        "REMOTE_ADDR": str((scope.get("client") or ("",))[0]),
        "HTTP_X_FORWARDED_FOR": headers.get(b"x-forwarded-for", b"").decode("latin-1")}))


class ShareConsumer(_LiveConsumer):
    view = redaction.REDACTED  # until the link says otherwise
    gone = False
    slots: tuple = ()  # (name, limit) of each slot this socket holds

    async def connect(self) -> None:
        link = await _share_for(self.scope["url_route"]["kwargs"]["token"])
        if link is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.link_id, self.expires, self.view = link.id, link.expires, redaction.view_of(link)
        caps = [(f"ws:link:{link.token_hash[:32]}", settings.KVIZ_SHARE_SOCKETS_PER_LINK),
                (f"ws:address:{_scope_address(self.scope)}",
                 settings.KVIZ_SHARE_SOCKETS_PER_ADDRESS)]
        if not await sync_to_async(self._take_slots, thread_sensitive=False)(caps):
            await self.close(code=CLOSE_BUSY)
            return
        # Join the link's group first, then look again: a revoke committed after that look
        # reaches us as a message, one committed before it is seen by the look.
        self.share_group = live.share_group(link.id)
        await self.channel_layer.group_add(self.share_group, self.channel_name)
        if not await _link_valid(link.id):
            await sync_to_async(self._give_back_slots, thread_sensitive=False)()
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.checked = time.monotonic()
        await self._start(link.capture)
        self.keeper = asyncio.get_running_loop().create_task(self._keep())

    def _take_slots(self, caps) -> bool:
        """Take (or renew) this socket's slot under each cap; none when one is full."""
        for name, limit in caps:
            if not limits.take_slot(name, self.channel_name, limit, SOCKET_LEASE):
                self._give_back_slots()
                return False
            self.slots = (*self.slots, (name, limit))
        return True

    def _give_back_slots(self) -> None:
        for name, _limit in self.slots:
            limits.give_back_slot(name, self.channel_name)
        self.slots = ()

    async def _keep(self) -> None:
        """Renew the socket's slots while it is open; close it when its link expires."""
        while True:
            left = (self.expires - timezone.now()).total_seconds()
            if left <= 0:
                await self._gone("expired")
                return
            await asyncio.sleep(min(left, SOCKET_LEASE / 2))
            if left > SOCKET_LEASE / 2:
                caps, self.slots = self.slots, ()
                await sync_to_async(self._take_slots, thread_sensitive=False)(caps)

    async def share_revoked(self, message) -> None:
        await self._gone("revoked")

    async def _gone(self, reason: str) -> None:
        if not self.gone:
            self.gone = True
            await self.close(code=CLOSE_GONE, reason=f"the share link was {reason}")

    async def _allowed(self) -> bool:
        if self.gone:
            return False
        if timezone.now() >= self.expires:
            await self._gone("expired")
        elif time.monotonic() - self.checked >= settings.KVIZ_SHARE_RECHECK_SECONDS:
            self.checked = time.monotonic()
            if not await _link_valid(self.link_id):
                await self._gone("revoked")
        return not self.gone

    async def disconnect(self, code) -> None:
        keeper = getattr(self, "keeper", None)
        if keeper is not None:
            keeper.cancel()
        if self.slots:
            await sync_to_async(self._give_back_slots, thread_sensitive=False)()
        if getattr(self, "share_group", None):
            await self.channel_layer.group_discard(self.share_group, self.channel_name)
        await super().disconnect(code)
