"""Prometheus `/metrics`: what the portal holds and does, gathered when scraped.

Theory of operation. kviz runs as several processes (web replicas, Celery workers), so nothing
here is a per-process counter that one scrape of one web pod would see a slice of. Each scrape
reads the shared state instead:

    kviz_captures{status}                 rows by status (PostgreSQL)
    kviz_stored_bytes                     packets stored, all captures together
    kviz_pinned_captures                  captures kept past retention
    kviz_queue_depth{queue}               messages waiting per Celery queue (Redis list lengths)
    kviz_live_viewers                     sockets watching a capture (channel-layer groups)
    kviz_capture_duration_seconds{kind}   histogram: start to finish of each capture that ended
    kviz_analysis_duration_seconds{kind}  histogram: each analysis
    kviz_analysis_failures_total{kind}    analyses that failed
    kviz_metrics_source_up{source}        1 when the database / Redis answered this scrape

The histograms and the failure counter are recorded by the workers in Redis as captures and
analyses end (captures/jobs/observe.py) and summed here. A source that does not answer leaves
its metrics out and says so in kviz_metrics_source_up; the scrape itself still answers.

Who may read it: a request with `Authorization: Bearer <KVIZ_METRICS_TOKEN>`, or one from an
address in KVIZ_METRICS_ALLOW (loopback by default). Anyone else gets 403 and a JSON error.
`MetricsMiddleware` answers the path before host validation and the HTTPS redirect, as the
probes do (captures/web/health.py): Prometheus scrapes a pod by its IP over plain HTTP.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time

from django.conf import settings
from django.db import connections
from django.db.models import Count, Sum
from django.http import HttpResponse, HttpResponseNotAllowed, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.utils import floatToGoString

from captures.access.throttle import client_address
from captures.jobs import observe
from captures.models import Capture, Status

logger = logging.getLogger(__name__)

# kombu's Redis transport keeps a queue's messages of priority p > 0 in "<queue>\x06\x16<p>".
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
LAYER_GROUP_EXPIRY = 86400  # channels_redis' default: members older than this are gone


def queue_names() -> list[str]:
    """Every Celery queue kviz sends to: the default, the routes' and any KVIZ_*_QUEUE."""
    names = {settings.CELERY_TASK_DEFAULT_QUEUE}
    for route in (getattr(settings, "CELERY_TASK_ROUTES", None) or {}).values():
        if isinstance(route, dict) and route.get("queue"):
            names.add(route["queue"])
    for queue in getattr(settings, "CELERY_TASK_QUEUES", None) or ():
        names.add(getattr(queue, "name", queue))
    for name in dir(settings):
        if name.startswith("KVIZ_") and name.endswith("_QUEUE"):
            value = getattr(settings, name)
            if isinstance(value, str) and value:
                names.add(value)
    return sorted(str(n) for n in names)


def _layer_prefix() -> str:
    return settings.CHANNEL_LAYERS.get("default", {}).get("CONFIG", {}).get("prefix", "asgi")


def live_viewers(client) -> int:
    """Sockets in the capture groups (`capture.<id>`: an owner's live view, a share page)."""
    if client is None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        groups = getattr(layer, "groups", {}) or {}
        return sum(len(members) for name, members in groups.items()
                   if name.startswith("capture."))
    oldest = int(time.time()) - LAYER_GROUP_EXPIRY
    total = 0
    for key in client.scan_iter(match=f"{_layer_prefix()}:group:capture.*", count=500):
        total += client.zcount(key, oldest, "+inf")
    return total


def queue_depth(client, queue: str) -> int:
    keys = [queue, *(f"{queue}{PRIORITY_SEPARATOR}{p}" for p in PRIORITY_STEPS)]
    return sum(client.llen(key) for key in keys)


class KvizCollector:
    """Reads the shared state at scrape time (see the module's docstring)."""

    def collect(self):
        up = GaugeMetricFamily("kviz_metrics_source_up",
                               "1 when the source answered this scrape, else 0",
                               labels=["source"])
        try:
            yield from self._database()
            up.add_metric(["database"], 1)
        except Exception:
            logger.warning("metrics: the database did not answer", exc_info=True)
            connections["default"].close_if_unusable_or_obsolete()
            up.add_metric(["database"], 0)
        if settings.REDIS_URL:
            try:
                yield from self._redis(observe.redis_client())
                up.add_metric(["redis"], 1)
            except Exception:
                logger.warning("metrics: Redis did not answer", exc_info=True)
                up.add_metric(["redis"], 0)
        else:
            yield from self._redis(None)
        yield up

    def _database(self):
        counts = {row["status"]: row["n"] for row in
                  Capture.objects.order_by().values("status").annotate(n=Count("id"))}
        by_status = GaugeMetricFamily("kviz_captures", "Captures by status",
                                      labels=["status"])
        for status in Status.values:
            by_status.add_metric([status], counts.get(status, 0))
        totals = Capture.objects.aggregate(stored=Sum("bytes"))
        pinned = Capture.objects.filter(pinned=True).count()
        yield by_status
        yield GaugeMetricFamily("kviz_stored_bytes",
                                "Bytes of packets stored, all captures together",
                                value=totals["stored"] or 0)
        yield GaugeMetricFamily("kviz_pinned_captures",
                                "Captures pinned: kept past the retention period",
                                value=pinned)

    def _redis(self, client):
        """Everything that lives in Redis (or, without it, in this one process)."""
        metrics = []
        if client is not None:
            depth = GaugeMetricFamily("kviz_queue_depth",
                                      "Messages waiting in each Celery queue",
                                      labels=["queue"])
            for queue in queue_names():
                depth.add_metric([queue], queue_depth(client, queue))
            metrics.append(depth)
        metrics.append(GaugeMetricFamily("kviz_live_viewers",
                                         "Open sockets watching a capture (live view, share)",
                                         value=live_viewers(client)))
        for metric, name, text in (
                ("capture_seconds", "kviz_capture_duration_seconds",
                 "Seconds from a capture's start to its end (its analysis included)"),
                ("analysis_seconds", "kviz_analysis_duration_seconds",
                 "Seconds each analysis took")):
            family = HistogramMetricFamily(name, text, labels=["kind"])
            # The +Inf bucket is the count.
            for kind, (buckets, total, _count) in observe.histogram(metric).items():
                family.add_metric([kind], [(floatToGoString(bound), value)
                                           for bound, value in buckets], sum_value=total)
            metrics.append(family)
        failures = CounterMetricFamily("kviz_analysis_failures",
                                       "Analyses that failed (the capture's files are kept)",
                                       labels=["kind"])
        for kind, value in sorted(observe.read("analysis_failures").items()):
            failures.add_metric([kind], value)
        metrics.append(failures)
        return metrics


def registry() -> CollectorRegistry:
    found = CollectorRegistry(auto_describe=False)
    found.register(KvizCollector())
    return found


def allowed(request) -> bool:
    """With the metrics token, or from an allowed network."""
    token = settings.KVIZ_METRICS_TOKEN
    scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "surrogatepass"), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(client_address(request).strip("[]"))
    except ValueError:
        return False
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    return any(address in network for network in settings.KVIZ_METRICS_ALLOW)


def metrics_view(request):
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    if not allowed(request):
        response = JsonResponse({"error": "metrics are readable only with the metrics token "
                                          "(Authorization: Bearer) or from an allowed network"},
                                status=403)
    else:
        response = HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response


class MetricsMiddleware:
    """Answers /metrics before host validation, the HTTPS redirect and sessions."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info == "/metrics":
            return metrics_view(request)
        return self.get_response(request)
