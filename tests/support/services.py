"""Real services for tests: PostgreSQL, Redis, a Celery worker and daphne in subprocesses.

The worker, the web server and the tests share one PostgreSQL database (pytest-django's test
database, used with `django_db(transaction=True)` so rows are really committed), one Redis
database, a Celery queue named for this test run (a developer's own worker never takes these
tasks), and a data directory. The fixtures live in tests/conftest.py, so the dashboard and the
browser tests share one worker and one database in a run; only tests that ask for a database
get PostgreSQL, the rest of the suite needs none.

KVIZ_TEST_DATABASE_URL and KVIZ_TEST_REDIS_URL override where those services are.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL = os.environ.get("KVIZ_TEST_DATABASE_URL",
                              f"postgres://postgres@127.0.0.1:5432/kviz_dashboard_{os.getpid()}")
REDIS_URL = os.environ.get("KVIZ_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
RUN_TAG = f"kvd{os.getpid()}"  # also the lab prefix (1-10 characters), unlike tests/lab's
QUEUE = f"kviz-test-{RUN_TAG}"
ANALYSIS_QUEUE = f"{QUEUE}-analysis"
WORKER_START_TIMEOUT = 30.0
SERVER_START_TIMEOUT = 30.0
HEARTBEAT_TIMEOUT = 4  # seconds, for the worker and the tests' reaper alike


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1",
                                       parsed.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def services_missing() -> str | None:
    if not _reachable(DATABASE_URL, 5432):
        return f"these tests need PostgreSQL at {DATABASE_URL}"
    if not _reachable(REDIS_URL, 6379):
        return f"these tests need Redis at {REDIS_URL}"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def service_env(database_url: str, data_dir: Path, redis_url: str = REDIS_URL,
                **extra: str) -> dict:
    """The environment of a worker or web server that shares this test run's state (its
    secret key too: sessions the tests make must hold in the server)."""
    from django.conf import settings

    return {**os.environ, "SECRET_KEY": settings.SECRET_KEY, "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "KVIZ_DATA_DIR": str(data_dir), "KVIZ_QUEUE": QUEUE,
            "KVIZ_ANALYSIS_QUEUE": ANALYSIS_QUEUE,
            "KVIZ_LAB_PREFIX": RUN_TAG[:10], "KVIZ_CHANNELS_PREFIX": RUN_TAG,
            "KVIZ_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "KVIZ_LIVE_PREFIX": f"{RUN_TAG}:live:",
            "DJANGO_SETTINGS_MODULE": "kviz.settings", "PYTHONUNBUFFERED": "1", **extra}


class _Process:
    """A subprocess with its output in a log file, that a test may kill and restart."""

    ready_timeout = 30.0

    def __init__(self, env: dict, log_path: Path):
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self, new_output: bytes) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(self.command(), cwd=ROOT, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.is_ready(self.log_path.read_bytes()[offset:]):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.command()[:4]} did not start:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Worker(_Process):
    """A Celery worker on this run's queues: by default `--pool=solo` on both the capture and
    the analysis queue; `pool`, `concurrency` and `queues` start one as scripts/start.sh
    does (a thread pool on the capture queue, another worker on the analysis queue)."""

    ready_timeout = WORKER_START_TIMEOUT

    def __init__(self, env: dict, log_path: Path, name: str = RUN_TAG, pool: str = "solo",
                 concurrency: int = 1, queues: list[str] | None = None):
        super().__init__(env, log_path)
        # The node name is what a restarted worker reaps its own captures by: two workers
        # sharing a database need different names.
        self.name = name
        self.pool = pool
        self.concurrency = concurrency
        self.queues = queues or [self.env.get("KVIZ_QUEUE", QUEUE),
                                 self.env.get("KVIZ_ANALYSIS_QUEUE", ANALYSIS_QUEUE)]

    def command(self) -> list[str]:
        pool = [f"--pool={self.pool}"]
        if self.pool != "solo":
            pool.append(f"--concurrency={self.concurrency}")
        return [sys.executable, "-m", "celery", "-A", "kviz", "worker", *pool,
                "-Q", ",".join(self.queues), "-n", f"{self.name}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"]

    def is_ready(self, new_output: bytes) -> bool:
        return b" ready." in new_output


class WebServer(_Process):
    """daphne (through kviz.serve, as deployed) serving kviz.asgi on 127.0.0.1:<port>; `url`
    is its base URL."""

    ready_timeout = SERVER_START_TIMEOUT

    def __init__(self, env: dict, log_path: Path, port: int | None = None):
        super().__init__(env, log_path)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "kviz.serve", "-b", "127.0.0.1", "-p", str(self.port),
                "kviz.asgi:application"]

    def is_ready(self, new_output: bytes) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/targets/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # 401: it answers
        except OSError:
            return False


# -- fixtures (registered for the whole suite by tests/conftest.py) ---------------------------


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Point Django at PostgreSQL before pytest-django creates the test database."""
    missing = services_missing()
    if missing:
        pytest.skip(missing)
    from asgiref.local import Local
    from django.conf import settings
    from django.db import connections

    settings.DATABASES["default"] = dj_database_url.parse(DATABASE_URL, conn_max_age=0)
    # The connection handler caches what it read from settings at first use; start it over.
    connections.close_all()
    connections.__dict__.pop("settings", None)
    connections._connections = Local(connections.thread_critical)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kviz-data")


@pytest.fixture(scope="session")
def test_database_url(django_db_setup) -> str:
    from django.db import connection

    params = connection.settings_dict
    return (f"postgres://{params['USER'] or 'postgres'}@{params['HOST'] or '127.0.0.1'}:"
            f"{params['PORT'] or 5432}/{params['NAME']}")


@pytest.fixture(scope="session")
def service_settings(test_database_url, data_dir):
    """The test process talks to the same Redis, queue and data directory as the worker."""
    from channels.layers import channel_layers
    from django.test import override_settings

    from kviz.celery import app
    from kviz.settings import redis_channel_layer

    override = override_settings(
        REDIS_URL=REDIS_URL, DATA_DIR=data_dir, KVIZ_LAB_PREFIX=RUN_TAG[:10],
        KVIZ_LIVE_PREFIX=f"{RUN_TAG}:live:",
        KVIZ_HEARTBEAT_TIMEOUT=HEARTBEAT_TIMEOUT, CELERY_TASK_ALWAYS_EAGER=False,
        CELERY_TASK_DEFAULT_QUEUE=QUEUE, KVIZ_ANALYSIS_QUEUE=ANALYSIS_QUEUE,
        CHANNEL_LAYERS={"default": redis_channel_layer(REDIS_URL, RUN_TAG)},
    )
    override.enable()
    channel_layers.backends.clear()
    app.conf.update(broker_url=REDIS_URL, task_default_queue=QUEUE, task_always_eager=False)
    yield
    override.disable()
    channel_layers.backends.clear()
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for pattern in (f"{RUN_TAG}*", f"_kombu.binding*.{QUEUE}*"):
        for key in client.scan_iter(pattern):
            client.delete(key)
    client.delete(QUEUE, ANALYSIS_QUEUE)


@pytest.fixture(scope="session")
def worker_env(service_settings, test_database_url, data_dir) -> dict:
    return service_env(test_database_url, data_dir)


@pytest.fixture(scope="session")
def worker(worker_env, tmp_path_factory):
    running = Worker(worker_env, tmp_path_factory.mktemp("worker") / "worker.log")
    running.start()
    yield running
    running.stop()
