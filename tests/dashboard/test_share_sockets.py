"""Share WebSockets: an open one lasts only as long as its link (revoked or expired, it closes
within a second or two with 4410 and sends nothing more), and there are at most so many per link
and per client address. Real Redis channel layer; the capture's events come from the runner's
own publisher (captures.jobs.live.LivePublisher), in a thread."""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.utils import timezone

from captures.access.tokens import new_token, token_hash
from captures.jobs import live
from captures.models import Capture, ShareLink
from captures.web.consumers import CLOSE_BUSY, CLOSE_FORBIDDEN, CLOSE_GONE

from . import live_client
from .test_embedded_live import embedded  # noqa: F401 - a fixture, found by name

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def streaming(service_settings, users):
    """A running capture whose publisher sends a one-row batch every 50 ms (for at most 30 s)."""
    capture = Capture.objects.create(
        name="streaming", owner=users["alice"], target_kind="local",
        target_spec={"interface": "lo"}, status="running", limit_seconds=60,
        limit_packets=10**6, limit_bytes=10**9)
    stop = threading.Event()

    def publish():
        publisher = live.LivePublisher(capture.id)
        for n in range(1, 600):
            if stop.wait(0.05):
                return
            publisher.batch([{"n": n, "src": "10.0.0.1:1", "dst": "10.0.0.2:2",
                              "proto": "udp", "len": 60, "info": "row", "t": n}], 0,
                            {"packets": n})

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    yield capture
    stop.set()
    thread.join(timeout=5)


def link(capture, user, expires_in: float) -> str:
    token = new_token()
    ShareLink.objects.create(capture=capture, token_hash=token_hash(token), created_by=user,
                             expires=timezone.now() + datetime.timedelta(seconds=expires_in))
    return token


async def rows_seen(communicator, count: int = 3) -> None:
    """Wait until the socket has forwarded `count` batches with rows."""
    await communicator.send_json_to({"resume_after": 0})
    seen = 0
    while seen < count:
        event = await communicator.receive_json_from(timeout=5)
        seen += event["kind"] == "batch" and bool(event["rows"])


