"""Captures kept in an S3 bucket (KVIZ_STORAGE=s3): a web server and a worker, each with a data
directory of its own, share nothing but PostgreSQL, Redis and the bucket, served by moto's
standalone S3 server on loopback (the accepted stand-in for S3 or MinIO).

An upload is stored, analysed and downloaded byte for byte (and by ranges) with the web
process' data directory empty of capture files; a live capture on loopback ends in the bucket;
deleting a capture deletes its objects."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.support.s3 import BUCKET, CREDENTIALS, moto_s3
from tests.support.services import (
    QUEUE,
    WebServer,
    Worker,
    free_port,
    service_env,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")
pytest.importorskip("storages")

CORPUS_FILE = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"
TLS_SAMPLE = "tls/zeek_tls12-sni-alpn-http11-decryptable"
S3_QUEUE = f"{QUEUE}-s3"  # the suite's own worker never takes these tasks


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto's S3 server on a loopback port, with an empty bucket."""
    with moto_s3(tmp_path_factory.mktemp("moto")) as server:
        yield server.url, server.client


@pytest.fixture
def s3_services(s3_server, service_settings, test_database_url, tmp_path):
    """A worker and a web server on their own queues, each with its own data directory."""
    url, client = s3_server
    storage_env = {"KVIZ_STORAGE": "s3", "KVIZ_S3_BUCKET": BUCKET, "KVIZ_S3_ENDPOINT_URL": url,
                   "KVIZ_S3_ADDRESSING_STYLE": "path", "KVIZ_QUEUE": S3_QUEUE,
                   "KVIZ_ANALYSIS_QUEUE": f"{S3_QUEUE}-analysis", **CREDENTIALS}
    web_dir, worker_dir = tmp_path / "web-data", tmp_path / "worker-data"
    web_dir.mkdir()
    worker_dir.mkdir()
    worker = Worker(service_env(test_database_url, worker_dir, **storage_env),
                    tmp_path / "worker.log", name=f"s3-{uuid.uuid4().hex[:6]}")
    web = WebServer(service_env(test_database_url, web_dir, **storage_env), tmp_path / "web.log")
    worker.start()
    try:
        web.start()
        try:
            yield {"web": web, "web_dir": web_dir, "worker_dir": worker_dir, "s3": client}
        finally:
            web.stop()
    finally:
        worker.stop()


def _token(username: str) -> str:
    out = io.StringIO()
    call_command("kviz", "token", username, stdout=out)
    return out.getvalue().strip()


def _call(url: str, token: str, body: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=body, headers={
        "Authorization": f"Bearer {token}", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _multipart(name: str, data: bytes | list[bytes],
               keylog: bytes | None = None) -> tuple[bytes, str]:
    boundary = "kvizs3boundary"

    def part(field: str, filename: str, content: bytes) -> bytes:
        return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                ).encode() + content + b"\r\n"

    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
            ).encode()
    for index, each in enumerate(data if isinstance(data, list) else [data]):
        body += part("file", f"{name}-{index}.pcap", each)
    if keylog is not None:
        body += part("keylog", "sslkeys.log", keylog)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _objects(client) -> list[str]:
    listed = client.list_objects_v2(Bucket=BUCKET)
    return sorted(item["Key"] for item in listed.get("Contents") or [])


def _capture_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and p.suffix in (".pcap", ".pcapng")]


def _finished(base: str, token: str, capture_id: str, timeout: float = 60) -> dict:
    def done():
        status, _h, body = _call(f"{base}/api/captures/{capture_id}/", token)
        doc = json.loads(body) if status == 200 else {}
        return doc if doc.get("status") in ("completed", "failed", "interrupted") else None

    return wait_for(done, timeout, interval=0.3, what="the capture to finish")


