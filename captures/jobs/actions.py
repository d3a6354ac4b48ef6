"""What users and workers do to captures: each action validates everything first, changes state
in one transaction, and queues work only once that transaction has committed.

Views call these and translate ActionError into a 4xx; nothing here knows about HTTP.
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import shutil
import uuid
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from captures.access.tokens import new_token, token_hash
from captures.adapters import sniffer
from captures.adapters import storage as capture_storage
from captures.jobs import keylogs, live, retention
from captures.jobs.errors import ActionError
from captures.models import (
    ACTIVE,
    TERMINAL,
    Capture,
    ShareLink,
    Status,
    StoredFile,
    TargetKind,
    append_log,
)
from captures.sources import base as sources
from captures.sources import upload as uploads

logger = logging.getLogger(__name__)
MAX_FILTER_LENGTH = 1024


# How queued work leaves: captures.jobs.tasks sets this when it is imported (every process
# imports it at start: CapturesConfig.ready). Tasks call actions (reaping, orphan clean-up), so
# actions must not import tasks back; they hand over a task name and an id, nothing more.
queue: Callable[[str, object], None] | None = None


def _enqueue(task_name: str, capture_id) -> None:
    if queue is None:  # raised inside the caller's transaction: nothing is kept unqueued
        raise RuntimeError("captures.jobs.tasks is not loaded: no queue for the work")
    transaction.on_commit(lambda: queue(task_name, capture_id))


# -- validation --------------------------------------------------------------------------------


def validate_name(name) -> str:
    if not sources.is_dns1123_label(name):
        raise ActionError("name must be a DNS-1123 label: at most 63 lowercase letters, digits "
                          "and '-', starting and ending with a letter or digit")
    return name


def validate_limits(limits) -> tuple[int, int, int]:
    """(seconds, packets, bytes); what is not asked for gets the server's maximum."""
    if limits is None:
        limits = {}
    if not isinstance(limits, dict):
        raise ActionError("limits must be an object with seconds, packets and bytes")
    unknown = set(limits) - {"seconds", "packets", "bytes"}
    if unknown:
        raise ActionError(f"unknown limit {sorted(unknown)[0]!r}")
    maxima = {"seconds": settings.KVIZ_MAX_SECONDS, "packets": settings.KVIZ_MAX_PACKETS,
              "bytes": settings.KVIZ_MAX_BYTES}
    chosen = []
    for key, maximum in maxima.items():
        value = limits.get(key, maximum)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ActionError(f"limits.{key} must be a positive integer")
        if value > maximum:
            raise ActionError(f"limits.{key} may be at most {maximum}")
        chosen.append(value)
    return tuple(chosen)


