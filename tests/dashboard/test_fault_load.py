"""Load a live capture's server as people do, on daphne as deployed: an upload that trickles
in at 10 kB/s holds up nobody else (another user's requests, and another upload, answer
promptly meanwhile), and 20 viewers of one live capture each receive every row."""

from __future__ import annotations

import io
import json
import socket
import time
import urllib.request

import pytest
from django.core.management import call_command

from tests.support.faults import tiny_pcap
from tests.support.lab import Traffic
from tests.support.rawhttp import read_head
from tests.support.services import WebServer, wait_for
from tests.support.viewers import Viewer, is_final, session_cookie

from .test_lab_capture import detail, start_lab

pytestmark = pytest.mark.django_db(transaction=True)

RATE = 10_000  # bytes a second
PROMPT = 1.5  # seconds: what "answers promptly" means on two shared cores


@pytest.fixture
def daphne(worker, worker_env, tmp_path):
    server = WebServer(worker_env, tmp_path / "daphne.log")
    server.start()
    yield server
    server.stop()


def _token(username: str) -> str:
    out = io.StringIO()
    call_command("kviz", "token", username, stdout=out)
    return out.getvalue().strip()


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "kvizfaultboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{name}.pcap\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _many_frames(count: int) -> bytes:
    one = tiny_pcap()
    header, record = one[:24], one[24:]
    return header + record * count


def _request(url: str, token: str, body: bytes | None = None, content_type: str = ""):
    request = urllib.request.Request(url, data=body, headers={
        "Authorization": f"Bearer {token}", **({"Content-Type": content_type} if body else {})})
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as answer:
        status, payload = answer.status, answer.read()
    return status, payload, time.monotonic() - started


def test_an_upload_at_10_kb_a_second_holds_up_no_one_else(daphne, users):
    alice, bob = _token("alice"), _token("bob")
    body, content_type = _multipart("slow-upload", _many_frames(1500))  # ~90 kB: ~9 s
    assert len(body) > 6 * RATE
    slow = socket.create_connection(("127.0.0.1", daphne.port), timeout=10)
    slow.sendall((f"POST /api/captures/ HTTP/1.1\r\nHost: 127.0.0.1:{daphne.port}\r\n"
                  f"Authorization: Bearer {alice}\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode())
    others, sent, started = [], 0, time.monotonic()
    step = RATE // 10
    try:
        while sent < len(body):
            slow.sendall(body[sent:sent + step])
            sent += step
            time.sleep(0.1)
            if sent // step % 10 == 5:  # about every second, someone else uses the server
                others.append(("list", *_request(f"{daphne.url}/api/captures/", bob)))
            if sent // step == 30:  # and once, another user uploads a capture of their own
                small, small_type = _multipart("quick-upload", tiny_pcap())
                others.append(("upload", *_request(f"{daphne.url}/api/captures/", bob,
                                                   small, small_type)))
        took = time.monotonic() - started
        head = read_head(slow, timeout=30)
    finally:
        slow.close()
    assert took >= 6, f"the upload was not slow ({took:.1f} s)"
    assert head.startswith(b"HTTP/1.1 201"), head[:200]
    assert len([o for o in others if o[0] == "list"]) >= 5
    for what, status, _payload, seconds in others:
        assert status in (200, 201), (what, status)
        assert seconds < PROMPT, f"{what} took {seconds:.2f} s while the slow upload went on"
    uploaded = next(payload for what, _s, payload, _t in others if what == "upload")
    assert json.loads(uploaded)["name"] == "quick-upload"


def test_twenty_viewers_of_one_live_capture_each_receive_every_row(
        daphne, lab, alice_client):
    capture_id = start_lab(alice_client, "twenty-viewers", bpf="tcp port 80")
    url = f"ws://127.0.0.1:{daphne.port}/ws/captures/{capture_id}/"
    cookie = session_cookie(alice_client)
    viewers = [Viewer(url, cookie, daphne.url, 0) for _ in range(20)]
    for viewer in viewers:
        viewer.start()
    traffic = Traffic(lab, interval=0.1)
    try:
        wait_for(lambda: detail(alice_client, capture_id)["counters"]["bytes"] > 0, 20,
                 what="the capture to run")
        traffic.start()
        wait_for(lambda: detail(alice_client, capture_id)["counters"]["packets"] >= 200, 30,
                 what="packets")
        traffic.stop()
        time.sleep(1)
        alice_client.post(f"/api/captures/{capture_id}/stop/")
        wait_for(lambda: all(v.events and is_final(v.events[-1]) for v in viewers), 30,
                 what="every viewer to receive the final status")
    finally:
        traffic.stop()
        for viewer in viewers:
            viewer.close()
    done = detail(alice_client, capture_id)
    assert done["status"] == "completed"
    expected = None
    for index, viewer in enumerate(viewers):
        assert viewer.closed is None or viewer.closed[0] in (1000, "error"), viewer.closed
        seqs = [e["seq"] for e in viewer.events]
        assert seqs == list(range(1, len(seqs) + 1)), f"viewer {index}: gap in {seqs}"
        batches = [e for e in viewer.events if e["kind"] == "batch"]
        rows = [(r["n"], r.get("file", 0)) for b in batches for r in b["rows"]]
        thinned = sum(b["thinned"] for b in batches)
        assert len(rows) + thinned == done["counters"]["packets"], f"viewer {index}"
        expected = expected or rows
        assert rows == expected, f"viewer {index} received other rows"
