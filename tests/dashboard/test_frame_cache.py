"""Frame clicks with captures in an S3 bucket (moto's server on loopback, recording every request
that reaches it): tshark reads the capture's file from this machine's bounded cache
(captures/jobs/local_copy.py), so two clicks fetch the object once; an object stored again is
fetched again; parallel first clicks fetch it once; the cache stays within its size, least
recently used first out; a deleted capture's copy goes. A capture still recording on another
machine answers 409 saying where, with Retry-After; on the worker's own machine it is read from
the spool."""

from __future__ import annotations

import datetime
import threading

import pytest
from django.db import connection
from django.utils import timezone

from captures.jobs import local_copy
from captures.models import Capture, Status, StoredFile, TargetKind
from tests.support.s3 import BUCKET, CREDENTIALS, moto_s3

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

pytest.importorskip("boto3")
pytest.importorskip("moto.server")
pytest.importorskip("storages")

DNS_HTTP = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"
REFUSED = "tcp/deepflow_syn-answered-by-rst.pcap"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_s3(tmp_path_factory.mktemp("moto-frames"), record=True) as server:
        yield server


@pytest.fixture(autouse=True)
def bucket(s3, settings, monkeypatch, tmp_path):
    """This process stores captures in the bucket, with a data directory of its own."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    settings.DATA_DIR = tmp_path / "data"
    settings.KVIZ_FRAME_CACHE_DIR = ""  # the default: DATA_DIR/frame-cache
    settings.KVIZ_FRAME_CACHE_BYTES = 64 * 1024**2
    settings.KVIZ_FRAMES_PER_MINUTE = 10_000
    settings.KVIZ_TSHARK_CONCURRENCY = 16
    settings.STORAGES = {**settings.STORAGES, "captures": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": BUCKET, "endpoint_url": s3.url, "addressing_style": "path",
                    "file_overwrite": True, "default_acl": None}}}
    return s3


def in_bucket(s3, owner, corpus, relative: str, name: str, **fields) -> Capture:
    """A finished capture whose one file is `relative` of the corpus, stored in the bucket."""
    capture = Capture.objects.create(
        name=name, owner=owner, target_kind=fields.pop("target_kind", TargetKind.LAB),
        target_spec={"target": "pod/default/ubuntu"}, status=fields.pop("status",
                                                                        Status.COMPLETED),
        limit_seconds=60, limit_packets=1000, limit_bytes=10**8, **fields)
    key = f"captures/{capture.id}/capture.pcap"
    data = (corpus / relative).read_bytes()
    s3.client.put_object(Bucket=BUCKET, Key=key, Body=data)
    # Each corpus file used here has more than 2 packets (the frames clicked).
    StoredFile.objects.create(capture=capture, position=0, path=key, bytes=len(data),
                              packets=2)
    return capture


def key(capture) -> str:
    return f"captures/{capture.id}/capture.pcap"


def frame(client, capture, number: int):
    return client.get(f"/api/captures/{capture.id}/frames/0/{number}/")


def entries(capture) -> list:
    directory = local_copy.root() / str(capture.id)
    return sorted(p for p in directory.iterdir() if not p.name.startswith(".")) \
        if directory.is_dir() else []


def test_two_clicks_fetch_the_object_once(bucket, users, alice_client, corpus):
    capture = in_bucket(bucket, users["alice"], corpus, DNS_HTTP, "twice")
    first, second = frame(alice_client, capture, 1), frame(alice_client, capture, 2)
    assert first.status_code == 200, first.content
    assert second.status_code == 200, second.content
    assert first.json() != second.json()
    assert bucket.requests("GET", key(capture)) == 1
    [entry] = entries(capture)
    assert entry.read_bytes() == (corpus / DNS_HTTP).read_bytes()
    # Nothing else is left behind: no temporary copies, no readers' links.
    assert not list((local_copy.root() / str(capture.id)).glob(".use-*"))
    assert not list((local_copy.root() / str(capture.id)).glob(".fetch-*"))


def test_an_object_stored_again_is_fetched_again(bucket, users, alice_client, corpus):
    capture = in_bucket(bucket, users["alice"], corpus, DNS_HTTP, "changed")
    before = frame(alice_client, capture, 1).json()
    bucket.client.put_object(Bucket=BUCKET, Key=key(capture),
                             Body=(corpus / REFUSED).read_bytes())
    after = frame(alice_client, capture, 1)
    assert after.status_code == 200
    assert after.json() != before  # the new file's first frame
    assert bucket.requests("GET", key(capture)) == 2
    [entry] = entries(capture)  # the old version's entry is gone
    assert entry.read_bytes() == (corpus / REFUSED).read_bytes()
    frame(alice_client, capture, 2)
    assert bucket.requests("GET", key(capture)) == 2


def test_parallel_first_clicks_fetch_it_once(bucket, users, corpus):
    capture = in_bucket(bucket, users["alice"], corpus, DNS_HTTP, "parallel")
    row = capture.stored_files()[0]
    expected = (corpus / DNS_HTTP).read_bytes()
    start = threading.Barrier(6)
    seen, failures = [], []

    def click():
        try:
            start.wait()
            with local_copy.capture_file(capture, row) as path:
                seen.append(path.read_bytes() == expected)
        except Exception as exc:  # reported below, with the thread's own failure
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=click) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == [] and seen == [True] * 6
    assert bucket.requests("GET", key(capture)) == 1


def test_the_cache_keeps_within_its_size_least_recently_used_first(bucket, users, alice_client,
                                                                   corpus, settings):
    small, other = corpus / REFUSED, corpus / DNS_HTTP
    settings.KVIZ_FRAME_CACHE_BYTES = small.stat().st_size + other.stat().st_size + 100
    one = in_bucket(bucket, users["alice"], corpus, REFUSED, "one")
    two = in_bucket(bucket, users["alice"], corpus, DNS_HTTP, "two")
    three = in_bucket(bucket, users["alice"], corpus, REFUSED, "three")
    assert frame(alice_client, one, 1).status_code == 200
    assert frame(alice_client, two, 1).status_code == 200
    assert frame(alice_client, one, 2).status_code == 200  # one is now the most recent
    assert frame(alice_client, three, 1).status_code == 200  # room for it: two goes
    assert entries(two) == [] and len(entries(one)) == 1 and len(entries(three)) == 1
    cached = sum(p.stat().st_size for p in local_copy.root().rglob("*")
                 if p.is_file() and not p.name.startswith("."))
    assert cached <= settings.KVIZ_FRAME_CACHE_BYTES
    assert bucket.requests("GET", key(one)) == 1
    assert frame(alice_client, two, 2).status_code == 200
    assert bucket.requests("GET", key(two)) == 2  # evicted, so fetched again


def test_a_file_larger_than_the_cache_is_copied_per_click_and_not_kept(bucket, users,
                                                                      alice_client, corpus,
                                                                      settings):
    settings.KVIZ_FRAME_CACHE_BYTES = 100
    capture = in_bucket(bucket, users["alice"], corpus, DNS_HTTP, "big")
    assert frame(alice_client, capture, 1).status_code == 200
    assert frame(alice_client, capture, 2).status_code == 200
    assert bucket.requests("GET", key(capture)) == 2
    assert entries(capture) == []
    assert not any((settings.DATA_DIR / ".copies").iterdir())


def test_a_deleted_capture_leaves_no_copy(bucket, users, alice_client, corpus):
    capture = in_bucket(bucket, users["alice"], corpus, DNS_HTTP, "gone")
    assert frame(alice_client, capture, 1).status_code == 200
    assert entries(capture)
    assert alice_client.post(f"/captures/{capture.id}/delete/").status_code == 302
    assert not (local_copy.root() / str(capture.id)).exists()
    assert bucket.client.list_objects_v2(Bucket=BUCKET, Prefix=f"captures/{capture.id}/")[
        "KeyCount"] == 0

    # Deleted through another web process: this one's copy goes at its next fetch.
    elsewhere = in_bucket(bucket, users["alice"], corpus, DNS_HTTP, "elsewhere")
    assert frame(alice_client, elsewhere, 1).status_code == 200
    Capture.objects.filter(id=elsewhere.id).delete()
    later = in_bucket(bucket, users["alice"], corpus, REFUSED, "later")
    assert frame(alice_client, later, 1).status_code == 200
    assert not (local_copy.root() / str(elsewhere.id)).exists()


def recording(bucket, owner, corpus, name: str) -> Capture:
    """A capture recording on another machine: its file is in that worker's spool only."""
    capture = in_bucket(bucket, owner, corpus, DNS_HTTP, name, status=Status.RUNNING,
                        worker_id="kviz-worker@kviz-worker-7d9f:4242",
                        started=timezone.now() - datetime.timedelta(seconds=20))
    bucket.client.delete_object(Bucket=BUCKET, Key=key(capture))
    return capture


