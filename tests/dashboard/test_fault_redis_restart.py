"""Redis killed and restarted under a live capture with a viewer on a real WebSocket (daphne,
as deployed): the viewer's socket really breaks, it reconnects and resumes after the last seq
it saw with no gap, and the stored pcap has every packet of the outage.

Everything runs against a redis-server of the test's own on a free loopback port (with a
worker and a daphne of its own pointed at it); the machine's Redis is never touched.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.faults import RedisServer, private_worker, queued_to_broker, syn_times
from tests.support.lab import Traffic
from tests.support.services import WebServer, service_env
from tests.support.viewers import Viewer, session_cookie, try_viewer

from .conftest import wait_for
from .test_lab_capture import detail, start_lab

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def own_stack(test_database_url, data_dir, tmp_path, service_settings, lab):
    missing = RedisServer.missing()
    if missing:
        pytest.skip(missing)
    redis = RedisServer(tmp_path / "redis.log")
    redis.start()
    env = service_env(test_database_url, data_dir, redis_url=redis.url)
    worker = private_worker(env, tmp_path / "worker.log", "redis")
    web = WebServer(worker.env, tmp_path / "daphne.log")
    servers = [redis]
    try:
        worker.start()
        web.start()
        with queued_to_broker(redis.url, worker.env["KVIZ_QUEUE"]):
            yield servers, worker, web
    finally:
        web.stop()
        worker.stop()
        for each in servers:
            each.kill()


def test_a_viewer_socket_breaks_on_a_redis_restart_and_resumes_without_a_gap(
        own_stack, lab, alice_client, tmp_path):
    servers, worker, web = own_stack
    capture_id = start_lab(alice_client, "redis-restart", bpf="tcp port 80")
    ws_url = f"ws://127.0.0.1:{web.port}/ws/captures/{capture_id}/"
    cookie = session_cookie(alice_client)
    origin = web.url
    wait_for(lambda: detail(alice_client, capture_id)["counters"]["bytes"] > 0, 20,
             what=f"the capture to run\n{worker.tail()}")
    traffic = Traffic(lab, interval=0.1)
    traffic.start()
    viewers = [Viewer(ws_url, cookie, origin, 0)]
    viewers[0].start()
    try:
        wait_for(lambda: viewers[0].last_seq() >= 8, 20, what="events before the restart")
        before_kill = traffic.requests
        killed_at = time.monotonic()
        servers[0].kill()
        wait_for(lambda: viewers[0].closed, 15,
                 what=f"the viewer's socket to break\n{web.tail()}")
        time.sleep(1.5)  # packets keep coming; their events wait in the publisher
        fresh = RedisServer(tmp_path / "redis-2.log", port=servers[0].port)
        fresh.start()
        servers.append(fresh)

        # Reconnect as the page does: retry until the server answers, resume after the last.
        seen = viewers[0].last_seq()
        second = wait_for(lambda: try_viewer(ws_url, cookie, origin, seen), 30, interval=0.5,
                          what=f"the viewer to reconnect\n{web.tail()}")
        viewers.append(second)
        second.start()
        wait_for(lambda: second.last_seq(seen) > seen + 10, 30,
                 what=f"events after the restart\n{worker.tail()}\n{web.tail()}")
        during = traffic.requests - before_kill
        traffic.stop()
        time.sleep(1)
        alice_client.post(f"/api/captures/{capture_id}/stop/")
        wait_for(lambda: second.events and second.events[-1]["kind"] == "status"
                 and second.events[-1]["status"] in ("completed", "failed", "interrupted"), 30,
                 what=f"the final status\n{worker.tail()}")
    finally:
        traffic.stop()
        for viewer in viewers:
            viewer.close()

    # 1. The socket really broke, because of the kill (not before it): the server closed it
    #    (1011: its channel layer lost Redis) or the connection dropped.
    code, _reason, when = viewers[0].closed
    assert when >= killed_at, viewers[0].closed
    assert code in (1011, 1006, "error"), viewers[0].closed
    # 2. No gap: the second connection starts right after the last seq the first one saw.
    seqs = [e["seq"] for v in viewers for e in v.events]
    assert seqs == list(range(1, len(seqs) + 1)), f"gap or repeat: {seqs}"
    assert viewers[1].events[-1]["status"] == "completed"
    # 3. The stored pcap is complete: every request, those of the outage too.
    done = detail(alice_client, capture_id)
    stored = tmp_path / "stored.pcapng"
    stored.write_bytes(b"".join(alice_client.get(f"/api/captures/{capture_id}/pcap")
                                .streaming_content))
    assert len(syn_times(stored)) >= traffic.requests > during > 0
    assert done["counters"]["packets"] > 0


def test_a_reconnecting_viewer_gets_the_events_it_lacks_before_newer_ones(
        service_settings, alice_client, users):
    # What the page meets after a Redis restart: the publisher flushes the events it held in a
    # burst, and some reach the new socket before the page has said where to resume. They
    # must not overtake the older events the page lacks (it would skip those as seen).
    from asgiref.sync import sync_to_async

    from captures.jobs.live import LivePublisher
    from captures.models import Capture, Status

    from . import live_client

    capture = Capture.objects.create(
        name="burst", owner=users["alice"], target_kind="upload", target_spec={},
        status=Status.RUNNING, limit_seconds=60, limit_packets=10, limit_bytes=10)
    publisher = LivePublisher(capture.id)
    counters = {"packets": 0, "bytes": 0, "elapsed": 0}
    for _ in range(5):
        publisher.batch([], 0, counters)  # seqs 1-5: the page saw 1-3 before its socket broke
    headers = live_client.session_headers(alice_client)

    async def reconnect():
        viewer = await live_client.connect(f"/ws/captures/{capture.id}/", headers)
        for _ in range(2):  # seqs 6-7 arrive live before the page's resume_after
            await sync_to_async(publisher.batch)([], 0, counters)
        await asyncio.sleep(0.5)
        await viewer.send_json_to({"resume_after": 3})
        events = await live_client.events_until(viewer, lambda e: e["seq"] == 7, 10)
        await viewer.disconnect()

        unasked = await live_client.connect(f"/ws/captures/{capture.id}/", headers)
        await sync_to_async(publisher.batch)([], 0, counters)  # seq 8, and no resume_after
        late = await live_client.events_until(unasked, lambda e: e["seq"] == 8, 10)
        await unasked.disconnect()
        return events, late

    events, late = asyncio.run(reconnect())
    assert [e["seq"] for e in events] == [4, 5, 6, 7]
    assert [e["seq"] for e in late] == [8]  # a client that never says still gets live events
