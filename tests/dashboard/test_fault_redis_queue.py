"""Queued captures survive a Redis restart. The broker holds the queue; a Redis that comes
back empty has lost it, so a worker queues again every capture still `queued` each time it
connects to the broker (at start, and when it reconnects after the broker went away). And
where kviz starts Redis itself, Redis persists (append-only file) so a restart loses nothing.

Each test runs a redis-server of its own on a free loopback port, never the machine's.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import yaml

from tests.support.faults import RedisServer, private_worker, queued_to_broker
from tests.support.services import ROOT, service_env

from .conftest import wait_for
from .test_lab_capture import POD, detail

pytestmark = pytest.mark.django_db(transaction=True)


def _start(client, name: str, seconds: int | None = None) -> str:
    body = {"name": name, "target": {"kind": "lab", "target": POD}, "filter": "tcp port 80"}
    if seconds:
        body["limits"] = {"seconds": seconds}
    response = client.post("/api/captures/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _queue_length(redis: RedisServer, queue: str) -> int:
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "llen", queue],
                         capture_output=True, text=True, timeout=5).stdout.strip()
    return int(out or 0)


@pytest.fixture
def own_redis(tmp_path):
    missing = RedisServer.missing()
    if missing:
        pytest.skip(missing)
    servers = []

    def start(**options) -> RedisServer:
        port = servers[-1].port if servers else None
        server = RedisServer(tmp_path / f"redis-{len(servers)}.log", port=port, **options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def private_env(test_database_url, data_dir, service_settings):
    def env(redis_url: str) -> dict:
        return service_env(test_database_url, data_dir, redis_url=redis_url)
    return env


def test_a_capture_queued_before_redis_came_back_empty_runs_when_the_worker_starts(
        own_redis, private_env, lab, alice_client, tmp_path):
    redis = own_redis()
    worker = private_worker(private_env(redis.url), tmp_path / "worker.log", "requeue")
    queue = worker.env["KVIZ_QUEUE"]
    with queued_to_broker(redis.url, queue):
        capture_id = _start(alice_client, "queued-lost", seconds=3)
    assert _queue_length(redis, queue) == 1, "the task never reached the broker"

    redis.kill()
    redis = own_redis()  # same port, empty: the queue is gone
    assert _queue_length(redis, queue) == 0
    assert detail(alice_client, capture_id)["status"] == "queued"

    worker.start()
    try:
        done = wait_for(lambda: (d := detail(alice_client, capture_id))["status"]
                        in ("completed", "failed") and d, 30,
                        what=f"the lost capture to run\n{worker.tail()}")
    finally:
        worker.stop()
    assert done["status"] == "completed", done
    assert "queued again 1 captures left queued" in worker.log_path.read_text(), worker.tail()


def test_a_capture_queued_behind_a_running_one_survives_a_redis_restart(
        own_redis, private_env, lab, alice_client, tmp_path):
    # The realistic case: the worker stays up, busy, while Redis restarts empty; the capture
    # queued behind the running one runs once the worker is back on the broker.
    redis = own_redis()
    worker = private_worker(private_env(redis.url), tmp_path / "worker.log", "requeue2")
    queue = worker.env["KVIZ_QUEUE"]
    worker.start()
    try:
        with queued_to_broker(redis.url, queue):
            running = _start(alice_client, "queued-first")
            wait_for(lambda: detail(alice_client, running)["status"] == "running", 20,
                     what=f"the first capture to run\n{worker.tail()}")
            waiting = _start(alice_client, "queued-behind", seconds=3)
        wait_for(lambda: _queue_length(redis, queue) == 1, 5, what="the task in the broker")

        redis.kill()
        redis = own_redis()
        assert _queue_length(redis, queue) == 0
        time.sleep(1)
        alice_client.post(f"/api/captures/{running}/stop/")
        wait_for(lambda: detail(alice_client, running)["status"] == "completed", 30,
                 what=f"the first capture to complete\n{worker.tail()}")
        done = wait_for(lambda: (d := detail(alice_client, waiting))["status"]
                        in ("completed", "failed") and d, 60,
                        what=f"the queued capture to run\n{worker.tail()}")
    finally:
        worker.stop()
    assert done["status"] == "completed", done


def test_redis_is_told_to_persist_where_kviz_starts_it(own_redis, tmp_path):
    start_sh = (ROOT / "scripts" / "start.sh").read_text()
    assert "--appendonly yes" in start_sh
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in compose["services"]["redis"]["volumes"])

    # And persisting so keeps a queue across a SIGKILL.
    redis = own_redis(appendonly=True, directory=tmp_path)
    subprocess.run(["redis-cli", "-p", str(redis.port), "rpush", "kviz", "a-task"], check=True,
                   capture_output=True, timeout=5)
    time.sleep(1.5)  # appendfsync everysec
    redis.kill()
    redis = own_redis(appendonly=True, directory=tmp_path)
    assert _queue_length(redis, "kviz") == 1
