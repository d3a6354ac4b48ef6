"""Many captures at once: a capture worker started as scripts/start.sh starts it (a thread
pool on the capture queue) runs several users' captures side by side, an analysis worker on
the analysis queue analyses uploads while captures hold the capture worker, and a capture
worker asked to stop stops every capture it runs."""

from __future__ import annotations

import signal
import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client, override_settings

from captures.access.grants import HOST_GROUP
from captures.models import Capture
from tests.support.lab import Traffic
from tests.support.services import QUEUE, RUN_TAG, Worker

from .conftest import wait_for
from .test_lab_capture import detail, start_lab
from .test_upload import CORPUS_FILE, upload

pytestmark = pytest.mark.django_db(transaction=True)

FINAL = ("completed", "failed", "interrupted")


@pytest.fixture
def stack(worker_env, tmp_path):
    """Start a capture worker (`--pool=threads`) and an analysis worker on queues of their
    own, as start.sh does; this test process queues to them."""
    queue = f"{QUEUE}-conc"
    env = {**worker_env, "KVIZ_QUEUE": queue, "KVIZ_ANALYSIS_QUEUE": f"{queue}-analysis"}
    started: list[Worker] = []

    def start(concurrency: int = 4) -> Worker:
        capture = Worker(env, tmp_path / "capture-worker.log", name=f"{RUN_TAG}-capture",
                         pool="threads", concurrency=concurrency, queues=[queue])
        analysis = Worker(env, tmp_path / "analysis-worker.log", name=f"{RUN_TAG}-analysis",
                          pool="threads", concurrency=2, queues=[f"{queue}-analysis"])
        for each in (capture, analysis):
            each.start()
            started.append(each)
        return capture

    with override_settings(CELERY_TASK_DEFAULT_QUEUE=queue,
                           KVIZ_ANALYSIS_QUEUE=f"{queue}-analysis"):
        try:
            yield start
        finally:
            for each in started:
                each.stop()
            import redis

            redis.Redis.from_url(env["REDIS_URL"]).delete(queue, f"{queue}-analysis")


@pytest.fixture
def engineers(transactional_db):
    """Three users who may capture the lab, each with a client of their own."""
    group = Group.objects.get_or_create(name=HOST_GROUP)[0]
    clients = []
    for name in ("ana", "ben", "cleo"):
        user = get_user_model().objects.create_user(name)
        user.groups.add(group)
        client = Client()
        client.force_login(user)
        clients.append(client)
    return clients


def statuses(clients, ids) -> list[str]:
    return [detail(c, i)["status"] for c, i in zip(clients, ids, strict=True)]


def packets_in_all(clients, ids, at_least: int) -> bool:
    return all(detail(c, i)["counters"]["packets"] >= at_least
               for c, i in zip(clients, ids, strict=True))


def all_running(clients, ids) -> bool:
    # Running means recording: the row says so and the file has its header.
    return all(d["status"] == "running" and d["counters"]["bytes"] > 0
               for d in (detail(c, i) for c, i in zip(clients, ids, strict=True)))


def finished(client, capture_id) -> dict | None:
    found = detail(client, capture_id)
    return found if found["status"] in FINAL else None


def test_three_users_captures_run_at_the_same_time_and_complete(stack, lab, engineers):
    stack(concurrency=4)
    ids = [start_lab(client, f"together-{n}") for n, client in enumerate(engineers)]
    # All three recording at once: with one capture at a time the others stay queued.
    wait_for(lambda: all_running(engineers, ids), 30, what="three captures running at once")
    traffic = Traffic(lab)
    traffic.start()
    try:
        wait_for(lambda: packets_in_all(engineers, ids, 10), 20, what="packets in all three")
    finally:
        traffic.stop()
    assert statuses(engineers, ids) == ["running"] * 3
    for client, capture_id in zip(engineers, ids, strict=True):
        assert client.post(f"/api/captures/{capture_id}/stop/").status_code in (200, 202)
    done = [wait_for(lambda c=c, i=i: finished(c, i), 30, what="the capture to finish")
            for c, i in zip(engineers, ids, strict=True)]
    for found in done:
        assert found["status"] == "completed", found
        assert found["counters"]["packets"] >= 10 and found["analysis"]
    workers = {Capture.objects.get(id=i).worker_id for i in ids}
    assert len(workers) == 1 and next(iter(workers)).startswith(f"{RUN_TAG}-capture@")
    starts = sorted(Capture.objects.get(id=i).started for i in ids)
    assert (starts[-1] - starts[0]).total_seconds() < 10


def test_an_upload_is_analysed_while_a_long_capture_holds_the_capture_worker(
        stack, lab, engineers, corpus):
    stack(concurrency=1)  # one capture at a time: the upload must not wait behind it
    client = engineers[0]
    capture_id = start_lab(client, "long")
    wait_for(lambda: all_running([client], [capture_id]), 30, what="the long capture to run")
    response = upload(engineers[1], corpus / CORPUS_FILE, name="while-capturing")
    assert response.status_code == 201, response.content
    upload_id = response.json()["id"]
    try:
        analysed = wait_for(lambda: finished(engineers[1], upload_id), 30,
                            what="the upload's analysis")
        assert analysed["status"] == "completed", analysed
        assert analysed["counters"]["packets"] > 0
        assert detail(client, capture_id)["status"] == "running"
    finally:
        client.post(f"/api/captures/{capture_id}/stop/")
    assert wait_for(lambda: finished(client, capture_id), 30)["status"] == "completed"


def test_a_worker_stopping_stops_all_its_captures(stack, lab, engineers, tmp_path):
    capture_worker = stack(concurrency=4)
    ids = [start_lab(client, f"shutdown-{n}") for n, client in enumerate(engineers)]
    wait_for(lambda: all_running(engineers, ids), 30, what="three captures running at once")
    traffic = Traffic(lab)
    traffic.start()
    try:
        wait_for(lambda: packets_in_all(engineers, ids, 5), 20, what="packets in all three")
        asked = time.monotonic()
        capture_worker.process.send_signal(signal.SIGTERM)
        capture_worker.process.wait(20)
        took = time.monotonic() - asked
    finally:
        traffic.stop()
    for client, capture_id in zip(engineers, ids, strict=True):
        found = detail(client, capture_id)
        assert found["status"] == "completed", found
        assert found["counters"]["packets"] >= 5 and found["analysis"]
        assert any("its worker is shutting down" in line for line in found["log"])
        pcap = b"".join(client.get(f"/api/captures/{capture_id}/pcap").streaming_content)
        assert len(pcap) == found["counters"]["bytes"] > 0
    assert took < 10, f"the worker took {took:.1f} s to stop its three captures"