def test_it_uploads_analyses_and_downloads_through_the_bucket(s3_services, users, corpus):
    web, s3 = s3_services["web"], s3_services["s3"]
    token = _token("alice")
    data = (corpus / CORPUS_FILE).read_bytes()
    body, content_type = _multipart("s3-upload", data)
    status, _h, answer = _call(f"{web.url}/api/captures/", token, body,
                               {"Content-Type": content_type})
    assert status == 201, answer
    capture_id = json.loads(answer)["id"]

    done = _finished(web.url, token, capture_id)
    assert done["status"] == "completed", done
    assert done["counters"]["packets"] > 0
    keys = _objects(s3)
    assert f"captures/{capture_id}/capture.pcap" in keys or any(
        k.startswith(f"captures/{capture_id}/") and k.endswith(".pcap") for k in keys), keys
    assert f"captures/{capture_id}/analysis.json" in keys, keys
    # The web process kept no capture file, and the worker's spool is gone too.
    assert _capture_files(s3_services["web_dir"]) == []
    assert _capture_files(s3_services["worker_dir"]) == []

    status, headers, whole = _call(f"{web.url}/api/captures/{capture_id}/pcap", token)
    assert status == 200
    assert hashlib.sha256(whole).digest() == hashlib.sha256(data).digest()
    assert headers["Accept-Ranges"] == "bytes"
    assert int(headers["Content-Length"]) == len(data)

    status, headers, part = _call(f"{web.url}/api/captures/{capture_id}/pcap", token,
                                  headers={"Range": "bytes=100-1099"})
    assert status == 206
    assert part == data[100:1100]
    assert headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
    status, headers, tail = _call(f"{web.url}/api/captures/{capture_id}/pcap", token,
                                  headers={"Range": "bytes=-24"})
    assert (status, tail) == (206, data[-24:])
    status, headers, _ = _call(f"{web.url}/api/captures/{capture_id}/pcap", token,
                               headers={"Range": f"bytes={len(data)}-"})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(data)}"

    status, _h, analysis = _call(f"{web.url}/api/captures/{capture_id}/analysis", token)
    assert status == 200
    assert b"kviz-copy" not in analysis and b".copies" not in analysis  # as the local one
    assert json.loads(analysis)["capture"]["packets"] == done["counters"]["packets"]
    status, _h, frame = _call(f"{web.url}/api/captures/{capture_id}/frames/0/1/", token)
    assert status == 200, frame
    # The file tshark read is the web's bounded frame cache (captures/jobs/local_copy.py),
    # byte for byte the object; no capture file elsewhere.
    cached = s3_services["web_dir"] / "frame-cache" / capture_id
    [entry] = [p for p in cached.iterdir() if not p.name.startswith(".")]
    assert entry.read_bytes() == data
    assert _capture_files(s3_services["web_dir"]) == []

    status, _h, ready = _call(f"{web.url}/readyz", token)
    assert status == 200, ready
    assert json.loads(ready)["checks"]["storage"] == "ok"

    status, _h, answer = _delete(f"{web.url}/api/captures/{capture_id}/", token)
    assert status in (200, 204), answer
    assert [k for k in _objects(s3) if k.startswith(f"captures/{capture_id}/")] == []
    assert not cached.exists()  # the cached copy goes with the capture


