"""Viewers always receive the final status of their capture, whatever ended it: here the ends
no runner can announce (its worker killed, so the reaper ends it; stopped while still queued,
so no runner ever ran). The runner's own ends (completed, failed, disk full, the database
lost) are announced by the runner: see test_fault_disk_full and test_fault_database."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from tests.support.faults import private_worker, queued_to
from tests.support.lab import Traffic
from tests.support.services import service_env

from . import live_client
from .conftest import wait_for
from .test_lab_capture import detail, start_lab

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def own_worker(test_database_url, data_dir, tmp_path, service_settings):
    worker = private_worker(service_env(test_database_url, data_dir), tmp_path / "worker.log",
                            "viewers")
    with queued_to(worker.env["KVIZ_QUEUE"]):
        yield worker
    worker.kill()


def test_a_viewer_hears_that_a_killed_workers_capture_was_interrupted(
        own_worker, lab, alice_client):
    own_worker.start()
    capture_id = start_lab(alice_client, "viewer-killed")
    headers = live_client.session_headers(alice_client)
    traffic = Traffic(lab, interval=0.1)

    async def scenario():
        viewer = await live_client.connect(f"/ws/captures/{capture_id}/", headers)
        await viewer.send_json_to({"resume_after": 0})
        await sync_to_async(wait_for)(
            lambda: detail(alice_client, capture_id)["counters"]["packets"] >= 5, 20,
            what=f"packets\n{own_worker.tail()}")
        own_worker.kill()  # SIGKILL: the runner says nothing more
        assert own_worker.process.returncode == -9
        # Someone looks at the capture list (the reaper runs there) after the heartbeat
        # timeout; the viewer must hear the end without asking.
        await asyncio.sleep(0.5)
        poll = sync_to_async(lambda: alice_client.get("/api/captures/"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await poll()
            if (await sync_to_async(detail)(alice_client, capture_id))["status"] == "interrupted":
                break
            await asyncio.sleep(0.5)
        events = await live_client.events_until(viewer, live_client.is_final, 10)
        await viewer.disconnect()
        return events

    traffic.start()
    try:
        events = asyncio.run(scenario())
    finally:
        traffic.stop()
    final = events[-1]
    done = detail(alice_client, capture_id)
    assert done["status"] == "interrupted"
    assert final["status"] == "interrupted"
    assert final["error"] == done["error"] and "its worker went silent" in final["error"]
    live_client.assert_no_gaps(events)


def test_a_viewer_hears_that_a_queued_capture_was_stopped_before_it_started(
        own_worker, alice_client):
    # No worker takes this queue: the capture stays queued until it is stopped.
    capture_id = start_lab(alice_client, "viewer-queued")
    headers = live_client.session_headers(alice_client)

    async def scenario():
        viewer = await live_client.connect(f"/ws/captures/{capture_id}/", headers)
        await viewer.send_json_to({"resume_after": 0})
        answer = await sync_to_async(alice_client.post)(f"/api/captures/{capture_id}/stop/")
        assert answer.status_code == 202, answer.content
        events = await live_client.events_until(viewer, live_client.is_final, 10)
        await viewer.disconnect()
        return events

    events = asyncio.run(scenario())
    assert events[-1]["status"] == "failed"
    assert events[-1]["error"] == "stopped before it started"
