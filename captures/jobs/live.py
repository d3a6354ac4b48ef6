"""Live events of a running capture: numbered, kept for replay, sent to the capture's group.

Every event has `seq` (1, 2, 3, ... per capture) and `kind`:
- `batch`: `rows` (one per packet: n, t, src, dst, proto, len, info), `thinned` (packets left
  out of this batch so a browser keeps up; the stored pcap has them all), `counters`;
- `status`: `status`, `counters`, `error` (on every status change, and at the end).

Why a replay store: a browser that reconnects says `{"resume_after": seq}` and must get every
event after it, with no gap. The channel layer forgets (and drops messages for slow consumers),
so each event is first appended to a capped Redis stream `kviz:live:<id>` (KVIZ_LIVE_PREFIX)
whose entry ids are
`<seq>-1`, then sent to the group `capture.<id>`. Without Redis (the embedded default) the
store is an in-process dict, which works because captures then run in the web process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

log = logging.getLogger(__name__)

STREAM_TTL = 24 * 3600  # replay stays available for a day after the capture ends


def group_name(capture_id) -> str:
    return f"capture.{capture_id}"


def stream_key(capture_id) -> str:
    return f"{settings.KVIZ_LIVE_PREFIX}{capture_id}"


def share_group(link_id) -> str:
    """The open WebSockets of one share link (captures.web.consumers.ShareConsumer)."""
    return f"share.{link_id}"


def share_revoked(link_ids) -> None:
    """Tell the open sockets of these links that they were revoked: they close at once. A lost
    message only delays it: a socket looks at its link again before forwarding an event."""
    layer = get_channel_layer()
    if layer is None:
        return
    for link_id in link_ids:
        try:
            async_to_sync(layer.group_send)(share_group(link_id), {"type": "share.revoked"})
        except Exception:  # the revoke itself is committed; sockets will see it on their own
            log.warning("could not tell the sockets of share link %s", link_id, exc_info=True)


class RedisStore:
    def __init__(self, url: str):
        self.url = url
        self._sync = None

    def _client(self):
        if self._sync is None:
            import redis

            self._sync = redis.Redis.from_url(self.url)
        return self._sync

    def append(self, capture_id, event: dict) -> None:
        key = stream_key(capture_id)
        client = self._client()
        client.xadd(key, {"e": json.dumps(event)}, id=f"{event['seq']}-1",
                    maxlen=settings.KVIZ_LIVE_RETAIN, approximate=True)
        client.expire(key, STREAM_TTL)

    def last_seq(self, capture_id) -> int:
        entries = self._client().xrevrange(stream_key(capture_id), count=1)
        return int(entries[0][0].split(b"-")[0]) if entries else 0

    def exists(self, capture_id) -> bool:
        return bool(self._client().exists(stream_key(capture_id)))

    def clear(self, capture_id) -> None:
        self._client().delete(stream_key(capture_id))

    async def after(self, capture_id, seq: int) -> list[dict]:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(self.url)
        try:
            entries = await client.xrange(stream_key(capture_id), min=f"{seq + 1}-0")
        finally:
            await client.aclose()
        return [json.loads(fields[b"e"]) for _id, fields in entries]


class MemoryStore:
    """The embedded store. The runner appends from its own thread, whose channel layer cannot
    reach a consumer in the server's event loop; so a consumer subscribes an asyncio.Event
    that append() sets in the consumer's loop. An idle socket waits on it and costs nothing."""

    KEEP_CAPTURES = 50  # the embedded default forgets the oldest captures' events beyond this

    def __init__(self):
        self.lock = threading.Lock()
        self.events: dict[str, deque] = {}
        self.waiting: dict[str, dict[asyncio.Event, asyncio.AbstractEventLoop]] = {}

    def append(self, capture_id, event: dict) -> None:
        with self.lock:
            kept = self.events.setdefault(str(capture_id),
                                          deque(maxlen=settings.KVIZ_LIVE_RETAIN))
            kept.append(event)
            while len(self.events) > self.KEEP_CAPTURES:
                del self.events[next(iter(self.events))]
            waiting = list(self.waiting.get(str(capture_id), {}).items())
        for wakeup, loop in waiting:
            with contextlib.suppress(RuntimeError):  # its loop has closed: it is gone
                loop.call_soon_threadsafe(wakeup.set)

    def subscribe(self, capture_id) -> asyncio.Event:
        """An event set (in the calling loop) whenever an event of the capture is appended."""
        wakeup = asyncio.Event()
        with self.lock:
            self.waiting.setdefault(str(capture_id), {})[wakeup] = asyncio.get_running_loop()
        return wakeup

    def unsubscribe(self, capture_id, wakeup: asyncio.Event) -> None:
        with self.lock:
            waiting = self.waiting.get(str(capture_id), {})
            waiting.pop(wakeup, None)
            if not waiting:
                self.waiting.pop(str(capture_id), None)

    def last_seq(self, capture_id) -> int:
        with self.lock:
            kept = self.events.get(str(capture_id))
            return kept[-1]["seq"] if kept else 0

    def exists(self, capture_id) -> bool:
        with self.lock:
            return str(capture_id) in self.events

    def clear(self, capture_id) -> None:
        with self.lock:
            self.events.pop(str(capture_id), None)

    async def after(self, capture_id, seq: int) -> list[dict]:
        with self.lock:
            return [e for e in self.events.get(str(capture_id), ()) if e["seq"] > seq]


