"""One frame's dissection is bounded for everyone, an anonymous share holder too: a frame beyond
the stored packets is 404 before tshark starts, at most KVIZ_TSHARK_CONCURRENCY tshark runs
exist at once over all web processes (the rest: 429 with Retry-After, without tshark), each
inside its memory and time limits, and each user and share link has a rate.

Against the web server as deployed (kviz.serve in a subprocess) with `tshark` on its PATH a
wrapper that logs every start (and the address-space limit it got), waits, then runs the real
tshark: what started and when is read from that log and from /proc."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from captures.access import limits
from captures.adapters import sniffer
from captures.jobs import actions
from captures.models import Capture, Status
from tests.support.corpus import corpus_dir
from tests.support.services import WebServer, service_env
from tests.support.stored import store_copy
from tests.support.tshark import fields

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

CORPUS = corpus_dir()
PCAP = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"
CONCURRENCY = 3
MEMORY_MB = 1024
WRAPPER_WAIT = 3  # seconds each wrapped tshark waits: every parallel request arrives meanwhile


def wrapper(directory: Path, log: Path, then: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "tshark"
    script.write_text(f'#!/bin/sh\necho "$$ $(ulimit -v)" >> {log}\n{then}\n')
    script.chmod(0o755)
    return directory


@pytest.fixture(scope="module")
def server(worker_env, test_database_url, data_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("frame-limits")
    log = work / "tshark-starts.log"
    log.touch()
    real = shutil.which("tshark")
    assert real, "these tests need tshark"
    bin_dir = wrapper(work / "bin", log, f'sleep {WRAPPER_WAIT}\nexec {real} "$@"')
    web = WebServer(service_env(test_database_url, data_dir,
                                PATH=f"{bin_dir}:{os.environ['PATH']}",
                                KVIZ_TSHARK_CONCURRENCY=str(CONCURRENCY),
                                KVIZ_TSHARK_MEMORY_MB=str(MEMORY_MB)), work / "daphne.log")
    web.start()
    web.starts = log
    yield web
    web.stop()


@pytest.fixture
def capture(users, data_dir):
    if CORPUS is None:
        pytest.skip("no capture corpus found")
    source = CORPUS / PCAP
    row = Capture.objects.create(
        name="frames", owner=users["alice"], target_kind="upload",
        target_spec={"file_name": "x.pcap"}, status=Status.COMPLETED, limit_seconds=1,
        limit_packets=1, limit_bytes=1, packets=len(fields(source, None, "frame.number")))
    store_copy(row, source)
    return row


def share(capture, user) -> str:
    return actions.share_capture(user, capture)[1]


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, dict(refused.headers), refused.read()


def tshark_starts(server) -> list[str]:
    return server.starts.read_text().splitlines()


def running_dissections(path: Path) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            count += str(path).encode() in argv and any(b"frame.number" in a for a in argv)
    return count


def test_parallel_frame_requests_beyond_the_limit_are_refused_without_tshark(
        server, capture, users):
    token = share(capture, users["alice"])
    before = len(tshark_starts(server))
    urls = [f"{server.url}/api/share/{token}/frames/0/{1 + i % capture.packets}/"
            for i in range(50)]
    answers: list = [None] * len(urls)
    gate = threading.Barrier(len(urls))

    def request(index: int) -> None:
        gate.wait(timeout=30)
        answers[index] = get(urls[index])

    threads = [threading.Thread(target=request, args=(i,)) for i in range(len(urls))]
    for thread in threads:
        thread.start()
    most = 0
    while any(thread.is_alive() for thread in threads):
        most = max(most, running_dissections(capture.stored_files()[0].file))
        time.sleep(0.02)
    for thread in threads:
        thread.join(timeout=60)

    statuses = [status for status, _headers, _body in answers]
    assert statuses.count(200) == CONCURRENCY, statuses
    assert statuses.count(429) == len(urls) - CONCURRENCY, statuses
    assert all(int(headers["Retry-After"]) > 0 for status, headers, _ in answers
               if status == 429)
    # Each admitted request runs tshark twice, one after the other (fields, then the readable
    # lines); the refused started nothing.
    assert len(tshark_starts(server)) - before == 2 * CONCURRENCY
    assert 0 < most <= CONCURRENCY


def test_a_frame_beyond_the_end_is_404_without_tshark_and_a_normal_one_works(
        server, capture, users):
    token = share(capture, users["alice"])
    before = len(tshark_starts(server))
    for number in (capture.packets + 1, 300_000, 10**9):
        status, _headers, _body = get(f"{server.url}/api/share/{token}/frames/0/{number}/")
        assert status == 404
    assert get(f"{server.url}/api/share/{token}/frames/0/0/")[0] == 400
    assert len(tshark_starts(server)) == before

    status, _headers, body = get(f"{server.url}/api/share/{token}/frames/0/3/")
    assert status == 200 and b'"protocols":"eth:ethertype:ip:udp:dns"' in body.replace(b" ", b"")
    starts = tshark_starts(server)[before:]
    assert len(starts) == 2  # the fields (-T json), then the readable lines (-V)
    for start in starts:
        assert start.split()[1] == str(MEMORY_MB * 1024)  # RLIMIT_AS, in KB as ulimit -v says
    details = json.loads(body)["details"]
    assert [node["text"].split(",")[0] for node in details][:3] == [
        "Frame 3: 74 bytes on wire (592 bits)", "Ethernet II", "Internet Protocol Version 4"]


def test_each_user_and_each_share_link_has_a_frame_rate(users, alice_client, settings,
                                                        tmp_path, monkeypatch):
    from django.core.cache import cache
    from django.test import Client

    settings.DATA_DIR = tmp_path
    settings.KVIZ_FRAMES_PER_MINUTE = 3
    cache.clear()
    dissected = []
    monkeypatch.setattr(sniffer, "dissect_frame", lambda path, number, **bounds: dissected.append(
        number) or {"frame": number, "protocols": "eth", "layers": {}, "hex": ""})
    row = Capture.objects.create(
        name="rated", owner=users["alice"], target_kind="upload", target_spec={},
        status=Status.COMPLETED, limit_seconds=1, limit_packets=1, limit_bytes=1, packets=10)
    (tmp_path / "x.pcap").write_bytes(b"x")
    store_copy(row, tmp_path / "x.pcap")
    first, second = share(row, users["alice"]), share(row, users["alice"])
    anonymous = Client()
    for base, who in ((f"/api/captures/{row.id}", alice_client), (f"/api/share/{first}", anonymous),
                      (f"/api/share/{second}", anonymous)):
        assert [who.get(f"{base}/frames/0/{n}/").status_code for n in (1, 2, 3)] == [200] * 3
        refused = who.get(f"{base}/frames/0/4/")
        assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 60
    assert len(dissected) == 9


def test_tshark_is_stopped_at_its_time_limit(tmp_path, monkeypatch):
    log = tmp_path / "starts.log"
    bin_dir = wrapper(tmp_path / "bin", log, "exec sleep 30")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    started = time.monotonic()
    with pytest.raises(sniffer.DissectError):
        sniffer.dissect_frame(tmp_path / "any.pcap", 1, timeout=1, memory_bytes=256 * 2**20)
    assert time.monotonic() - started < 3
    pid = int(log.read_text().split()[0])
    assert not Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "embedded"])
def test_slots_are_never_overshot_and_come_back(shared, service_settings, settings):
    if not shared:
        settings.REDIS_URL = ""
    name = f"test-{shared}-{time.monotonic_ns()}"
    taken = []

    def take(holder):
        if limits.take_slot(name, holder, 4, lease=30):
            taken.append(holder)

    threads = [threading.Thread(target=take, args=(f"h{i}",)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(taken) == 4
    limits.give_back_slot(name, taken[0])
    assert limits.take_slot(name, "late", 4, lease=30)
    assert not limits.take_slot(name, "later", 4, lease=30)
    # A holder that never gives back (a killed process) frees its slot when its lease ends.
    assert limits.take_slot(f"{name}-lease", "killed", 1, lease=0.5)
    assert not limits.take_slot(f"{name}-lease", "next", 1, lease=0.5)
    time.sleep(0.7)
    assert limits.take_slot(f"{name}-lease", "next", 1, lease=0.5)