def test_a_capture_recording_elsewhere_says_where_and_when(bucket, users, alice_client, corpus):
    capture = recording(bucket, users["alice"], corpus, "still-going")
    for answer in (alice_client.get(f"/api/captures/{capture.id}/pcap"),
                   frame(alice_client, capture, 1)):
        assert answer.status_code == 409, answer.content
        message = answer.json()["error"]
        assert "still-going is still recording on worker kviz-worker@kviz-worker-7d9f" in message
        assert "when it ends" in message
        # 60 s limit, 20 s recorded: at most 40 s more, and a few for the push.
        assert 35 <= int(answer["Retry-After"]) <= 46
    queued = in_bucket(bucket, users["alice"], corpus, DNS_HTTP, "waiting",
                       status=Status.QUEUED)
    bucket.client.delete_object(Bucket=BUCKET, Key=key(queued))
    answer = alice_client.get(f"/api/captures/{queued.id}/pcap")
    assert answer.status_code == 409
    assert "has not started recording yet" in answer.json()["error"]


def test_on_the_workers_machine_the_spool_is_read(bucket, users, alice_client, corpus):
    capture = recording(bucket, users["alice"], corpus, "here")
    spool = local_copy.storage.spool_path(key(capture))
    spool.parent.mkdir(parents=True)
    spool.write_bytes((corpus / DNS_HTTP).read_bytes())
    answer = alice_client.get(f"/api/captures/{capture.id}/pcap")
    assert answer.status_code == 200
    assert b"".join(answer.streaming_content) == spool.read_bytes()
    assert frame(alice_client, capture, 1).status_code == 200
    assert entries(capture) == []  # a growing file is never cached
