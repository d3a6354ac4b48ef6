"""What the workers record for /metrics: how long captures and analyses took, and how many
analyses failed.

Theory of operation. Captures and analyses end in worker processes (Celery's, or threads of the
web process without Redis), while /metrics is read from any web process: per-process counters
would each see a slice. So the events are counted where every process can read them: with
REDIS_URL, in one Redis hash per metric, updated in one MULTI/EXEC (a histogram's bucket, sum
and count move together); without it (the embedded default: one process), in this process.
captures/web/metrics.py reads them at scrape time. Histogram buckets are stored as
non-cumulative counts per bucket; the reader adds them up.

Recording never fails a capture: a Redis that is down loses the sample, and says so in the log.
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import threading
import time

from django.conf import settings

logger = logging.getLogger(__name__)

# Seconds. A capture runs from seconds to an hour (KVIZ_MAX_SECONDS); an analysis from
# milliseconds to minutes.
CAPTURE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, math.inf)
ANALYSIS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, math.inf)
HISTOGRAMS = {"capture_seconds": CAPTURE_BUCKETS, "analysis_seconds": ANALYSIS_BUCKETS}
COUNTERS = ("analysis_failures",)


def prefix() -> str:
    config = settings.CHANNEL_LAYERS.get("default", {}).get("CONFIG", {})
    return f"{config.get('prefix', 'kviz')}:metrics:"


@functools.lru_cache(maxsize=4)
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)


def redis_client():
    return _redis(settings.REDIS_URL) if settings.REDIS_URL else None


_lock = threading.Lock()
_local: dict[str, dict[str, float]] = {}  # metric -> {field: value}, without Redis


def _add(metric: str, increments: dict[str, float]) -> None:
    try:
        client = redis_client()
        if client is None:
            with _lock:
                fields = _local.setdefault(metric, {})
                for field, amount in increments.items():
                    fields[field] = fields.get(field, 0) + amount
            return
        with client.pipeline(transaction=True) as pipe:
            for field, amount in increments.items():
                pipe.hincrbyfloat(prefix() + metric, field, amount)
            pipe.execute()
    except Exception:
        logger.warning("could not record %s for /metrics", metric, exc_info=True)


def observe(metric: str, label: str, seconds: float) -> None:
    """One sample of histogram `metric` for `label` (a target kind)."""
    buckets = HISTOGRAMS[metric]
    index = bisect.bisect_left(buckets, max(0.0, seconds))
    _add(metric, {f"{label}|{index}": 1, f"{label}|sum": seconds, f"{label}|count": 1})


def count(metric: str, label: str) -> None:
    _add(metric, {label: 1})


def read(metric: str) -> dict[str, float]:
    """The stored fields of `metric` ({} when nothing was recorded)."""
    client = redis_client()
    if client is None:
        with _lock:
            return dict(_local.get(metric, {}))
    return {key.decode(): float(value)
            for key, value in client.hgetall(prefix() + metric).items()}


def histogram(metric: str) -> dict[str, tuple[list[tuple[float, float]], float, float]]:
    """{label: ([(upper bound, cumulative count)], sum, count)} from what `read` finds."""
    buckets = HISTOGRAMS[metric]
    by_label: dict[str, dict[str, float]] = {}
    for field, value in read(metric).items():
        label, _, part = field.rpartition("|")
        by_label.setdefault(label, {})[part] = value
    found = {}
    for label, parts in sorted(by_label.items()):
        running, cumulative = 0.0, []
        for index, bound in enumerate(buckets):
            running += parts.get(str(index), 0)
            cumulative.append((bound, running))
        found[label] = (cumulative, parts.get("sum", 0.0), parts.get("count", running))
    return found


def reset() -> None:
    """Forget what was recorded (tests)."""
    client = redis_client()
    if client is None:
        with _lock:
            _local.clear()
        return
    client.delete(*(prefix() + metric for metric in (*HISTOGRAMS, *COUNTERS)))


# -- where captures and analyses end (captures/jobs/runner.py) ---------------------------------


def timed_run(run):
    """Wraps runner.run: a capture that ends (its run returns a status) records how long it
    took, from its row's start to its finish (the analysis included)."""

    @functools.wraps(run)
    def wrapper(capture_id, *args, **kwargs):
        status = run(capture_id, *args, **kwargs)
        if status is not None:
            from django.db import connection

            from captures.models import Capture

            # The runner may have let its connection go; leave it as it was found.
            was_closed = connection.connection is None
            try:
                row = Capture.objects.filter(id=capture_id).values(
                    "target_kind", "started", "finished").first()
                if row and row["started"] and row["finished"]:
                    observe("capture_seconds", row["target_kind"],
                            (row["finished"] - row["started"]).total_seconds())
            except Exception:
                logger.warning("could not record capture %s for /metrics", capture_id,
                               exc_info=True)
            finally:
                if was_closed:
                    connection.close()
        return status

    return wrapper


def timed_analysis(analyse):
    """Wraps runner.analyse: how long each analysis took, and which failed."""

    @functools.wraps(analyse)
    def wrapper(capture, *args, **kwargs):
        started = time.monotonic()
        kind = getattr(capture, "target_kind", "") or "unknown"
        try:
            result = analyse(capture, *args, **kwargs)
        except Exception:
            observe("analysis_seconds", kind, time.monotonic() - started)
            count("analysis_failures", kind)
            raise
        observe("analysis_seconds", kind, time.monotonic() - started)
        return result

    return wrapper