_memory = MemoryStore()


def store():
    return RedisStore(settings.REDIS_URL) if settings.REDIS_URL else _memory


class LivePublisher:
    """Numbers, keeps and sends one capture's events. Used from the runner's (sync) thread.

    Redis may go away mid-capture (restarted, failed over). The capture must not fail for it
    and reconnecting browsers must still see every seq, so: an event that cannot be stored is
    held and stored, in order, before the next one; and a stream that vanished (a Redis that
    came back empty) gets the recent events it lost again before new ones are added.
    """

    RECENT = 300  # events kept in memory to refill a lost stream (30 s at the full rate)
    FINAL_FLUSH_SECONDS = 15.0

    def __init__(self, capture_id):
        self.capture_id = capture_id
        self.store = store()
        # A fresh run starts at 1; a rerun (never expected) continues after what is stored.
        self.seq = self.store.last_seq(capture_id)
        self.layer = get_channel_layer()
        self.unsent: deque = deque()
        self.recent: deque = deque(maxlen=self.RECENT)

    def _flush(self) -> None:
        if self.recent and not self.store.exists(self.capture_id):
            log.warning("live events of %s were lost by the store; storing the last %d again",
                        self.capture_id, len(self.recent))
            for event in self.recent:
                self.store.append(self.capture_id, event)
        while self.unsent:
            event = self.unsent[0]
            last = self.store.last_seq(self.capture_id)
            if event["seq"] <= last:
                # Someone else numbered an event of this capture meanwhile (the reaper's final
                # status for a runner it took for dead): ours follow theirs.
                for number, held in enumerate(self.unsent, start=last + 1):
                    held["seq"] = number
                self.seq = self.unsent[-1]["seq"]
            self.store.append(self.capture_id, event)  # stored first: replay never misses one
            self.unsent.popleft()
            self.recent.append(event)
            if self.layer is not None:
                # A full or broken layer must not stop a capture: consumers fill gaps from
                # the store.
                with contextlib.suppress(Exception):
                    async_to_sync(self.layer.group_send)(
                        group_name(self.capture_id), {"type": "capture.event", "event": event})

    def _publish(self, kind: str, payload: dict, wait: float = 0.0) -> dict:
        self.seq += 1
        event = {"seq": self.seq, "kind": kind, **payload}
        self.unsent.append(event)
        deadline = time.monotonic() + wait
        while True:
            try:
                self._flush()
                break
            except Exception as exc:  # the store is down: keep the events, try next time
                if time.monotonic() >= deadline:
                    log.warning("live events of %s held (%d): %s", self.capture_id,
                                len(self.unsent), exc)
                    break
                time.sleep(0.5)
        return event

    def batch(self, rows: list[dict], thinned: int, counters: dict) -> dict:
        return self._publish("batch", {"rows": rows, "thinned": thinned, "counters": counters})

    def status(self, status: str, counters: dict, error: str = "",
               wait: float | None = None) -> dict:
        # The last event of a run has no later one to carry it: wait a while for the store.
        final = status in FINAL
        if wait is None:
            wait = self.FINAL_FLUSH_SECONDS if final else 0.0
        return self._publish("status", {"status": status, "counters": counters, "error": error},
                             wait=wait)


FINAL = ("completed", "failed", "interrupted")


def announce_final(capture, wait: float = 0.0) -> None:
    """Tell a capture's viewers how it ended when its runner cannot (it died, or it never
    started). Never raises: the row is what counts, and a viewer that reconnects reads it."""
    try:
        counters = {"packets": capture.packets, "bytes": capture.bytes,
                    "elapsed": round(capture.elapsed or 0.0, 2)}
        LivePublisher(capture.id).status(capture.status, counters, capture.error, wait=wait)
    except Exception:
        log.warning("could not announce the end of capture %s", capture.id, exc_info=True)


def thin(rows: list[dict], keep: int) -> tuple[list[dict], int]:
    """At most `keep` rows, spread evenly over the batch; returns (rows, how many left out)."""
    if len(rows) <= keep:
        return rows, 0
    step = len(rows) / keep
    return [rows[int(i * step)] for i in range(keep)], len(rows) - keep
