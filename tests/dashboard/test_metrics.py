"""Prometheus /metrics: readable with the token or from an allowed network, else 403; counts what
happened (captures by status, bytes, queue depth, live viewers, durations and failures recorded
by a real worker in Redis); says when the database or Redis did not answer. On a real
kviz.serve set up as deployed (plain HTTP by IP, HTTPS-only behind a proxy) and in-process."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.files.uploadedfile import SimpleUploadedFile
from prometheus_client.parser import text_string_to_metric_families

from captures.analysis import CaptureError
from captures.jobs import observe, runner
from captures.models import Capture, Status, TargetKind

from .conftest import RUN_TAG, wait_for
from .test_health import DEPLOYED, ProbedServer, refused_port  # noqa: F401 - a fixture

pytestmark = [pytest.mark.timeout(120)]

TOKEN = "metrics-token-for-tests-0123456789"


def samples(text: str) -> dict:
    """{(name, ((label, value), ...)): value} of an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(client, **headers):
    return client.get("/metrics", **headers)


@pytest.fixture
def redis_metrics(service_settings, settings):
    settings.KVIZ_METRICS_TOKEN = TOKEN
    settings.CELERY_TASK_DEFAULT_QUEUE = f"{RUN_TAG}-metrics-queue"
    observe.reset()
    client = observe.redis_client()
    yield client
    observe.reset()
    client.delete(settings.CELERY_TASK_DEFAULT_QUEUE)


@pytest.mark.django_db(transaction=True)
def test_it_is_readable_only_with_the_token_or_from_an_allowed_network(client, settings):
    import ipaddress

    settings.KVIZ_METRICS_TOKEN = TOKEN
    outside = {"REMOTE_ADDR": "198.51.100.7"}
    refused = scrape(client, **outside)
    assert refused.status_code == 403
    assert "metrics token" in refused.json()["error"]
    assert scrape(client, HTTP_AUTHORIZATION="Bearer wrong", **outside).status_code == 403
    allowed = scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **outside)
    assert allowed.status_code == 200
    assert allowed["Content-Type"].startswith("text/plain")
    assert scrape(client).status_code == 200  # loopback, allowed by default
    settings.KVIZ_METRICS_ALLOW = [ipaddress.ip_network("198.51.100.0/24")]
    assert scrape(client, **outside).status_code == 200
    assert scrape(client).status_code == 403
    settings.KVIZ_METRICS_TOKEN = ""  # no token set: a Bearer header opens nothing
    assert scrape(client, HTTP_AUTHORIZATION="Bearer ", REMOTE_ADDR="203.0.113.1"
                  ).status_code == 403
    assert client.post("/metrics").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_it_counts_captures_bytes_queues_and_viewers(client, users, redis_metrics, settings):
    alice = users["alice"]
    for index, status in enumerate([Status.QUEUED, Status.RUNNING, Status.COMPLETED,
                                    Status.COMPLETED, Status.FAILED]):
        Capture.objects.create(name=f"c{index}", owner=alice, target_kind=TargetKind.LAB,
                               target_spec={}, status=status, limit_seconds=1,
                               limit_packets=1, limit_bytes=1, bytes=1000 * (index + 1),
                               pinned=index == 2)
    redis_metrics.rpush(settings.CELERY_TASK_DEFAULT_QUEUE, b"a", b"b", b"c")
    # Sockets other tests of this run (or a killed run whose pid this one reuses) left in the
    # layer's groups until they expire are counted too: this test's two come on top of them.
    before = samples(scrape(client).content.decode())[("kviz_live_viewers", ())]
    layer = get_channel_layer()
    group = f"capture.{uuid.uuid4()}"
    channels = [async_to_sync(layer.new_channel)() for _ in range(2)]
    for channel in channels:
        async_to_sync(layer.group_add)(group, channel)
    try:
        found = samples(scrape(client).content.decode())
    finally:
        for channel in channels:
            async_to_sync(layer.group_discard)(group, channel)
    assert found[("kviz_captures", (("status", "queued"),))] == 1
    assert found[("kviz_captures", (("status", "completed"),))] == 2
    assert found[("kviz_captures", (("status", "interrupted"),))] == 0
    assert found[("kviz_stored_bytes", ())] == 15000
    assert found[("kviz_pinned_captures", ())] == 1
    assert found[("kviz_queue_depth", (("queue", settings.CELERY_TASK_DEFAULT_QUEUE),))] == 3
    assert found[("kviz_live_viewers", ())] == before + 2
    assert found[("kviz_metrics_source_up", (("source", "database"),))] == 1
    assert found[("kviz_metrics_source_up", (("source", "redis"),))] == 1
    assert samples(scrape(client).content.decode())[("kviz_live_viewers", ())] == before