def _delete(url: str, token: str):
    request = urllib.request.Request(url, method="DELETE",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_a_live_capture_on_loopback_ends_in_the_bucket(s3_services, users):
    web, s3 = s3_services["web"], s3_services["s3"]
    token = _token("alice")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = {"name": "s3-live", "target": {"kind": "local", "interface": "lo"},
            "filter": f"udp and dst port {port}"}
    status, _h, answer = _call(f"{web.url}/api/captures/", token, json.dumps(spec).encode(),
                               {"Content-Type": "application/json"})
    assert status == 201, answer
    capture_id = json.loads(answer)["id"]

    def running():
        _s, _h, body = _call(f"{web.url}/api/captures/{capture_id}/", token)
        return json.loads(body)["counters"]["bytes"] > 0

    wait_for(running, 20, interval=0.2, what="the capture to run")
    # While it records, the packets are in the worker's spool, not yet in the bucket.
    assert _capture_files(s3_services["worker_dir"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for index in range(20):
            sender.sendto(f"kviz s3 {index}".encode(), ("127.0.0.1", port))
            time.sleep(0.02)
    wait_for(lambda: json.loads(_call(f"{web.url}/api/captures/{capture_id}/", token)[2])
             ["counters"]["packets"] >= 20, 15, interval=0.2, what="20 packets")
    status, _h, _b = _call(f"{web.url}/api/captures/{capture_id}/stop/", token, b"")
    assert status == 202, _b

    done = _finished(web.url, token, capture_id)
    assert done["status"] == "completed", done
    keys = [k for k in _objects(s3) if k.startswith(f"captures/{capture_id}/")]
    assert f"captures/{capture_id}/capture.pcapng" in keys, keys
    assert f"captures/{capture_id}/analysis.json" in keys, keys
    assert _capture_files(s3_services["worker_dir"]) == []
    assert _capture_files(s3_services["web_dir"]) == []

    stored = s3.get_object(Bucket=BUCKET, Key=f"captures/{capture_id}/capture.pcapng")
    data = stored["Body"].read()
    status, _h, whole = _call(f"{web.url}/api/captures/{capture_id}/pcap", token)
    assert status == 200 and whole == data
    analysis = json.loads(_call(f"{web.url}/api/captures/{capture_id}/analysis", token)[2])
    assert analysis["capture"]["packets"] == done["counters"]["packets"] >= 20


def test_the_cleanup_sweeps_objects_of_captures_without_a_row(s3_server, settings,
                                                              monkeypatch, tmp_path):
    from captures.adapters import storage
    from captures.jobs import retention

    url, client = s3_server
    settings.DATA_DIR = tmp_path / "data"  # the sweep looks at the local spool too
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    settings.STORAGES = {**settings.STORAGES, "captures": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": BUCKET, "endpoint_url": url, "addressing_style": "path",
                    "file_overwrite": True, "default_acl": None}}}
    assert not storage.is_local()
    orphan = str(uuid.uuid4())
    for key in (f"captures/{orphan}/capture.pcap", f"captures/{orphan}/analysis.json"):
        client.put_object(Bucket=BUCKET, Key=key, Body=b"x")

    assert orphan not in retention.sweep_orphans(now=time.time())  # too new: an upload's
    assert orphan in retention.sweep_orphans(now=time.time() + 2 * retention.ORPHAN_GRACE)
    assert [k for k in _objects(client) if orphan in k] == []


def test_a_key_log_reaches_the_worker_through_the_bucket(s3_services, users, corpus):
    web, s3 = s3_services["web"], s3_services["s3"]
    token = _token("alice")
    pcap, keylog = corpus / f"{TLS_SAMPLE}.pcap", corpus / f"{TLS_SAMPLE}.keylog"
    body, content_type = _multipart("s3-keys", pcap.read_bytes(), keylog.read_bytes())
    status, _h, answer = _call(f"{web.url}/api/captures/", token, body,
                               {"Content-Type": content_type})
    assert status == 201, answer
    capture_id = json.loads(answer)["id"]
    done = _finished(web.url, token, capture_id)
    assert done["status"] == "completed", done
    assert done["keylog"] is True
    assert f"keys/{capture_id}/keylog" in _objects(s3)
    [request] = json.loads(_call(f"{web.url}/api/captures/{capture_id}/analysis", token)[2])[
        "http"]
    assert request["decrypted"] is True

    status, _h, answer = _delete(f"{web.url}/api/captures/{capture_id}/keylog", token)
    assert status in (200, 202, 204), answer
    assert f"keys/{capture_id}/keylog" not in _objects(s3)
    # Analysed again without it, by the worker (whose copy goes too).
    def undecrypted():
        doc = json.loads(_call(f"{web.url}/api/captures/{capture_id}/analysis", token)[2])
        return not any(r.get("decrypted") for r in doc["http"])

    wait_for(undecrypted, 60, interval=0.5, what="the analysis without the key log")
    assert not (s3_services["worker_dir"] / "keys" / capture_id / "keylog").exists()


def test_several_files_merge_and_bundle_from_the_bucket(s3_services, users, corpus):
    import zipfile

    web = s3_services["web"]
    token = _token("alice")
    first = (corpus / CORPUS_FILE).read_bytes()
    second = (corpus / f"{TLS_SAMPLE}.pcap").read_bytes()
    body, content_type = _multipart("s3-two", [first, second])
    status, _h, answer = _call(f"{web.url}/api/captures/", token, body,
                               {"Content-Type": content_type})
    assert status == 201, answer
    capture_id = json.loads(answer)["id"]
    assert _finished(web.url, token, capture_id)["status"] == "completed"

    base = f"{web.url}/api/captures/{capture_id}"
    assert _call(f"{base}/pcap?file=1", token)[2] == second
    status, _headers, merged = _call(f"{base}/pcap", token)
    assert status == 200
    assert merged[:4] == b"\x0a\x0d\x0d\x0a"  # a pcapng section header
    assert len(merged) > len(first) + len(second) - 48
    status, _h, bundle = _call(f"{base}/bundle", token)
    assert status == 200, bundle[:200]
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        stored = sorted(len(archive.read(n)) for n in archive.namelist()
                        if n.endswith(".pcap"))
    assert stored == sorted([len(first), len(second)])
    assert _capture_files(s3_services["web_dir"]) == []
    assert not list((s3_services["web_dir"] / ".copies").iterdir()), "copies left behind"


def test_readyz_says_when_the_bucket_cannot_be_reached(settings, monkeypatch, client):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    settings.STORAGES = {**settings.STORAGES, "captures": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": BUCKET, "endpoint_url": f"http://127.0.0.1:{free_port()}",
                    "addressing_style": "path"}}}
    answer = client.get("/readyz")
    assert answer.status_code == 503
    doc = answer.json()
    assert "storage" in doc["not_ready"]
    assert doc["checks"]["storage"] == "connection refused"
