"""PostgreSQL out of reach for 10 s while a live capture runs with a viewer attached: the
capture goes on recording (every request made meanwhile is in the pcap), its progress is
written when the database is back, it completes as it would have, and the viewer sees every
event and the final status.

The outage is real but local: the worker reaches PostgreSQL through a loopback TCP proxy that
the test cuts (open connections reset, new ones reset at accept) and restores; the test
asserts that the proxy really refused the worker and that psycopg said so in the worker.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlparse, urlunparse

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from captures.models import Capture
from tests.support.faults import TcpProxy, private_worker, queued_to, syn_times
from tests.support.lab import Traffic
from tests.support.services import service_env

from . import live_client
from .conftest import wait_for
from .test_lab_capture import detail, start_lab

pytestmark = pytest.mark.django_db(transaction=True)

OUTAGE = 10.0
PSYCOPG_SAYS = ("server closed the connection", "connection refused", "consuming input failed",
                "connection failed", "connection is lost", "connection reset")


def _row(capture_id) -> dict:
    # Straight from the database, never through the API: the API's reaper would judge the
    # worker's heartbeat, which the outage holds back.
    return Capture.objects.filter(id=capture_id).values("status", "packets", "bytes", "log").first()


@pytest.fixture
def cut_off_worker(test_database_url, data_dir, tmp_path, service_settings):
    url = urlparse(test_database_url)
    proxy = TcpProxy((url.hostname, url.port or 5432))
    proxy.start()
    through_proxy = urlunparse(url._replace(netloc=f"{url.username}@127.0.0.1:{proxy.port}"))
    env = service_env(through_proxy, data_dir, KVIZ_DB_CONNECT_TIMEOUT="2")
    worker = private_worker(env, tmp_path / "worker.log", "db")
    worker.start()
    try:
        with queued_to(worker.env["KVIZ_QUEUE"]):
            yield proxy, worker
    finally:
        worker.stop()
        proxy.stop()


@override_settings(KVIZ_HEARTBEAT_TIMEOUT=60)  # longer than the outage (docs/deploy.md)
def test_it_records_through_a_database_outage_and_writes_its_state_when_it_is_back(
        cut_off_worker, lab, alice_client, tmp_path):
    proxy, worker = cut_off_worker
    capture_id = start_lab(alice_client, "db-outage", bpf="tcp port 80")
    headers = live_client.session_headers(alice_client)
    traffic = Traffic(lab, interval=0.1)
    times = {}

    async def scenario():
        viewer = await live_client.connect(f"/ws/captures/{capture_id}/", headers)
        await viewer.send_json_to({"resume_after": 0})
        rows = sync_to_async(_row)
        # Bytes (the file's header) once the source records, not merely `running`.
        await sync_to_async(wait_for)(lambda: _row(capture_id)["bytes"] > 0, 20,
                                      what=f"the capture to record\n{worker.tail()}")
        traffic.start()
        await sync_to_async(wait_for)(lambda: _row(capture_id)["packets"] >= 10, 20,
                                      what="packets before the outage")
        times["cut"], times["requests_at_cut"] = time.time(), traffic.requests
        proxy.cut()
        await asyncio.sleep(OUTAGE / 2)
        times["frozen"] = (await rows(capture_id))["packets"]
        await asyncio.sleep(OUTAGE / 2)
        times["restore"], times["requests_at_restore"] = time.time(), traffic.requests
        times["still_frozen"] = (await rows(capture_id))["packets"]
        proxy.restore()
        await sync_to_async(wait_for)(
            lambda: _row(capture_id)["packets"] > times["still_frozen"], 15,
            what=f"progress written after the outage\n{worker.tail()}")
        await asyncio.sleep(2)
        await sync_to_async(traffic.stop)()
        times["requests"] = traffic.requests
        await asyncio.sleep(1)  # the last request's packets reach the file
        await sync_to_async(alice_client.post)(f"/api/captures/{capture_id}/stop/")
        events = await live_client.events_until(viewer, live_client.is_final, 30)
        await viewer.disconnect()
        return events

    try:
        events = asyncio.run(scenario())
    finally:
        traffic.stop()

    # 1. The fault happened: the proxy reset the worker's connections, psycopg said so.
    assert proxy.resets + proxy.refused >= 1 and proxy.refused >= 1, (
        f"the proxy cut {proxy.resets} and refused {proxy.refused} connections")
    worker_log = worker.log_path.read_text(errors="replace")
    assert "the database cannot be reached" in worker_log, worker.tail()
    assert "the database is back after" in worker_log, worker.tail()
    # The row stood still while the worker could not write it.
    assert times["still_frozen"] == times["frozen"]

    # 2. The capture went on and completed as if nothing happened; its log says what did.
    done = detail(alice_client, capture_id)
    assert done["status"] == "completed", done
    assert done["error"] == ""
    outage = [line for line in done["log"] if "the database could not be reached for" in line
              and "recording went on" in line]
    assert outage, done["log"]
    # In psycopg's own words (kept in the line): the server went away, or refused.
    assert any(words in outage[0].lower() for words in PSYCOPG_SAYS), outage[0]
    live_client.assert_no_gaps(events)
    assert events[-1]["status"] == "completed"

    # 3. Nothing was lost: every request made during the outage is in the pcap.
    stored = tmp_path / "stored.pcapng"
    stored.write_bytes(b"".join(alice_client.get(f"/api/captures/{capture_id}/pcap")
                                .streaming_content))
    syns = syn_times(stored)
    during = [t for t in syns if times["cut"] <= t <= times["restore"]]
    made = times["requests_at_restore"] - times["requests_at_cut"]
    assert made >= 10, f"only {made} requests during the outage"
    # (A request in flight at the cut may have sent its SYN just before it.)
    assert len(during) >= made - 1, f"{len(during)} SYNs in the outage, {made} requests made"
    assert len(syns) >= times["requests"], f"{len(syns)} SYNs for {times['requests']} requests"
    assert done["counters"]["packets"] > times["still_frozen"]


def test_a_worker_cut_off_longer_than_the_heartbeat_timeout_says_so(
        cut_off_worker, lab, alice_client):
    # A partition: the web still reaches the database, the worker does not. After the
    # heartbeat timeout (4 s here) the reaper takes the worker for dead; once the worker is
    # back it finds its capture interrupted and says why, instead of "went silent".
    proxy, worker = cut_off_worker
    capture_id = start_lab(alice_client, "db-partition", bpf="tcp port 80")
    headers = live_client.session_headers(alice_client)

    async def scenario():
        viewer = await live_client.connect(f"/ws/captures/{capture_id}/", headers)
        await viewer.send_json_to({"resume_after": 0})
        await sync_to_async(wait_for)(lambda: _row(capture_id)["bytes"] > 0, 20,
                                      what=f"the capture to record\n{worker.tail()}")
        proxy.cut()
        reaped = await sync_to_async(wait_for)(
            lambda: (d := detail(alice_client, capture_id))["status"] == "interrupted" and d,
            15, interval=0.5, what="the reaper to interrupt the silent capture")
        proxy.restore()
        events = await live_client.events_until(
            viewer, lambda e: live_client.is_final(e) and "database" in e["error"], 20)
        await viewer.disconnect()
        return reaped, events

    reaped, events = asyncio.run(scenario())
    assert proxy.refused >= 1 or proxy.resets >= 1
    assert "went silent" in reaped["error"]
    said = wait_for(lambda: "database" in (d := detail(alice_client, capture_id))["error"] and d,
                    15, what=f"the worker to say why\n{worker.tail()}")
    assert said["status"] == "interrupted"
    assert said["error"].startswith("interrupted: its worker could not reach the database for")
    assert events[-1]["error"] == said["error"]
