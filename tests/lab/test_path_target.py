"""A `path` target in a two-node lab, run by the capture runner as a worker runs it: the client
pod, its node, each backend pod and the other node recorded at once, one file each, stopped
together and analysed as one path. The traffic is the path scenario's own (captures.lab.path):
the client calls the Service until both backends, one per node, answered."""

from __future__ import annotations

import json
import threading
import time

import pytest

from captures.lab import Lab
from captures.lab import path as lab_path
from tests.lab.conftest import lab_unavailable_reason, test_prefix

pytestmark = pytest.mark.django_db(transaction=True)

TARGET = {"kind": "path", "from": "pod/default/ubuntu", "to": "service/default/nginx",
          "where": "lab"}


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    lab = Lab(test_prefix("p"), tmp_path_factory.mktemp("path-target") / "lab")
    try:
        lab.up(sidecar_enabled=False, nodes=2)
        yield lab
    finally:
        lab.down()


@pytest.fixture
def lab_settings(settings, two_nodes):
    settings.KVIZ_LAB_PREFIX = two_nodes.prefix
    settings.DATA_DIR = two_nodes.state_dir.parent.parent  # <DATA_DIR>/lab/<prefix>
    return settings


@pytest.fixture
def staff(transactional_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("ops", is_staff=True)


def wait_until(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def place(hop: dict) -> str:
    return hop["interface"].split(":")[0]  # "<vantage>:<interface>" in a capture of several


def test_a_lab_path_records_every_place_at_once_and_shows_each_request_end_to_end(
        lab_settings, two_nodes, staff):
    from captures.jobs import actions, runner
    from captures.models import Capture, Status, StoredFile
    from captures.sources import base as sources

    plan = two_nodes.plan
    node_1, node_2 = (f"node/{node.name}" for node in plan.nodes)
    target = sources.resolve_target(TARGET, staff)
    assert [(p["role"], p["vantage"]) for p in target.spec["parts"]] == [
        ("client pod", "pod/default/ubuntu"), ("client node", node_1),
        ("backend pod", "pod/default/nginx-a"), ("backend pod", "pod/default/nginx-b"),
        ("backend node", node_2)]
    capture = Capture.objects.create(name="lab-path", owner=staff, target_kind="path",
                                     target_spec=target.spec, limit_seconds=120,
                                     limit_packets=100_000, limit_bytes=10**8)
    outcome = []
    running = threading.Thread(target=lambda: outcome.append(runner.run(capture.id, "test:1")))
    running.start()
    try:
        wait_until(lambda: StoredFile.objects.filter(capture=capture).count() == 5, 30,
                   "every part to record")
        time.sleep(0.5)  # dumpcap has opened its interfaces (the file exists once it has)
        truth: dict = {}
        lab_path.drive(two_nodes, truth)
        time.sleep(0.5)  # the last FIN/ACK reaches every place
    finally:
        actions.stop_capture(capture)
        running.join(60)
    assert outcome == [Status.COMPLETED]

    capture.refresh_from_db()
    files = capture.stored_files()
    assert sorted(f.vantage for f in files) == sorted(p["vantage"] for p in target.spec["parts"])
    assert [f.position for f in files] == list(range(5))
    assert all(f.packets > 0 for f in files), [(f.vantage, f.packets) for f in files]
    assert capture.packets == sum(f.packets for f in files)
    document = json.loads(capture.analysis_file.read_text())
    assert len(document["capture"]["files"]) == 5

    served = [r for r in truth["requests"] if r["kind"] == "cluster-ip" and r["served_by"]]
    assert {r["served_by"] for r in served} == {"nginx-a", "nginx-b"}
    for request in served:
        client = request["from"]["socket"]
        syn = next(m for m in document["messages"] if m["src"] == client
                   and m.get("flags") == "S")
        places = list(dict.fromkeys(place(h) for h in syn["hops"]))
        backend = f"pod/default/{request['served_by']}"
        # In path order: the client pod, its node (the DNAT), the other node when the backend
        # runs there (across the overlay), the backend pod.
        expected = ["pod/default/ubuntu", node_1] + (
            [node_2] if request["crossed_overlay"] else []) + [backend]
        assert places == expected, (request["served_by"], places)
        endpoint = request["backend_endpoint"]
        assert syn["hops"][-1]["dst"] == endpoint  # the backend saw its own address
