"""Redis and the web server killed and restarted under a live view: the browser reconnects by
itself and resumes with no gap in seqs.

The suite's Redis is shared with others, so this test runs its own redis-server on a free port
with a dedicated web server and worker pointed at it, and kills only those.
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


def test_the_live_view_reconnects_and_resumes_without_a_gap_after_redis_and_web_restart(
        private_stack, signed_in_page, make_user, lab_traffic, screenshot):
    redis, web, worker = private_stack
    page = signed_in_page(make_user(host=True))
    page.context.set_default_navigation_timeout(20_000)
    # Cookies ignore the port: the session made for the suite's server works here too.
    start_from_form(page, "redis-restart", server=web.url)
    assert page.url.startswith(web.url)  # the live view is this stack's, not the suite's
    lab_traffic(interval=0.1)
    live = page.locator("#live")
    wait_for(lambda: int(live.get_attribute("data-last-seq")) >= 8, 20,
             what="live events before the restart")
    before = int(live.get_attribute("data-last-seq"))
    connections = int(live.get_attribute("data-connections"))

    # The web server dies with Redis, so the page's socket surely drops (with Redis alone,
    # channels-redis may ride out the restart and the socket never closes).
    web.kill()
    redis.kill()
    wait_for(lambda: "reconnecting" in page.locator("#live-connection").inner_text(), 10,
             what="the page to notice its socket closed")
    time.sleep(1.5)  # packets keep coming; their events wait in the publisher
    redis.start()
    web.start()  # on the same port: the page's retries find it

    wait_for(lambda: int(live.get_attribute("data-last-seq")) > before + 10,
             30, what=f"live events after the restart\n{worker.tail()}\n{web.tail()}")
    assert int(live.get_attribute("data-connections")) > connections
    assert page.locator("#live-connection").inner_text() == "live"
    assert counter(page) > 0
    page.click("#stop")
    wait_for(lambda: page.locator("#live-status").inner_text() == "completed", 30,
             what=f"the capture to complete\n{worker.tail()}")
    seqs_are_contiguous(page)
    screenshot(page, "live-view-after-redis-and-web-restart")
