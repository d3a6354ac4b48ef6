"""Request bodies: an oversized one is refused by its declared length before a byte of it is
read, one without a declared length is cut at the limit, and what is allowed still arrives.

Against the web server as it is deployed (kviz.serve in a subprocess), since the limit must hold
before the request reaches Django."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.support.rawhttp import read_head
from tests.support.services import WebServer

pytestmark = pytest.mark.django_db(transaction=True)

GIGABYTES_2 = 2 * 1024 ** 3


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(worker_env, tmp_path_factory):
    web = WebServer(worker_env, tmp_path_factory.mktemp("web-limits") / "daphne.log")
    web.start()
    yield web
    web.stop()


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def test_an_oversized_anonymous_body_is_refused_before_it_is_sent(server, data_dir):
    before = rss_kb(server.process.pid)
    with connect(server) as sock:
        # Headers only: the answer must come without a byte of the 2 GB body.
        started = time.monotonic()
        sock.sendall(b"POST /api/share/abc/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Length: " + str(GIGABYTES_2).encode() + b"\r\n\r\n")
        answer = read_head(sock)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert took < 5
    # An upload's limit is larger, but not unbounded, and checked the same way.
    with connect(server) as sock:
        sock.sendall(b"POST /api/captures/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Expect: 100-continue\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                     b"Content-Length: " + str(GIGABYTES_2).encode() + b"\r\n\r\n")
        answer = read_head(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer  # no "100 Continue" first
    assert rss_kb(server.process.pid) - before < 50 * 1024


def test_a_body_without_a_length_is_cut_at_the_limit(server):
    chunk = b"x" * 65536
    sent = 0
    with connect(server) as sock:
        sock.sendall(b"POST /api/share/abc/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(200):  # 12.5 MB at most, far past the 1 MB limit
                sock.sendall(b"10000\r\n" + chunk + b"\r\n")
                sent += len(chunk)
        except OSError:
            pass  # the server closed on us: the fault this test looks for
        answer = read_head(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert sent < 12 * 1024 * 1024  # it stopped reading: our sends failed


def test_ordinary_requests_still_pass(server):
    with connect(server) as sock:
        body = b'{"redacted": false}'
        sock.sendall(b"POST /api/share/abc/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        answer = read_head(sock)
    # Django answered it (the share API takes GET only), not the body limit.
    assert answer.startswith(b"HTTP/1.1 405 "), answer
