"""The live WebSocket opens only from kviz's own origin: scheme, host and port.

Against the web server as deployed (kviz.serve), with the raw handshakes a browser sends: a page
on another port of the same host carries the user's cookies too, and must be refused."""

from __future__ import annotations

import socket

import pytest

from tests.support.rawhttp import read_head
from tests.support.services import WebServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(worker_env, tmp_path_factory):
    web = WebServer({**worker_env, "CSRF_TRUSTED_ORIGINS": "https://kviz.example.com"},
                    tmp_path_factory.mktemp("web-origin") / "daphne.log")
    web.start()
    yield web
    web.stop()


@pytest.fixture
def share_path(users):
    from captures.jobs import actions
    from captures.models import Capture, Status

    capture = Capture.objects.create(
        name="origin", owner=users["alice"], target_kind="upload", status=Status.COMPLETED,
        limit_seconds=1, limit_packets=1, limit_bytes=1)
    _link, token = actions.share_capture(users["alice"], capture)
    return f"/ws/share/{token}/"


def handshake(server, path: str, host: str | None, origin: str | None,
              extra: str = "") -> str:
    lines = [f"GET {path} HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    if host is not None:
        lines.append(f"Host: {host}")
    if origin is not None:
        lines.append(f"Origin: {origin}")
    if extra:
        lines.append(extra)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = read_head(sock)
    return answer.split(b"\r\n")[0].decode()


def test_only_kviz_s_own_origin_opens_the_socket(server, share_path):
    own = f"127.0.0.1:{server.port}"
    opened = "HTTP/1.1 101 Switching Protocols"
    assert handshake(server, share_path, own, f"http://{own}") == opened
    assert handshake(server, share_path, f"localhost:{server.port}",
                     f"http://localhost:{server.port}") == opened
    assert handshake(server, share_path, own, "https://kviz.example.com") == opened  # trusted
    refused = [
        (own, f"http://127.0.0.1:{server.port + 1}"),  # another port of the same host
        (own, "http://127.0.0.1"),  # port 80 is another origin too
        (own, f"https://{own}"),  # another scheme
        (own, "http://evil.example"),
        (own, "null"),
        (own, None),  # no Origin
        ("evil.example", "http://evil.example"),  # a host kviz does not serve
    ]
    for host, origin in refused:
        assert handshake(server, share_path, host, origin).startswith("HTTP/1.1 403"), origin
    # Without a Host header the request is not even HTTP/1.1 (daphne answers 400).
    assert handshake(server, share_path, None, f"http://{own}")[9:12] in ("400", "403")
    # A forwarded scheme counts only behind kviz's own proxy (KVIZ_BEHIND_PROXY).
    assert handshake(server, share_path, own, f"https://{own}",
                     "X-Forwarded-Proto: https").startswith("HTTP/1.1 403")
