"""Live captures in the network-namespace lab: streamed, resumable, stoppable, and surviving
a worker killed mid-capture."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async

from captures.analysis import CaptureFile, analyze_files
from tests.support.lab import Traffic

from . import live_client
from .conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

POD = "pod/default/ubuntu"


def start_lab(client, name: str, bpf: str = "tcp port 80 or udp port 53") -> str:
    # Filter or not, the capture is dumpcap in the pod's namespace, started by
    # captures.sources.lab.start_capture.
    response = client.post("/api/captures/", {"name": name, "target": {"kind": "lab",
                           "target": POD}, "filter": bpf}, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def detail(client, capture_id) -> dict:
    return client.get(f"/api/captures/{capture_id}/").json()


def wait_running(client, capture_id) -> None:
    wait_for(lambda: detail(client, capture_id)["counters"]["bytes"] > 0, 20,
             what="the lab capture to run")


def downloaded_packets(client, capture_id, tmp_path) -> dict:
    path = tmp_path / f"{capture_id}.pcapng"
    path.write_bytes(b"".join(client.get(f"/api/captures/{capture_id}/pcap").streaming_content))
    return analyze_files([CaptureFile(path)]).to_dict()["capture"]


def test_it_streams_a_lab_pod_capture_and_stops_on_request(worker, lab, alice_client, tmp_path):
    capture_id = start_lab(alice_client, "lab-pod")
    headers = live_client.session_headers(alice_client)
    traffic = Traffic(lab)

    async def scenario():
        communicator = await live_client.connect(f"/ws/captures/{capture_id}/", headers)
        await communicator.send_json_to({"resume_after": 0})
        await sync_to_async(wait_running)(alice_client, capture_id)
        traffic.start()
        first = await sync_to_async(wait_for)(
            lambda: detail(alice_client, capture_id)["counters"]["packets"], 15,
            what="packets")
        await asyncio.sleep(1.5)
        later = await sync_to_async(detail)(alice_client, capture_id)
        traffic.stop()
        stopped_at = time.monotonic()
        await sync_to_async(alice_client.post)(f"/api/captures/{capture_id}/stop/")
        events = await live_client.events_until(communicator, live_client.is_final, 15)
        took = time.monotonic() - stopped_at
        await communicator.disconnect()
        return first, later["counters"]["packets"], events, took

    try:
        first, later, events, took = asyncio.run(scenario())
    finally:
        traffic.stop()
    assert later > first > 0, "the counters did not rise"
    live_client.assert_no_gaps(events)
    assert events[-1]["status"] == "completed", events[-1]
    assert took < 5
    batches = [e for e in events if e["kind"] == "batch"]
    assert len(batches) >= 3
    assert [e["counters"]["packets"] for e in batches] == sorted(
        e["counters"]["packets"] for e in batches)
    rows = [row for batch in batches for row in batch["rows"]]
    assert any(row["proto"] == "dns" for row in rows)
    assert any(row["dst"].endswith(":80") and "SYN" in row["info"] for row in rows)

    final = detail(alice_client, capture_id)
    assert final["status"] == "completed"
    stored = downloaded_packets(alice_client, capture_id, tmp_path)
    assert stored["packets"] == final["counters"]["packets"] >= len(rows)
    analysis = json.loads(b"".join(alice_client.get(f"/api/captures/{capture_id}/analysis")
                                   .streaming_content))
    names = {p["name"] for p in analysis["participants"]}
    assert "ubuntu" in names, "the lab's inventory did not name the pods"


def test_a_reconnecting_client_resumes_without_a_gap(worker, lab, alice_client):
    capture_id = start_lab(alice_client, "lab-resume", bpf="")
    headers = live_client.session_headers(alice_client)
    traffic = Traffic(lab, interval=0.1)

    async def scenario():
        wait = sync_to_async(wait_running)
        await wait(alice_client, capture_id)
        traffic.start()
        first = await live_client.connect(f"/ws/captures/{capture_id}/", headers)
        await first.send_json_to({"resume_after": 0})
        seen = await live_client.events_until(first, lambda e: e["seq"] >= 6, 15)
        await first.disconnect()
        await asyncio.sleep(1.5)  # events published while no one listens
        second = await live_client.connect(f"/ws/captures/{capture_id}/", headers)
        await second.send_json_to({"resume_after": seen[-1]["seq"]})
        await sync_to_async(traffic.stop)()
        await sync_to_async(alice_client.post)(f"/api/captures/{capture_id}/stop/")
        rest = await live_client.events_until(second, live_client.is_final, 15)
        await second.disconnect()
        return seen, rest

    try:
        seen, rest = asyncio.run(scenario())
    finally:
        traffic.stop()
    live_client.assert_no_gaps(seen)
    live_client.assert_no_gaps(rest, start=seen[-1]["seq"] + 1)
    assert len(rest) > 3, "nothing was published while the client was away"


def test_a_killed_worker_leaves_an_interrupted_capture_with_its_packets(
        worker, lab, alice_client, tmp_path):
    # 1. The heartbeat path: the worker dies and stays dead; the capture goes silent.
    silent = start_lab(alice_client, "lab-killed")
    wait_running(alice_client, silent)
    traffic = Traffic(lab)
    traffic.start()
    try:
        wait_for(lambda: detail(alice_client, silent)["counters"]["packets"] >= 10, 15,
                 what="packets before the kill")
        worker.kill()
        time.sleep(0.5)
    finally:
        traffic.stop()
    reaped = wait_for(lambda: (d := detail(alice_client, silent))["status"] == "interrupted"
                      and d, 15, interval=0.5, what="the silent capture to be interrupted")
    assert "interrupted" in reaped["error"]
    stored = downloaded_packets(alice_client, silent, tmp_path)
    assert stored["packets"] >= 10

    # 2. The restart path: a worker that starts again gives up what it was running.
    worker.start()
    restarted = start_lab(alice_client, "lab-restart")
    wait_running(alice_client, restarted)
    worker.kill()
    worker.start()
    assert detail(alice_client, restarted)["status"] == "interrupted"

    # Both captures' stored packets are analysed by the worker after the fact.
    for capture_id in (silent, restarted):
        wait_for(lambda cid=capture_id: detail(alice_client, cid)["analysis"], 20,
                 what="the interrupted capture's analysis")
        analysis = json.loads(b"".join(alice_client.get(f"/api/captures/{capture_id}/analysis")
                                       .streaming_content))
        assert analysis["schema"] == "kviz.sequence/1"
    assert detail(alice_client, silent)["counters"]["packets"] == stored["packets"]
