"""A live capture on this host's loopback, filtered to the test's own UDP port."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from asgiref.sync import sync_to_async

from captures.analysis import CaptureFile, analyze_files
from captures.models import Capture

from . import live_client
from .conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def send_datagrams(port: int, count: int, spread: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for index in range(count):
            sender.sendto(f"kviz test {index}".encode(), ("127.0.0.1", port))
            time.sleep(spread / count)


def start_local(client, name, port, **limits):
    body = {"name": name, "target": {"kind": "local", "interface": "lo"},
            "filter": f"udp and dst port {port}"}
    if limits:
        body["limits"] = limits
    response = client.post("/api/captures/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def detail(client, capture_id) -> dict:
    return client.get(f"/api/captures/{capture_id}/").json()


def test_it_captures_streams_and_stops_on_request(worker, alice_client, tmp_path):
    port = free_udp_port()
    capture_id = start_local(alice_client, "loopback", port)
    headers = live_client.session_headers(alice_client)

    async def scenario():
        communicator = await live_client.connect(f"/ws/captures/{capture_id}/", headers)
        await communicator.send_json_to({"resume_after": 0})
        # Running means dumpcap is capturing (its header is on disk, bytes > 0).
        await sync_to_async(wait_for)(
            lambda: detail(alice_client, capture_id)["counters"]["bytes"] > 0, 15,
            what="the capture to run")
        await sync_to_async(send_datagrams)(port, 40, 1.5)
        counters = await sync_to_async(wait_for)(
            lambda: (c := detail(alice_client, capture_id)["counters"])["packets"] >= 40 and c,
            10, what="the counters to reach 40 packets")
        growing = await sync_to_async(alice_client.get)(f"/api/captures/{capture_id}/pcap")
        partial = b"".join(growing.streaming_content)
        assert len(partial) == int(growing["Content-Length"]) > 0
        (tmp_path / "growing.pcapng").write_bytes(partial)
        stopped_at = time.monotonic()
        stop = await sync_to_async(alice_client.post)(f"/api/captures/{capture_id}/stop/")
        assert stop.status_code == 202
        events = await live_client.events_until(communicator, live_client.is_final, 15)
        await communicator.disconnect()
        return counters, events, time.monotonic() - stopped_at

    counters, events, stop_took = asyncio.run(scenario())
    assert counters["packets"] == 40 and counters["bytes"] > 0
    live_client.assert_no_gaps(events)
    assert events[-1]["status"] == "completed", events[-1]
    assert stop_took < 5
    rows = [row for e in events if e["kind"] == "batch" for row in e["rows"]]
    assert [row["n"] for row in rows] == list(range(1, 41))
    assert all(row["proto"] == "udp" and row["dst"] == f"127.0.0.1:{port}" for row in rows)
    batches = [e for e in events if e["kind"] == "batch"]
    assert len(batches) >= 2 and all(b["thinned"] == 0 for b in batches)

    final = detail(alice_client, capture_id)
    assert final["status"] == "completed" and final["counters"]["packets"] == 40
    pcap = tmp_path / "loopback.pcapng"
    pcap.write_bytes(b"".join(alice_client.get(f"/api/captures/{capture_id}/pcap")
                              .streaming_content))
    assert analyze_files([CaptureFile(pcap)]).to_dict()["capture"]["packets"] == 40
    # A download taken while the capture ran is a readable capture of what was stored then.
    assert analyze_files([CaptureFile(tmp_path / "growing.pcapng")]).to_dict()[
        "capture"]["packets"] == 40
    analysis = json.loads(b"".join(alice_client.get(f"/api/captures/{capture_id}/analysis")
                                   .streaming_content))
    assert analysis["capture"]["packets"] == 40


def test_it_stops_by_itself_at_the_packet_limit(worker, alice_client):
    port = free_udp_port()
    capture_id = start_local(alice_client, "limited", port, packets=10)
    wait_for(lambda: detail(alice_client, capture_id)["counters"]["bytes"] > 0, 15,
             what="the capture to run")
    send_datagrams(port, 30, 1.0)
    final = wait_for(lambda: (d := detail(alice_client, capture_id))["status"] == "completed"
                     and d, 10, what="the capture to end at its limit")
    assert final["counters"]["packets"] == 10  # dumpcap -c: exact for local captures
    assert any("packet limit" in line for line in Capture.objects.get(id=capture_id).log)


def test_the_live_view_is_refused_to_others_and_redacted_for_redacted_links(
        worker, alice_client, client, users):
    port = free_udp_port()
    capture_id = start_local(alice_client, "shared", port, packets=5)
    wait_for(lambda: detail(alice_client, capture_id)["counters"]["bytes"] > 0, 15,
             what="the capture to run")
    send_datagrams(port, 5, 0.2)
    wait_for(lambda: detail(alice_client, capture_id)["status"] == "completed", 10,
             what="the capture to end")
    shared = alice_client.post(f"/api/captures/{capture_id}/share/", {"redacted": True},
                               content_type="application/json").json()
    token = shared["token"]
    client.force_login(users["bob"])
    bob = live_client.session_headers(client)
    anonymous = live_client.SAME_ORIGIN
    alice_from_elsewhere = [*live_client.session_headers(alice_client)[:2],
                            (b"origin", b"http://evil.example")]

    async def scenario():
        from channels.testing import WebsocketCommunicator

        from kviz.asgi import application

        for path, headers in ((f"/ws/captures/{capture_id}/", bob),
                              (f"/ws/captures/{capture_id}/", anonymous),
                              (f"/ws/captures/{capture_id}/", alice_from_elsewhere),
                              ("/ws/share/not-a-token/", anonymous)):
            refused = WebsocketCommunicator(application, path, headers=headers)
            connected, _ = await refused.connect(timeout=10)
            assert not connected, path
        viewer = await live_client.connect(f"/ws/share/{token}/", anonymous)
        await viewer.send_json_to({"resume_after": 0})
        events = await live_client.events_until(viewer, live_client.is_final, 10)
        await viewer.disconnect()
        return events

    events = asyncio.run(scenario())
    live_client.assert_no_gaps(events)
    batches = [e for e in events if e["kind"] == "batch"]
    assert batches and all(b["rows"] == [] and b["redacted"] for b in batches)
    assert events[-1]["status"] == "completed"


def test_it_lists_targets(alice_client):
    targets = alice_client.get("/api/targets/").json()["targets"]
    assert {"kind": "local", "interface": "lo"} in targets
    assert {"kind": "upload"} in targets
