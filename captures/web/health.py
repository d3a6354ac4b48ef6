"""Probes for container runtimes and load balancers: `/healthz` and `/readyz`.

- `/healthz`: the process answers. It touches nothing else, so a database outage never makes
  an orchestrator restart web processes that would come back to the same outage.
- `/readyz`: this process can serve: the database answers a query, Redis answers PING (when
  kviz runs with Redis), and the data directory takes a file. 503 names what is not ready.

Both are anonymous, so an answer holds only a check's name and a reason from a short fixed
list ("connection refused", "timed out", ...), never an exception's text: that would carry host
names, user names, paths. The full error goes to the log. Each check is bounded by a timeout
(the database's connect_timeout, see kviz/settings.py), so a probe stays cheap when a service
hangs.

`ProbeMiddleware` answers both paths first in the middleware stack: a kubelet probes a pod by
its IP over plain HTTP, which ALLOWED_HOSTS and the HTTPS redirect would otherwise refuse, and
a probe needs no session, CSRF or CSP. The routes in captures/web/urls.py name the same views.
"""

from __future__ import annotations

import errno
import logging
import tempfile

from django.conf import settings
from django.db import connections
from django.http import HttpResponseNotAllowed, JsonResponse

logger = logging.getLogger(__name__)

REDIS_TIMEOUT = 2.0  # seconds, for connecting and for the answer to PING

# Phrases from a driver's message (psycopg, redis-py, sqlite3), mapped to the reason an answer
# may show. Matched lowercase, first hit wins; anything else is named by its exception class.
_REASONS = (
    ("connection refused", "connection refused"),
    ("timeout", "timed out"),
    ("timed out", "timed out"),
    ("could not translate host name", "unknown host"),
    ("name or service not known", "unknown host"),
    ("temporary failure in name resolution", "unknown host"),
    ("no route to host", "unreachable"),
    ("network is unreachable", "unreachable"),
    ("authentication failed", "authentication failed"),
    ("authentication required", "authentication failed"),
    ("invalid password", "authentication failed"),
    ("wrongpass", "authentication failed"),
    ("does not exist", "database does not exist"),
    ("too many connections", "too many connections"),
    ("the database system is starting up", "starting up"),
    ("the database system is shutting down", "shutting down"),
    ("unable to open database file", "cannot open the database file"),
)
_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
    errno.ENOENT: "missing",
    errno.ENOTDIR: "not a directory",
    errno.EACCES: "not writable",
    errno.EPERM: "not writable",
    errno.EROFS: "read-only",
    errno.ENOSPC: "full",
    errno.EDQUOT: "full",
}


def reason(exc: BaseException) -> str:
    """What an answer may say about `exc`: an errno's meaning or a known phrase, never its
    text. Drivers wrap the OSError that says most (redis-py keeps it as the context)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _ERRNO_REASONS:
            return _ERRNO_REASONS[seen.errno]
        if isinstance(seen, TimeoutError):
            return "timed out"
        seen = seen.__cause__ or seen.__context__
    text = str(exc).lower()
    for phrase, said in _REASONS:
        if phrase in text:
            return said
    return type(exc).__name__


def check_database() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_redis() -> None:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=REDIS_TIMEOUT,
                                  socket_timeout=REDIS_TIMEOUT, retry=None)
    try:
        client.ping()
    finally:
        client.close()


def check_data_dir() -> None:
    # A file really written (and removed at once) tells what a mode bit cannot: a read-only
    # mount, a full volume, a uid that does not own a volume made by an older image.
    with tempfile.NamedTemporaryFile(dir=settings.DATA_DIR, prefix=".readyz-") as probe:
        probe.write(b"ok")
        probe.flush()


def checks() -> dict:
    """Each check's name and what it does; Redis only where kviz runs with it."""
    found = {"database": check_database}
    if settings.REDIS_URL:
        found["redis"] = check_redis
    found["data"] = check_data_dir
    from captures.adapters import storage

    if not storage.is_local():  # KVIZ_STORAGE=s3: the bucket answers
        found["storage"] = storage.check_reachable
    return found


def _no_cache(response: JsonResponse) -> JsonResponse:
    response["Cache-Control"] = "no-store"
    return response


def healthz(request):
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    return _no_cache(JsonResponse({"status": "ok"}))


def readyz(request):
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    results = {}
    for name, check in checks().items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # every failure is an answer here, never a 500
            results[name] = reason(exc)
            logger.warning("readyz: %s is not ready: %s", name, exc)
            if name == "database":
                # A broken connection would fail the next probe too, even once the database
                # is back: start the next one afresh.
                connections["default"].close_if_unusable_or_obsolete()
    not_ready = [name for name, said in results.items() if said != "ok"]
    if not_ready:
        return _no_cache(JsonResponse({"status": "not ready", "not_ready": not_ready,
                                       "checks": results}, status=503))
    return _no_cache(JsonResponse({"status": "ready", "checks": results}))


PROBES = {"/healthz": healthz, "/readyz": readyz}


class ProbeMiddleware:
    """Answers the probe paths before host validation, the HTTPS redirect and sessions."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        probe = PROBES.get(request.path_info)
        if probe is not None:
            return probe(request)
        return self.get_response(request)
