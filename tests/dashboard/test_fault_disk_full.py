"""The data directory's disk fills up while a live capture runs with a viewer attached: the
capture stops as `failed` with "disk full" (no traceback), what reached the disk is kept and
analysed, the viewer hears the end, the next capture fails with the same words, an upload is
answered 507 in JSON, and the web goes on.

The full disk is real: a small tmpfs mounted for this test only (unmounted whatever happens),
filled by the test until the kernel answers ENOSPC.
"""

from __future__ import annotations

import asyncio
import errno

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from tests.support.faults import fill, private_worker, queued_to, small_disk, tiny_pcap
from tests.support.lab import Traffic
from tests.support.services import service_env

from . import live_client
from .conftest import wait_for
from .test_lab_capture import detail, start_lab

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def full_disk_stack(test_database_url, data_dir, tmp_path, service_settings, lab):
    with small_disk("8m") as disk:
        (disk / "lab").symlink_to(data_dir / "lab")  # the suite's lab, found where it looks
        env = service_env(test_database_url, disk)
        worker = private_worker(env, tmp_path / "worker.log", "disk")
        worker.start()
        try:
            with queued_to(worker.env["KVIZ_QUEUE"]), override_settings(DATA_DIR=disk):
                yield disk, worker
        finally:
            worker.stop()


def test_a_full_disk_fails_the_capture_clearly_and_keeps_what_was_stored(
        full_disk_stack, lab, alice_client, tmp_path):
    disk, worker = full_disk_stack
    capture_id = start_lab(alice_client, "disk-full")
    headers = live_client.session_headers(alice_client)
    traffic = Traffic(lab, interval=0.1)
    refused = []

    async def scenario():
        viewer = await live_client.connect(f"/ws/captures/{capture_id}/", headers)
        await viewer.send_json_to({"resume_after": 0})
        await sync_to_async(wait_for)(
            lambda: detail(alice_client, capture_id)["counters"]["bytes"] > 0, 20,
            what=f"the capture to run\n{worker.tail()}")
        traffic.start()
        await sync_to_async(wait_for)(
            lambda: detail(alice_client, capture_id)["counters"]["packets"] >= 10, 20,
            what="packets before the disk fills up")
        refused.append(fill(disk))
        events = await live_client.events_until(viewer, live_client.is_final, 30)
        await viewer.disconnect()
        return events

    try:
        events = asyncio.run(scenario())
    finally:
        traffic.stop()

    # 1. The disk was really full, and the worker met it.
    assert refused[0].errno == errno.ENOSPC
    assert "No space left on device" in worker.log_path.read_text(errors="replace"), \
        worker.tail()

    # 2. The capture failed, saying why in a sentence; the viewer heard it.
    done = detail(alice_client, capture_id)
    assert done["status"] == "failed", done
    assert done["error"].startswith("disk full: no space left on device"), done["error"]
    assert "Traceback" not in done["error"] and "/" not in done["error"]
    assert any(line.endswith("stopping: disk full") for line in done["log"]), done["log"]
    assert events[-1]["status"] == "failed" and events[-1]["error"] == done["error"]
    live_client.assert_no_gaps(events)

    # 3. What reached the disk is kept, downloadable and analysed.
    assert done["counters"]["packets"] >= 10
    assert done["analysis"], "the partial capture was not analysed"
    pcap = b"".join(alice_client.get(f"/api/captures/{capture_id}/pcap").streaming_content)
    assert len(pcap) > 1000
    analysis = alice_client.get(f"/api/captures/{capture_id}/analysis")
    assert analysis.status_code == 200

    # 4. The disk is still full (the analysis used the room kept for it): the next capture
    #    fails at once with the same words, not a traceback.
    assert fill(disk, "filler-2").errno == errno.ENOSPC
    second = start_lab(alice_client, "disk-full-next")
    failed = wait_for(lambda: (d := detail(alice_client, second))["status"] == "failed" and d,
                      20, what=f"the next capture to fail\n{worker.tail()}")
    assert failed["error"].startswith("disk full: no space left on device"), failed["error"]

    # 5. An upload is refused with 507, in JSON; nothing of it is kept.
    answer = alice_client.post("/api/captures/", {
        "name": "upload-full", "file": SimpleUploadedFile("one.pcap", tiny_pcap())})
    assert answer.status_code == 507, answer.content
    assert answer["Content-Type"].startswith("application/json")
    assert answer.json()["error"].startswith("disk full")

    # 6. The web goes on.
    listed = alice_client.get("/api/captures/")
    assert listed.status_code == 200
    assert {c["id"] for c in listed.json()["captures"]} >= {capture_id, second}
