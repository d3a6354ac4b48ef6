"""Who may capture the host kviz runs on: a grant for the host and its lab, and never the
dashboard's own traffic (sessions, tokens) for a non-staff user, whatever their filter."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time

import pytest
from django.test import override_settings

from captures.models import Capture

from .conftest import ROOT, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def host_targets(client) -> list[dict]:
    return [t for t in client.get("/api/targets/").json()["targets"]
            if t["kind"] in ("local", "lab")]


def test_a_user_without_the_grant_sees_and_starts_no_host_capture(users, client):
    client.force_login(users["bob"])
    assert host_targets(client) == []
    form = client.get("/captures/new/").content.decode()
    assert 'value="local:' not in form and 'value="lab:' not in form
    for target in ({"kind": "local", "interface": "lo"},
                   {"kind": "lab", "target": "pod/default/ubuntu"}):
        response = client.post("/api/captures/", {"name": "sniff", "target": target,
                                                  "filter": "tcp port 8000"},
                               content_type="application/json")
        assert response.status_code == 400, response.content
        assert "host-capture" in response.json()["error"]
    assert not Capture.objects.exists()


def test_the_grant_and_staff_offer_the_host(users, client):
    for name in ("alice", "root"):
        client.force_login(users[name])
        assert {"kind": "local", "interface": "lo"} in host_targets(client)
        assert 'value="local:lo"' in client.get("/captures/new/").content.decode()


class SecretServer:
    """A loopback TCP listener that reads what a client sends (as a browser sends a cookie)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        for _ in range(8):  # bounded: the test sends at most a few requests
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
                except OSError:
                    pass

    def send(self, secret: str) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(f"GET / HTTP/1.1\r\nCookie: sessionid={secret}\r\n\r\n".encode())
            conn.recv(100)

    def close(self):
        self.sock.close()


def captured_bytes(client, capture_id) -> bytes:
    return b"".join(client.get(f"/api/captures/{capture_id}/pcap").streaming_content)


def capture_secrets(client, dashboard: SecretServer, other: SecretServer, name: str):
    """Capture all TCP on lo while a session cookie goes to the dashboard's port and another
    to an ordinary port; what did the pcap keep?"""
    response = client.post("/api/captures/", {
        "name": name, "target": {"kind": "local", "interface": "lo"}, "filter": "tcp",
        "limits": {"seconds": 30}}, content_type="application/json")
    assert response.status_code == 201, response.content
    capture_id = response.json()["id"]
    wait_for(lambda: client.get(f"/api/captures/{capture_id}/").json()["counters"]["bytes"] > 0,
             15, what="the capture to run")
    time.sleep(0.3)
    dashboard_secret, other_secret = secrets.token_hex(16), secrets.token_hex(16)
    dashboard.send(dashboard_secret)
    other.send(other_secret)
    wait_for(lambda: other_secret.encode() in captured_bytes(client, capture_id), 10,
             what="the ordinary port's traffic on disk")
    assert client.post(f"/api/captures/{capture_id}/stop/").status_code == 202
    wait_for(lambda: client.get(f"/api/captures/{capture_id}/").json()["status"] == "completed",
             15, what="the capture to end")
    stored = captured_bytes(client, capture_id)
    return Capture.objects.get(id=capture_id), dashboard_secret.encode() in stored


def test_a_granted_user_never_records_the_dashboards_port_but_staff_may(worker, users, client):
    dashboard, other = SecretServer(), SecretServer()
    try:
        with override_settings(KVIZ_PROTECTED_PORTS=[dashboard.port]):
            client.force_login(users["alice"])
            capture, leaked = capture_secrets(client, dashboard, other, "alice-lo")
            assert not leaked, "a non-staff user's capture recorded the dashboard's cookie"
            assert capture.bpf_filter == f"not (tcp and (port {dashboard.port})) and (tcp)"
            client.force_login(users["root"])
            _, seen_by_staff = capture_secrets(client, dashboard, other, "root-lo")
            assert seen_by_staff  # the same traffic was there to record
    finally:
        dashboard.close()
        other.close()


def test_the_protected_ports_follow_the_deployment():
    env = {**os.environ, "KVIZ_WEB_PORTS": "8000,8443",
           "DATABASE_URL": "postgres://kviz@db.internal:6543/kviz",
           "REDIS_URL": "redis://cache:6380/0", "DJANGO_SETTINGS_MODULE": "kviz.settings"}
    printed = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; "
                               "print(settings.KVIZ_PROTECTED_PORTS)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert printed.strip() == "[6380, 6543, 8000, 8443]"
    env.update({"DATABASE_URL": "sqlite:////tmp/x.sqlite3", "REDIS_URL": ""})
    printed = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; "
                               "print(settings.KVIZ_PROTECTED_PORTS)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert printed.strip() == "[8000, 8443]"
