"""Redis killed and restarted under a live view, the web server left running: the page's
WebSocket really breaks (the page says it is reconnecting, and opens a new connection), it
resumes with no gap in seqs, and the stored pcap has every request of the outage.

The suite's Redis is shared with others, so this test runs its own redis-server on a free port
with a dedicated web server and worker pointed at it, and kills only that Redis.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.support.faults import RedisServer, syn_times
from tests.support.services import WebServer, Worker, service_env, wait_for

from .test_live_capture import counter, seqs_are_contiguous, start_from_form


@pytest.fixture
def private_stack(test_database_url, data_dir, tmp_path, lab):
    missing = RedisServer.missing()
    if missing:
        pytest.skip(missing)
    redis = RedisServer(tmp_path / "redis.log")
    redis.start()
    env = service_env(test_database_url, data_dir, redis_url=redis.url)
    worker = Worker(env, tmp_path / "worker.log", name=f"{env['KVIZ_QUEUE']}-private")
    web = WebServer(env, tmp_path / "daphne.log")
    servers = [redis]
    try:
        worker.start()
        web.start()
        yield servers, web, worker
    finally:
        web.stop()
        worker.stop()
        for server in servers:
            server.kill()


def test_the_live_view_reconnects_and_resumes_without_a_gap_after_a_redis_restart(
        private_stack, signed_in_page, make_user, lab_traffic, screenshot, tmp_path):
    from captures.models import Capture

    servers, web, worker = private_stack
    page = signed_in_page(make_user(host=True))
    page.context.set_default_navigation_timeout(20_000)
    # Cookies ignore the port: the session made for the suite's server works here too.
    start_from_form(page, "redis-restart", server=web.url)
    assert page.url.startswith(web.url)  # the live view is this stack's, not the suite's
    capture_id = re.search(r"/captures/([0-9a-f-]+)/live/", page.url).group(1)
    # Traffic once the source records (the file has its header), so every request is in it.
    wait_for(lambda: Capture.objects.filter(id=capture_id, bytes__gt=0).exists(), 20,
             what=f"the capture to record\n{worker.tail()}")
    traffic = lab_traffic(interval=0.1)
    live = page.locator("#live")
    connection = page.locator("#live-connection")
    wait_for(lambda: int(live.get_attribute("data-last-seq")) >= 8, 20,
             what="live events before the restart")
    before = int(live.get_attribute("data-last-seq"))
    connections = int(live.get_attribute("data-connections"))
    assert connection.inner_text() == "live"

    # Only Redis dies. The socket breaks because the web server's channel layer loses Redis
    # (it closes the socket with 1011); the page must see that close.
    requests_before = traffic.requests
    servers[0].kill()
    wait_for(lambda: "reconnecting" in connection.inner_text(), 15,
             what=f"the page to notice its socket closed\n{web.tail()}")
    time.sleep(1.5)  # packets keep coming; their events wait in the publisher
    fresh = RedisServer(tmp_path / "redis-2.log", port=servers[0].port)
    fresh.start()
    servers.append(fresh)

    wait_for(lambda: int(live.get_attribute("data-last-seq")) > before + 10,
             30, what=f"live events after the restart\n{worker.tail()}\n{web.tail()}")
    assert int(live.get_attribute("data-connections")) > connections
    assert connection.inner_text() == "live"
    assert counter(page) > 0
    traffic.stop()
    assert traffic.requests > requests_before
    time.sleep(1)  # the last request's packets reach the file
    page.click("#stop")
    wait_for(lambda: page.locator("#live-status").inner_text() == "completed", 30,
             what=f"the capture to complete\n{worker.tail()}")
    seqs_are_contiguous(page)

    # The stored pcap has every request, those made while Redis was away too.
    stored = Capture.objects.get(id=capture_id).stored_files()[0].file
    assert len(syn_times(stored)) >= traffic.requests
    screenshot(page, "live-view-after-redis-restart")
