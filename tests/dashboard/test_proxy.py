"""The reverse proxy kviz ships (deploy/proxy), run for real with Debian's nginx on loopback in
front of kviz.serve: TLS, bodies refused before they are read, a slow body held by the proxy
and never by daphne, and the live view's WebSocket passed through."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time

import pytest

from tests.support.rawhttp import read_head
from tests.support.services import ROOT, WebServer, free_port, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def proxied(worker_env, tmp_path_factory):
    if not shutil.which("nginx") and not shutil.which("/usr/sbin/nginx"):
        pytest.skip("no nginx (scripts/setup.sh installs nginx-light)")
    work = tmp_path_factory.mktemp("proxy")
    web = WebServer(worker_env, work / "daphne.log")
    web.start()
    port = free_port()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TLS_DIR": str(work / "tls"),
           "UPSTREAM": f"127.0.0.1:{web.port}", "LISTEN": f"127.0.0.1:{port}",
           "NGINX_TEMPLATE": str(ROOT / "deploy/proxy/nginx.conf"),
           "NGINX_CONF": str(work / "nginx.conf"), "PID_FILE": str(work / "nginx.pid"),
           "ALLOWED_HOSTS": "localhost,127.0.0.1", "KVIZ_MAX_UPLOAD_BYTES": "1048576"}
    log = open(work / "nginx.log", "wb")  # noqa: SIM115 - closed below
    proxy = subprocess.Popen([str(ROOT / "deploy/proxy/entrypoint.sh")], env=env, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _answers(port), 20, what="nginx to listen")
        yield port, web, work
    finally:
        proxy.terminate()
        proxy.wait(10)
        log.close()
        web.stop()


def _answers(port) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def tls_socket(port) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the proxy's self-signed certificate
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(sock, server_hostname="localhost")


def test_it_serves_kviz_over_tls_with_its_headers(proxied):
    port, _web, work = proxied
    with tls_socket(port) as sock:
        sock.sendall(b"GET /login/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"Content-Security-Policy: default-src 'self'" in head
    assert b"nginx/" not in head  # no version to fingerprint
    subject = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                              str(work / "tls" / "tls.crt")], capture_output=True, text=True)
    assert "DNS:localhost" in subject.stdout and "IP Address:127.0.0.1" in subject.stdout


def test_an_oversized_body_is_refused_by_the_proxy(proxied):
    port, web, _work = proxied
    with tls_socket(port) as sock:
        sock.sendall(b"POST /api/captures/ HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Length: 2147483648\r\n\r\n")
        head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"POST /api/captures/" not in web.log_path.read_bytes()  # never reached daphne


def test_a_slow_body_is_held_by_the_proxy_not_daphne(proxied):
    port, web, _work = proxied
    body = b'{"name": "x"}'
    marker = f"/api/share/slow-{time.monotonic_ns()}/".encode()
    with tls_socket(port) as sock:
        sock.sendall(b"POST " + marker + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body[:3])
        time.sleep(1.5)
        assert marker not in web.log_path.read_bytes()  # daphne has not seen it yet
        sock.sendall(body[3:])
        head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 405"), head  # kviz answered it, whole


def test_the_websocket_passes_through(proxied):
    port, web, _work = proxied
    with tls_socket(port) as sock:
        sock.sendall(b"GET /ws/share/not-a-token/ HTTP/1.1\r\nHost: localhost\r\n"
                     b"Upgrade: websocket\r\nConnection: Upgrade\r\nOrigin: https://localhost\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        head = read_head(sock)
    # kviz itself refused the unknown link (a proxy that dropped the upgrade answers 400/502).
    assert head.split(b"\r\n")[0] in (b"HTTP/1.1 403 Forbidden", b"HTTP/1.1 403 Access denied"), \
        head
    assert b"/ws/share/not-a-token/" in web.log_path.read_bytes()
