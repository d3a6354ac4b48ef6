"""/healthz and /readyz on a real kviz.serve, as a kubelet or `docker compose` probes them: plain
HTTP to an address that is not in ALLOWED_HOSTS, with kviz set up HTTPS-only behind a proxy.
The services are real too: PostgreSQL and Redis, or a loopback port where nothing listens, or a
socket that accepts and never answers."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.test import override_settings

from tests.support.services import WebServer, free_port, service_env

# As deployed (docker-compose.yml, deploy/kubernetes): the probe's Host is an address these
# hosts do not include, and every other request over plain HTTP is redirected.
DEPLOYED = {"ALLOWED_HOSTS": "kviz.example.com", "KVIZ_HTTPS": "true",
            "KVIZ_BEHIND_PROXY": "true"}
DB_PASSWORD = "db-pass-never-shown"
REDIS_PASSWORD = "redis-pass-never-shown"


class ProbedServer(WebServer):
    """Ready once /healthz answers: it needs nothing but the process."""

    def is_ready(self, new_output: bytes) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):
                return True
        except OSError:
            return False


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(env: dict) -> ProbedServer:
        server = ProbedServer({**env, **DEPLOYED}, tmp_path / f"daphne-{len(started)}.log")
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def probe(server: WebServer, path: str, method: str = "GET") -> tuple[int, dict, float]:
    started = time.monotonic()
    request = urllib.request.Request(f"{server.url}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            status, body = answer.status, answer.read()
            headers = answer.headers
    except urllib.error.HTTPError as refused:
        status, body, headers = refused.code, refused.read(), refused.headers
    elapsed = time.monotonic() - started
    if status in (200, 503):
        assert headers["Content-Type"] == "application/json"
        assert headers["Cache-Control"] == "no-store"
        return status, json.loads(body), elapsed
    return status, {}, elapsed


@pytest.fixture
def refused_port() -> int:
    """A loopback port where nothing listens, proven by a refused connection."""
    port = free_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    return port


@pytest.mark.django_db(transaction=True)
def test_it_is_ready_with_its_database_redis_and_data_directory(serve, worker_env):
    server = serve(worker_env)
    assert probe(server, "/healthz")[:2] == (200, {"status": "ok"})
    status, body, _ = probe(server, "/readyz")
    assert status == 200, body
    assert body == {"status": "ready",
                    "checks": {"database": "ok", "redis": "ok", "data": "ok"}}
    # Only the probes pass by the host check and the HTTPS redirect: a page does not.
    assert probe(server, "/login/")[0] == 400
    assert probe(server, "/healthz", "POST")[0] == 405
    # The file written to the data directory is gone again.
    assert not list(Path(worker_env["KVIZ_DATA_DIR"]).glob(".readyz-*"))


@pytest.mark.django_db(transaction=True)
def test_it_reports_a_stopped_redis_as_not_ready(serve, worker_env, refused_port):
    server = serve({**worker_env,
                    "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{refused_port}/0"})
    status, body, elapsed = probe(server, "/readyz")
    assert status == 503, body
    assert body == {"status": "not ready", "not_ready": ["redis"],
                    "checks": {"database": "ok", "redis": "connection refused",
                               "data": "ok"}}
    assert elapsed < 5
    assert probe(server, "/healthz")[:2] == (200, {"status": "ok"})
    # What failed is in the log, for the operator; the URL and its password are not.
    assert "readyz: redis is not ready" in server.log_path.read_text()
    assert REDIS_PASSWORD not in server.log_path.read_text()


def test_it_reports_an_unreachable_database_and_healthz_still_answers(serve, tmp_path,
                                                                        refused_port):
    # No database at all for this server: it started (ProbedServer waits for /healthz).
    env = service_env(f"postgres://kviz:{DB_PASSWORD}@127.0.0.1:{refused_port}/kviz",
                      tmp_path / "data")
    (tmp_path / "data").mkdir()
    server = serve(env)
    assert probe(server, "/healthz")[:2] == (200, {"status": "ok"})
    status, body, _ = probe(server, "/readyz")
    assert status == 503, body
    assert body == {"status": "not ready", "not_ready": ["database"],
                    "checks": {"database": "connection refused", "redis": "ok", "data": "ok"}}
    assert DB_PASSWORD not in json.dumps(body) and str(refused_port) not in json.dumps(body)


def test_a_database_that_never_answers_fails_readyz_within_its_connect_timeout(serve,
                                                                              tmp_path):
    # The kernel completes the handshake for a listening socket nobody accepts on; libpq then
    # waits for the server's answer to its startup packet, which never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        env = service_env(f"postgres://kviz:{DB_PASSWORD}@127.0.0.1:{port}/kviz",
                          tmp_path / "data", KVIZ_DB_CONNECT_TIMEOUT="1")
        (tmp_path / "data").mkdir()
        server = serve(env)
        status, body, elapsed = probe(server, "/readyz")
        assert status == 503, body
        assert body["not_ready"] == ["database"] and body["checks"]["database"] == "timed out"
        assert elapsed < 4
        assert probe(server, "/healthz")[:2] == (200, {"status": "ok"})


@pytest.mark.django_db(transaction=True)
@override_settings(REDIS_URL="")
def test_it_reports_a_data_directory_it_cannot_write(client, tmp_path):
    # Root writes through mode bits, so the unwritable directory is one that is not there, and
    # one that is a file.
    with override_settings(DATA_DIR=tmp_path / "gone"):
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {"status": "not ready", "not_ready": ["data"],
                             "checks": {"database": "ok", "data": "missing"}}
    (tmp_path / "file").write_text("")
    with override_settings(DATA_DIR=tmp_path / "file"):
        assert client.get("/readyz").json()["checks"]["data"] == "not a directory"
    with override_settings(DATA_DIR=tmp_path):
        assert client.get("/readyz").json() == {"status": "ready",
                                                "checks": {"database": "ok", "data": "ok"}}
