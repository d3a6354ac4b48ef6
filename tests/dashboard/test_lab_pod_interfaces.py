"""A lab pod capture started through the API records every interface of the pod, lo included,
and names them: with the client's sidecar on, its application's requests to the proxy
(127.0.0.1:15001, on lo) are in the live rows and in the analysis, and nothing says lo was
missed."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async

from captures.lab import scenarios

from . import live_client
from .conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

POD = "pod/default/ubuntu"
REQUESTS = 4


def detail(client, capture_id) -> dict:
    return client.get(f"/api/captures/{capture_id}/").json()


def requests_through_the_sidecar(lab) -> None:
    for _ in range(REQUESTS):
        code = scenarios.curl(lab, "-o", "/dev/null", "-w", "%{http_code}")
        assert code == "200", code


def test_a_lab_pod_capture_records_lo_and_names_its_interfaces(worker, lab, alice_client):
    lab.set_sidecar(True, fresh=True)
    try:
        # The filter is compiled for what the lab records at a pod: Linux cooked v2.
        response = alice_client.post("/api/captures/", {
            "name": "lab-pod-lo", "target": {"kind": "lab", "target": POD},
            "filter": "tcp or udp port 53"}, content_type="application/json")
        assert response.status_code == 201, response.content
        capture_id = response.json()["id"]
        headers = live_client.session_headers(alice_client)

        async def scenario():
            communicator = await live_client.connect(f"/ws/captures/{capture_id}/", headers)
            await communicator.send_json_to({"resume_after": 0})
            await sync_to_async(wait_for)(
                lambda: detail(alice_client, capture_id)["counters"]["bytes"] > 0, 20,
                what="the lab capture to run")
            await sync_to_async(requests_through_the_sidecar)(lab)
            await sync_to_async(wait_for)(
                lambda: detail(alice_client, capture_id)["counters"]["packets"] >= 20, 15,
                what="the requests' packets")
            await sync_to_async(alice_client.post)(f"/api/captures/{capture_id}/stop/")
            events = await live_client.events_until(communicator, live_client.is_final, 20)
            await communicator.disconnect()
            return events

        events = asyncio.run(scenario())
    finally:
        lab.set_sidecar(False)

    assert events[-1]["status"] == "completed", events[-1]
    rows = [row for e in events if e["kind"] == "batch" for row in e["rows"]]
    assert any(row["info"].startswith("lo ") and row["dst"].endswith(":15001") for row in rows)
    assert any(row["info"].startswith("eth0 ") for row in rows)

    wait_for(lambda: detail(alice_client, capture_id)["analysis"], 30, what="the analysis")
    analysis = json.loads(b"".join(
        alice_client.get(f"/api/captures/{capture_id}/analysis").streaming_content))
    [taken] = analysis["capture"]["files"]
    assert (taken["vantage"], taken["linktypes"]) == (POD, ["linux-sll2"])
    interfaces = {hop["interface"] for m in analysis["messages"] for hop in m["hops"]}
    assert {"lo", "eth0"} <= interfaces
    assert not [name for name in interfaces if name.startswith("if")], interfaces
    redirects = [a for a in analysis["annotations"] if a["kind"] == "sidecar"
                 and a["direction"] == "outbound" and a["port"] == 15001]
    assert len(redirects) >= REQUESTS // 2
    assert not [a for a in analysis["annotations"] if a["kind"] == "capture_missed_loopback"]