async def until_closed(communicator, timeout: float) -> tuple[dict, float]:
    """(the close message, when it came); fails if the socket is still open after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the socket was still open {timeout}s later"
        try:
            output = await communicator.receive_output(timeout=left)
        except TimeoutError:
            continue
        if output["type"] == "websocket.close":
            return output, time.monotonic()
        assert json.loads(output["text"])["kind"] in ("batch", "status")


async def nothing_after(communicator) -> None:
    # The publisher goes on: a socket still subscribed would receive its rows.
    assert await communicator.receive_nothing(timeout=1.0)
    await communicator.disconnect()  # what the browser's side sends after a close


async def refused(path: str) -> None:
    from channels.testing import WebsocketCommunicator

    from kviz.asgi import application

    again = WebsocketCommunicator(application, path, headers=live_client.SAME_ORIGIN)
    connected, code = await again.connect(timeout=10)
    await again.disconnect()
    assert not connected and code == CLOSE_FORBIDDEN


def test_it_closes_an_open_share_socket_at_once_when_the_link_is_revoked(
        streaming, alice_client):
    token = alice_client.post(f"/api/captures/{streaming.id}/share/", {},
                              content_type="application/json").json()["token"]

    async def scenario():
        viewer = await live_client.connect(f"/ws/share/{token}/", live_client.SAME_ORIGIN)
        await rows_seen(viewer)
        revoke = await sync_to_async(alice_client.delete)(
            f"/api/captures/{streaming.id}/share/{token}/")
        assert revoke.status_code == 200
        revoked_at = time.monotonic()
        closed, closed_at = await until_closed(viewer, 5)
        await nothing_after(viewer)
        await refused(f"/ws/share/{token}/")
        return closed, closed_at - revoked_at

    closed, took = async_to_sync(scenario)()
    assert closed["code"] == CLOSE_GONE and "revoked" in closed["reason"]
    assert took < 1.5, f"closed {took:.2f}s after the revoke"


def test_it_closes_an_open_share_socket_when_its_link_expires(streaming, users):
    token = link(streaming, users["alice"], expires_in=2.5)
    expires = ShareLink.objects.get(token_hash=token_hash(token)).expires

    async def scenario():
        viewer = await live_client.connect(f"/ws/share/{token}/", live_client.SAME_ORIGIN)
        await rows_seen(viewer)
        closed, _ = await until_closed(viewer, 6)
        late = (timezone.now() - expires).total_seconds()
        await nothing_after(viewer)
        return closed, late

    closed, late = async_to_sync(scenario)()
    assert closed["code"] == CLOSE_GONE and "expired" in closed["reason"]
    assert 0 <= late < 1.5, f"closed {late:.2f}s after the link expired"


def test_a_revoke_whose_message_is_lost_still_closes_the_socket(streaming, users, settings):
    settings.KVIZ_SHARE_RECHECK_SECONDS = 1
    token = link(streaming, users["alice"], expires_in=3600)

    async def scenario():
        viewer = await live_client.connect(f"/ws/share/{token}/", live_client.SAME_ORIGIN)
        await rows_seen(viewer)
        # Revoked behind the action's back: no message to the link's group.
        await sync_to_async(ShareLink.objects.filter(token_hash=token_hash(token)).update)(
            revoked=True)
        revoked_at = time.monotonic()
        closed, closed_at = await until_closed(viewer, 5)
        await nothing_after(viewer)
        return closed, closed_at - revoked_at

    closed, took = async_to_sync(scenario)()
    assert closed["code"] == CLOSE_GONE
    assert took < 2.5


async def open_socket(token: str, address: str):
    """(communicator, accepted, close code) for a share socket from `address`."""
    from channels.testing import WebsocketCommunicator

    from kviz.asgi import application

    communicator = WebsocketCommunicator(application, f"/ws/share/{token}/",
                                         headers=live_client.SAME_ORIGIN)
    communicator.scope["client"] = (address, 40000)
    accepted, code = await communicator.connect(timeout=10)
    return communicator, accepted, code


def test_share_sockets_are_capped_per_link_and_per_address(service_settings, users, settings):
    settings.KVIZ_SHARE_SOCKETS_PER_LINK = 3
    settings.KVIZ_SHARE_SOCKETS_PER_ADDRESS = 5
    capture = Capture.objects.create(
        name="watched", owner=users["alice"], target_kind="local",
        target_spec={"interface": "lo"}, status="running", limit_seconds=60,
        limit_packets=100, limit_bytes=10**6)
    first, second = (link(capture, users["alice"], 3600) for _ in range(2))

    async def scenario():
        # Ten handshakes at once on one link: exactly three are let in.
        opened = await asyncio.gather(*(open_socket(first, "192.0.2.1") for _ in range(10)))
        accepted = [c for c, ok, _code in opened if ok]
        codes = sorted(code for _c, ok, code in opened if not ok)
        assert len(accepted) == 3 and codes == [CLOSE_BUSY] * 7
        for communicator, ok, _code in opened:
            if not ok:
                await communicator.disconnect()
        # The same address on another link: two more, then its own cap.
        more = [await open_socket(second, "192.0.2.1") for _ in range(3)]
        assert [ok for _c, ok, _code in more] == [True, True, False]
        assert more[2][2] == CLOSE_BUSY
        await more[2][0].disconnect()
        elsewhere = await open_socket(second, "198.51.100.7")
        assert elsewhere[1]
        # A closed socket gives its place back.
        await accepted[0].disconnect()
        again = await open_socket(first, "198.51.100.7")
        assert again[1]
        for communicator in [*accepted[1:], *(c for c, ok, _ in more if ok), elsewhere[0],
                             again[0]]:
            await communicator.disconnect()

    async_to_sync(scenario)()


@pytest.mark.usefixtures("embedded")
def test_idle_sockets_do_no_work_until_an_event_comes(users, monkeypatch):
    """Embedded mode (no Redis), where the store once was polled ten times a second per socket:
    an idle socket now reads nothing, and an event still reaches every socket at once."""
    capture = Capture.objects.create(
        name="idle", owner=users["alice"], target_kind="local",
        target_spec={"interface": "lo"}, status="running", limit_seconds=60,
        limit_packets=100, limit_bytes=10**6)
    token = link(capture, users["alice"], 3600)
    reads = []
    after = live.MemoryStore.after

    async def counted(self, capture_id, seq):
        reads.append(seq)
        return await after(self, capture_id, seq)

    monkeypatch.setattr(live.MemoryStore, "after", counted)

    def publish():
        live.LivePublisher(capture.id).batch([{"n": 1, "info": "row"}], 0, {"packets": 1})

    async def scenario():
        sockets = []
        for index in range(20):
            communicator, accepted, _code = await open_socket(token, f"192.0.2.{index}")
            assert accepted
            assert (await communicator.receive_json_from(timeout=5))["kind"] == "hello"
            await communicator.send_json_to({"resume_after": 0})
            sockets.append(communicator)
        await asyncio.sleep(0.3)
        idle_from = len(reads)
        await asyncio.sleep(1.5)
        idle_reads = len(reads) - idle_from
        thread = threading.Thread(target=publish)
        thread.start()
        thread.join(timeout=10)
        events = [await communicator.receive_json_from(timeout=2) for communicator in sockets]
        for communicator in sockets:
            await communicator.disconnect()
        return idle_reads, events

    idle_reads, events = async_to_sync(scenario)()
    assert idle_reads == 0
    assert [e["seq"] for e in events] == [1] * 20 and all(e["kind"] == "batch" for e in events)