@pytest.mark.django_db(transaction=True)
def test_it_counts_durations_and_failures_recorded_by_the_worker(worker, alice_client, client,
                                                                 corpus, redis_metrics, users):
    path = corpus / "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"
    answer = alice_client.post("/api/captures/", {"name": "timed", "file": SimpleUploadedFile(
        "x.pcap", path.read_bytes())})
    assert answer.status_code == 201, answer.content
    wait_for(lambda: Capture.objects.get(id=answer.json()["id"]).status == Status.COMPLETED,
             60, what="the analysis")
    # An analysis that fails (here: no file was stored), wherever it runs.
    empty = Capture.objects.create(name="empty", owner=users["alice"],
                                   target_kind=TargetKind.LOCAL, target_spec={},
                                   status=Status.INTERRUPTED, limit_seconds=1,
                                   limit_packets=1, limit_bytes=1)
    with pytest.raises(CaptureError):
        runner.analyse(empty)

    found = wait_for(lambda: (lambda s: s if ("kviz_capture_duration_seconds_count",
                                              (("kind", "upload"),)) in s else None)(
        samples(scrape(client).content.decode())), 10, what="the capture's duration")
    upload = (("kind", "upload"),)
    assert found[("kviz_capture_duration_seconds_count", upload)] == 1
    assert found[("kviz_analysis_duration_seconds_count", upload)] == 1
    assert 0 < found[("kviz_analysis_duration_seconds_sum", upload)] < 60
    assert found[("kviz_analysis_duration_seconds_bucket", (("kind", "upload"),
                                                            ("le", "+Inf")))] == 1
    assert found[("kviz_analysis_failures_total", (("kind", "local"),))] == 1
    assert ("kviz_analysis_failures_total", upload) not in found
    assert found[("kviz_analysis_duration_seconds_count", (("kind", "local"),))] == 1


def fetch(server, token: str | None = TOKEN) -> tuple[int, str]:
    request = urllib.request.Request(f"{server.url}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(env: dict) -> ProbedServer:
        server = ProbedServer({**env, **DEPLOYED, "KVIZ_METRICS_TOKEN": TOKEN,
                               "KVIZ_METRICS_ALLOW": "192.0.2.0/24"},
                              tmp_path / f"daphne-{len(started)}.log")
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.django_db(transaction=True)
def test_a_deployed_server_answers_by_ip_over_plain_http_and_says_what_is_down(
        serve, worker_env, refused_port):  # noqa: F811 - the fixture
    server = serve(worker_env)
    status, text = fetch(server)
    assert status == 200, text
    found = samples(text)
    assert found[("kviz_metrics_source_up", (("source", "redis"),))] == 1
    assert ("kviz_captures", (("status", "queued"),)) in found
    status, text = fetch(server, token=None)  # loopback, but not in KVIZ_METRICS_ALLOW here
    assert status == 403 and "metrics token" in text

    down = serve({**worker_env, "REDIS_URL": f"redis://127.0.0.1:{refused_port}/0"})
    status, text = fetch(down)
    assert status == 200, text
    found = samples(text)
    assert found[("kviz_metrics_source_up", (("source", "redis"),))] == 0
    assert found[("kviz_metrics_source_up", (("source", "database"),))] == 1
    assert ("kviz_queue_depth", (("queue", "kviz"),)) not in found

    nodb = serve({**worker_env, "DATABASE_URL": f"postgres://kviz@127.0.0.1:{refused_port}/x"})
    status, text = fetch(nodb)
    assert status == 200, text
    found = samples(text)
    assert found[("kviz_metrics_source_up", (("source", "database"),))] == 0
    assert not any(name == "kviz_captures" for name, _labels in found)


def test_a_bad_network_in_the_allow_list_stops_the_start(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from kviz.settings import envnetworks

    monkeypatch.setenv("KVIZ_METRICS_ALLOW", "10.0.0.0/8, 192.0.2.1, fd00::/8")
    assert [str(n) for n in envnetworks("KVIZ_METRICS_ALLOW", "")] == [
        "10.0.0.0/8", "192.0.2.1/32", "fd00::/8"]
    monkeypatch.setenv("KVIZ_METRICS_ALLOW", "10.0.0.0/33")
    with pytest.raises(ImproperlyConfigured, match="KVIZ_METRICS_ALLOW"):
        envnetworks("KVIZ_METRICS_ALLOW", "")


def test_the_web_pods_are_scraped_and_probed():
    import yaml

    from tests.support.services import ROOT

    [web] = [doc for doc in yaml.safe_load_all((ROOT / "deploy/kubernetes/web.yaml").read_text())
             if doc and doc["kind"] == "Deployment"]
    template = web["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics"}
    [container] = template["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    config = yaml.safe_load((ROOT / "deploy/kubernetes/configmap.yaml").read_text())["data"]
    assert "KVIZ_METRICS_ALLOW" in config and "KVIZ_RETENTION_DAYS" in config
