"""Redis killed and restarted under a live view: the browser resumes with no gap in seqs.

The suite's Redis is shared with others, so this test runs its own redis-server on a free port
with a dedicated web server and worker pointed at it, and kills only that one.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.support.services import WebServer, Worker, free_port, service_env, wait_for

from .test_live_capture import counter, seqs_are_contiguous, start_from_form


class RedisServer:
    def __init__(self, port: int, log_path):
        self.port, self.log_path = port, log_path
        self.process = None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--logfile", str(self.log_path)])
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(self.port), "ping"],
                                        capture_output=True, text=True).stdout.strip() == "PONG",
                 10, what="redis-server to answer")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()  # SIGKILL: nothing saved, nothing flushed
            self.process.wait(10)


@pytest.fixture
def private_stack(test_database_url, data_dir, tmp_path, lab):
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        pytest.skip("needs redis-server and redis-cli")
    redis = RedisServer(free_port(), tmp_path / "redis.log")
    redis.start()
    env = service_env(test_database_url, data_dir, redis_url=redis.url)
    worker = Worker(env, tmp_path / "worker.log", name=f"{env['KVIZ_QUEUE']}-private")
    web = WebServer(env, tmp_path / "daphne.log")
    try:
        worker.start()
        web.start()
        yield redis, web, worker
    finally:
        web.stop()
        worker.stop()
        redis.kill()


def test_the_live_view_resumes_without_a_gap_after_redis_restarts(
        private_stack, signed_in_page, make_user, lab_traffic, screenshot):
    redis, web, worker = private_stack
    page = signed_in_page(make_user())
    page.context.set_default_navigation_timeout(20_000)
    # Cookies ignore the port: the session made for the suite's server works here too.
    page.goto(f"{web.url}/")
    start_from_form(page, "redis-restart")
    lab_traffic(interval=0.1)
    wait_for(lambda: int(page.locator("#live").get_attribute("data-last-seq")) >= 8, 20,
             what="live events before the restart")
    before = int(page.locator("#live").get_attribute("data-last-seq"))

    redis.kill()
    time.sleep(1.5)  # packets keep coming; their events wait in the publisher
    redis.start()

    wait_for(lambda: int(page.locator("#live").get_attribute("data-last-seq")) > before + 10,
             30, what=f"live events after the restart\n{worker.tail()}\n{web.tail()}")
    assert counter(page) > 0
    # Whether the socket dropped depends on how the channel layer met the restart (data-
    # connections counts the page's connections); either way no seq may be missing.
    page.click("#stop")
    wait_for(lambda: page.locator("#live-status").inner_text() == "completed", 30,
             what=f"the capture to complete\n{worker.tail()}")
    seqs_are_contiguous(page)
    screenshot(page, "live-view-after-redis-restart")