def validate_filter(expression, linktype: str) -> str:
    if expression is None or expression == "":
        return ""
    if not isinstance(expression, str):
        raise ActionError("filter must be a string (a BPF expression)")
    if len(expression) > MAX_FILTER_LENGTH:
        raise ActionError(f"filter is longer than {MAX_FILTER_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in expression):
        raise ActionError("filter must be one line of printable characters")
    try:
        sniffer.compile_filter(expression, linktype)
    except sniffer.FilterError as exc:
        raise ActionError(str(exc)) from None
    return expression


# -- starting and stopping ---------------------------------------------------------------------


def start_capture(user, data) -> Capture:
    """Start a live capture from the API's JSON body (see docs/api.md)."""
    if not isinstance(data, dict):
        raise ActionError("the body must be a JSON object")
    unknown = set(data) - {"name", "target", "filter", "limits"}
    if unknown:
        raise ActionError(f"unknown field {sorted(unknown)[0]!r}")
    name = validate_name(data.get("name"))
    try:
        target = sources.resolve_target(data.get("target"), user)
    except sources.TargetError as exc:
        raise ActionError(str(exc)) from None
    seconds, packets, nbytes = validate_limits(data.get("limits"))
    bpf = validate_filter(data.get("filter"), target.linktype)
    if target.guard_filter:
        # Stored as run, so the capture's page shows what was really recorded.
        bpf = f"{target.guard_filter} and ({bpf})" if bpf else target.guard_filter
    with transaction.atomic():
        # Per-user limits (captures/jobs/retention.py): captures at once (429), quota (507).
        nbytes, refused = retention.admit_capture(user, nbytes)
        if refused:
            raise ActionError(*refused)
        capture = Capture.objects.create(
            name=name, owner=user, target_kind=target.kind, target_spec=target.spec,
            bpf_filter=bpf, limit_seconds=seconds, limit_packets=packets, limit_bytes=nbytes,
            log=append_log([], f"queued by {user.get_username()}"),
        )
        _enqueue("run_capture", capture.id)
    return capture


def upload_capture(user, name, files, metas=(), inventory=None, keylog=None) -> Capture:
    """Store uploaded pcap/pcapng files byte for byte as one capture and queue its analysis.

    `files` are taken at the same time at different places (a node, the client pod, a backend)
    and analysed together; `metas[i]` (optional, JSON: kviz.capture-meta/1) says where file i
    was taken and names its interfaces; `inventory` names the capture's IPs; `keylog` (a TLS
    key log) is kept apart from the capture (keylogs.py). Everything is checked before anything
    is kept: one bad file refuses the whole upload."""
    name = validate_name(name)
    files = [f for f in files if f is not None]
    if not files:
        raise ActionError("send the capture as multipart/form-data in a field named `file`")
    if len(files) > settings.KVIZ_MAX_CAPTURE_FILES:
        raise ActionError(f"a capture holds at most {settings.KVIZ_MAX_CAPTURE_FILES} files")
    metas = list(metas or [])
    if metas and len(metas) != len(files):
        raise ActionError(f"send one `meta` per `file` ({len(files)} files, {len(metas)} metas), "
                          "in the same order, or none")
    try:
        metas = [uploads.capture_meta(m) for m in metas] or [None] * len(files)
        inventory = uploads.inventory(inventory)
        keylog_data = keylogs.read_upload(keylog) if keylog else None
    except uploads.UploadError as exc:
        raise ActionError(str(exc), exc.status) from None
    except keylogs.KeyLogRefused as exc:
        raise ActionError(exc.message, exc.status) from None
    declared = sum(f.size or 0 for f in files)
    if declared > settings.KVIZ_MAX_UPLOAD_BYTES:
        raise ActionError(f"the files are larger than {settings.KVIZ_MAX_UPLOAD_BYTES} bytes",
                          413)
    refused = retention.admit_upload(user, declared)  # the user's storage quota: 507
    if refused:
        raise ActionError(*refused)
    capture_id = uuid.uuid4()
    directory = settings.DATA_DIR / "captures" / str(capture_id)
    try:
        directory.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        if errno_full(exc):
            raise ActionError(DISK_FULL, 507) from None
        raise
    try:
        stored, room = [], settings.KVIZ_MAX_UPLOAD_BYTES
        for index, (uploaded, meta) in enumerate(zip(files, metas, strict=True)):
            path = uploads.store(uploaded, directory, StoredFile.stem(index), room)
            room -= path.stat().st_size
            if meta is not None:
                path.with_name(path.name + ".meta.json").write_text(
                    json.dumps(meta, indent=2) + "\n")
            stored.append((uploaded, meta or {}, path))
        if keylog_data:
            keylogs.store(capture_id, keylog_data)  # before the analysis is queued
        # A remote storage gets the whole files now (the worker may be another machine); the
        # spool goes once the rows are written.
        capture_storage.publish([str(path.relative_to(settings.DATA_DIR))
                                 for _u, _m, path in stored], keep=True)
        with transaction.atomic():
            capture = Capture.objects.create(
                id=capture_id, name=name, owner=user, target_kind=TargetKind.UPLOAD,
                target_spec={"file_name": (files[0].name or "")[:200],
                             **({"files": len(files)} if len(files) > 1 else {})},
                limit_seconds=settings.KVIZ_MAX_SECONDS, limit_packets=settings.KVIZ_MAX_PACKETS,
                limit_bytes=settings.KVIZ_MAX_UPLOAD_BYTES,
                bytes=sum(path.stat().st_size for _u, _m, path in stored),
                log=append_log([], f"uploaded by {user.get_username()}"), inventory=inventory,
            )
            StoredFile.objects.bulk_create([
                StoredFile(capture=capture, position=index, vantage=meta.get("vantage") or "",
                           interfaces=meta.get("interfaces") or {},
                           path=str(path.relative_to(settings.DATA_DIR)),
                           file_name=(uploaded.name or "")[:200], bytes=path.stat().st_size)
                for index, (uploaded, meta, path) in enumerate(stored)])
            _enqueue("run_capture", capture.id)
        capture_storage.clear_spool(capture_id)
    except uploads.UploadError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        keylogs.delete(capture_id)
        capture_storage.delete_capture(capture_id)
        raise ActionError(str(exc), exc.status) from None
    except OSError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        keylogs.delete(capture_id)
        capture_storage.delete_capture(capture_id)
        if errno_full(exc):
            logger.warning("upload refused: disk full (%s)", exc)
            raise ActionError(DISK_FULL, 507) from None
        raise
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        keylogs.delete(capture_id)
        capture_storage.delete_capture(capture_id)
        raise
    return capture


DISK_FULL = ("disk full: the server has no room left for captures; nothing was kept, try again "
             "later")


def errno_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def delete_keylog(capture: Capture) -> bool:
    """Remove a capture's TLS key log on its own; an analysis made with it is made again
    without it, so what it decrypted goes too. False when there was none."""
    if not keylogs.delete(capture.id):
        return False
    if capture.analysis_path:
        _enqueue("reanalyse_capture", capture.id)
    return True


def delete_capture(capture: Capture, *, pinned_too: bool = True) -> None:
    """Delete a finished capture: its row (notes, share links), then its files, local and in
    a remote storage, and this process' cached copies (retention.delete_capture, under the
    row's lock). A capture still queued or recording is refused (409: stop it first). A pinned
    one only with `pinned_too`: the dashboard asks for that explicitly, since a pin says "keep
    this"; a pin set after the confirmation was shown keeps the capture too."""
    condition = Q(status__in=TERMINAL)
    if not pinned_too:
        condition &= Q(pinned=False)
    if retention.delete_capture(capture.id, condition):
        return
    now = Capture.objects.filter(id=capture.id).values("status", "pinned").first()
    if now is None:
        raise ActionError("no such capture (it was deleted already)", 404)
    if now["status"] not in TERMINAL:
        raise ActionError(f"the capture is {now['status']}: stop it first", 409)
    raise ActionError(f"{capture.name} is pinned: confirm that it is deleted although it is "
                      "pinned, or unpin it first", 409)


def stop_capture(capture: Capture) -> Capture:
    """Ask a capture to stop. The runner sees `stopping` within a second and drains.

    A capture still queued never starts: it fails at once with "stopped before it started".
    """
    rows = Capture.objects.filter(id=capture.id)
    if not rows.filter(status=Status.RUNNING).update(status=Status.STOPPING):
        stopped_early = rows.filter(status=Status.QUEUED).update(
            status=Status.FAILED, finished=timezone.now(), error="stopped before it started")
        if stopped_early:  # no runner will: its viewers learn the end from here
            transaction.on_commit(lambda: live.announce_final(rows.first()))
        elif rows.values_list("status", flat=True).first() != Status.STOPPING:
            capture.refresh_from_db()
            raise ActionError(f"the capture is {capture.status}; nothing to stop", 409)
    capture.refresh_from_db()
    return capture


# -- sharing ------------------------------------------------------------------------------------


def share_capture(user, capture: Capture, redacted: bool = False,
                  days: int | None = None) -> tuple[ShareLink, str]:
    """A new link: valid at most KVIZ_SHARE_MAX_DAYS, and at most KVIZ_SHARE_MAX_LINKS valid
    links per capture (409 beyond: revoke one first)."""
    longest = settings.KVIZ_SHARE_MAX_DAYS
    days = min(settings.KVIZ_SHARE_DAYS, longest) if days is None else days
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= longest:
        raise ActionError(f"days must be an integer from 1 to {longest}")
    if not isinstance(redacted, bool):
        raise ActionError("redacted must be true or false")
    token = new_token()
    with transaction.atomic():
        capture.lock()
        now = timezone.now()
        if ShareLink.objects.filter(capture=capture, revoked=False, expires__gt=now).count() \
                >= settings.KVIZ_SHARE_MAX_LINKS:
            raise ActionError(f"a capture has at most {settings.KVIZ_SHARE_MAX_LINKS} valid "
                              "share links; revoke one first", 409)
        link = ShareLink.objects.create(
            capture=capture, token_hash=token_hash(token), created_by=user, redacted=redacted,
            hint=token[-SHARE_HINT_CHARS:], created=now,
            expires=now + datetime.timedelta(days=days),
        )
    return link, token


SHARE_HINT_CHARS = 4  # of a token's ~43: shown beside its link, to tell links apart


def find_share(token: str) -> ShareLink | None:
    """The valid (unexpired, unrevoked) link for `token`, or None."""
    if not token or len(token) > 200:
        return None
    link = ShareLink.objects.select_related("capture").filter(token_hash=token_hash(token)).first()
    return link if link and link.is_valid() else None


def share_link_state(token: str) -> tuple[ShareLink | None, str]:
    """(link, state) for a share page: state is `valid`, `expired`, `revoked` or `unknown`."""
    if not token or len(token) > 200:
        return None, "unknown"
    link = ShareLink.objects.select_related("capture").filter(token_hash=token_hash(token)).first()
    if link is None:
        return None, "unknown"
    if link.revoked:
        return link, "revoked"
    return link, ("valid" if link.is_valid() else "expired")


def revoke_share_link(capture: Capture, link_id) -> None:
    """Revoke by the link's id: the dashboard lists links, and only their hashes are kept."""
    _revoke(ShareLink.objects.filter(capture=capture, id=link_id))


def revoke_share(capture: Capture, token: str) -> None:
    _revoke(ShareLink.objects.filter(capture=capture, token_hash=token_hash(token)))


def _revoke(links) -> None:
    """Revoke, then (once committed) close the link's open WebSockets."""
    with transaction.atomic():
        ids = list(links.filter(revoked=False).select_for_update().values_list("id", flat=True))
        if not ids or not ShareLink.objects.filter(id__in=ids, revoked=False).update(
                revoked=True):
            raise ActionError("no such share link for this capture", 404)
        transaction.on_commit(lambda: live.share_revoked(ids))


WORKER_SHUTDOWN = "its worker is shutting down"


def stop_worker_captures(hostname: str) -> int:
    """Ask every capture that worker `hostname` runs to stop (it is shutting down)."""
    # `error` carries why until the runner finishes the row (and clears it on completion).
    return Capture.objects.filter(status=Status.RUNNING,
                                  worker_id__startswith=f"{hostname}:").update(
        status=Status.STOPPING, error=WORKER_SHUTDOWN)


# -- crash recovery -----------------------------------------------------------------------------


def clean_cluster_orphans() -> list[str]:
    """Delete node-capture pods left in the cluster by captures that no longer run (a worker
    killed mid-capture cannot delete its own). Failures are logged, never raised: this runs
    from worker start and after every capture."""
    from captures.sources import kubernetes

    try:
        active = Capture.objects.filter(status__in=ACTIVE).values_list("id", flat=True)
        return kubernetes.cleanup_orphans([str(i) for i in active])
    except Exception:  # the cluster may be unreachable; the next pass will try again
        logger.exception("could not clean up capture pods in the cluster")
        return []


def reap_stale(restarted_worker: str | None = None) -> list:
    """Mark captures whose runner is gone as interrupted; queue analysis of what they stored.

    Gone means: no heartbeat for KVIZ_HEARTBEAT_TIMEOUT seconds, or (at worker start) the
    capture belongs to the worker that is starting, which therefore cannot be running it.
    """
    cutoff = timezone.now() - datetime.timedelta(seconds=settings.KVIZ_HEARTBEAT_TIMEOUT)
    candidates = Capture.objects.filter(status__in=ACTIVE, heartbeat__lt=cutoff)
    if restarted_worker:
        candidates = candidates | Capture.objects.filter(
            status__in=ACTIVE, worker_id__startswith=f"{restarted_worker}:")
    reaped = []
    for capture in candidates:
        why = ("its worker restarted" if restarted_worker and
               capture.worker_id.startswith(f"{restarted_worker}:") else "its worker went silent")
        with transaction.atomic():
            won = Capture.objects.filter(id=capture.id, status=capture.status,
                                         worker_id=capture.worker_id).update(
                status=Status.INTERRUPTED, finished=timezone.now(),
                error=f"interrupted: {why} mid-capture; the packets stored so far are kept",
                log=append_log(capture.log, f"interrupted: {why}"),
            )
            if won:
                # Its runner is gone and cannot say it: the viewers hear it from here.
                row = Capture.objects.get(id=capture.id)
                transaction.on_commit(lambda row=row: live.announce_final(row))
            if won and capture.files.exclude(path="").exists():
                _enqueue("analyze_capture", capture.id)
        if won:
            reaped.append(capture.id)
    return reaped


def requeue_queued() -> list:
    """Queue again every capture still `queued`. A broker that lost its queue (Redis restarted
    without persistence, or its data lost) leaves such rows behind forever otherwise. A capture
    whose task is still in the broker is queued twice, which is harmless: the first task to
    claim the row runs it and the other finds it claimed and does nothing (runner.run)."""
    requeued = []
    for capture_id in Capture.objects.filter(status=Status.QUEUED).order_by(
            "created").values_list("id", flat=True)[:REQUEUE_AT_MOST]:
        with transaction.atomic():
            _enqueue("run_capture", capture_id)
        requeued.append(capture_id)
    if requeued:
        logger.info("queued again %d captures left queued: %s", len(requeued),
                    ", ".join(str(i) for i in requeued))
    return requeued


REQUEUE_AT_MOST = 1000
