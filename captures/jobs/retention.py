"""Retention, quotas and per-user limits: how long captures stay, how much a user may store, how
many captures a user may run at once.

- Retention: a finished capture (completed, failed, interrupted) expires
  KVIZ_RETENTION_DAYS after it finished (or was created, if it never finished) unless pinned.
  `cleanup` (run by `manage.py kviz_cleanup`, a CronJob in deploy/) deletes expired rows and
  then their files. Rows go first, each in its own transaction under a row lock that a pin
  waits for: a capture pinned at the last moment is either pinned (and kept) or gone, never
  half-deleted. Files are deleted after the commit; a crash in between leaves a directory
  without a row, which the next run sweeps up (`ORPHAN_GRACE` after it was last changed: an
  upload writes its directory before its row).
- Quota: a user's captures together hold at most KVIZ_USER_QUOTA_BYTES (their `bytes`: the
  stored packets). An upload that would go beyond it, or a live capture started at or beyond
  it, is refused with 507 Insufficient Storage: the request is fine, the user's storage is
  full (413 stays what it was: this one upload is larger than any upload may be). A live
  capture's byte limit is cut to what the quota has left, so it stops there. Parallel uploads
  of one user are checked one by one, not together: they may overshoot by what they hold.
- Concurrency: a user has at most KVIZ_MAX_CAPTURES_PER_USER live captures queued, running or
  stopping at once; one more is refused with 429, naming them and with the seconds until the
  soonest reaches its time limit (Retry-After). Checked and created under a lock on the
  user's row, so parallel requests count one after another. Uploads are not counted here
  (they are bounded by size and quota, and their analyses by the workers' queue).

Each check answers a (message, status) refusal for captures.jobs.actions to raise; nothing here
knows about HTTP.
"""

from __future__ import annotations

import datetime
import logging
import math
import shutil
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from captures.jobs import findings, local_copy
from captures.jobs import storage as capture_storage
from captures.models import TERMINAL, Capture, Status, TargetKind

logger = logging.getLogger(__name__)

ORPHAN_GRACE = 6 * 3600  # seconds: an upload in progress has a directory and no row yet
LIVE = (Status.QUEUED, Status.RUNNING, Status.STOPPING)


def size(nbytes: int) -> str:
    """`nbytes` for a person: 1.5 GB, 20 MB, 512 bytes."""
    value = float(nbytes)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{nbytes} bytes"


# -- quota and concurrency ---------------------------------------------------------------------


def usage(user) -> int:
    """Bytes the user's captures hold."""
    return Capture.objects.filter(owner=user).aggregate(total=Sum("bytes"))["total"] or 0


def lock_user(user) -> None:
    """Hold the user's row until the transaction ends: a user's parallel starts queue here."""
    list(get_user_model().objects.select_for_update().filter(pk=user.pk)
         .values_list("pk", flat=True))


def live_captures(user) -> list[Capture]:
    """The user's live captures, oldest first: what counts against KVIZ_MAX_CAPTURES_PER_USER."""
    return list(Capture.objects.filter(owner=user, status__in=LIVE).exclude(
        target_kind=TargetKind.UPLOAD).order_by("created"))


def seconds_left(capture: Capture, now: datetime.datetime | None = None) -> int:
    """At most how long `capture` still records: its time limit from when it started (a queued
    one: all of it). It may end sooner (a packet or byte limit, a user's stop)."""
    if capture.started is None:
        return int(capture.limit_seconds)
    ends = capture.started + datetime.timedelta(seconds=capture.limit_seconds)
    return max(1, math.ceil((ends - (now or timezone.now())).total_seconds()))


def admit_capture(user, limit_bytes: int) -> tuple[int, tuple | None]:
    """(the byte limit a new live capture gets, a refusal or None). Call inside the
    transaction that creates the capture. A refusal for too many captures at once carries the
    seconds until the soonest of the user's captures reaches its time limit (Retry-After)."""
    lock_user(user)
    most = settings.KVIZ_MAX_CAPTURES_PER_USER
    if most > 0:
        live = live_captures(user)
        if len(live) >= most:
            soonest = min(seconds_left(c) for c in live)
            names = ", ".join(c.name for c in live[:5]) + (", ..." if len(live) > 5 else "")
            return limit_bytes, (
                f"you already have {len(live)} capture{'s' if len(live) != 1 else ''} queued "
                f"or running ({names}), the most one user may have at once ({most}): stop one "
                "of your running captures (Stop on its live page) or wait for one to finish "
                f"(one ends within {soonest} s at the latest), then start this one again",
                429, soonest)
    quota = settings.KVIZ_USER_QUOTA_BYTES
    if quota > 0:
        used = usage(user)
        if used >= quota:
            return limit_bytes, (_over_quota(used, quota), 507)
        limit_bytes = min(limit_bytes, quota - used)
    return limit_bytes, None


def admit_upload(user, adding: int) -> tuple[str, int] | None:
    """A refusal when `adding` more bytes would take the user beyond the quota, else None."""
    quota = settings.KVIZ_USER_QUOTA_BYTES
    if quota <= 0:
        return None
    used = usage(user)
    if used + adding > quota:
        return (f"this upload ({size(adding)}) would take your captures to "
                f"{size(used + adding)}, over your storage quota of {size(quota)}; "
                "delete captures you no longer need (or unpin them so they expire)", 507)
    return None


def _over_quota(used: int, quota: int) -> str:
    return (f"your captures hold {size(used)}, your whole storage quota of {size(quota)}: "
            "delete captures you no longer need (or unpin them so they expire), then start "
            "this one again")


# -- retention ---------------------------------------------------------------------------------


def expires(capture: Capture) -> datetime.datetime | None:
    """When `capture` will be deleted; None when it is kept (pinned, unfinished, or retention
    is off)."""
    days = settings.KVIZ_RETENTION_DAYS
    if days <= 0 or capture.pinned or capture.status not in TERMINAL:
        return None
    return (capture.finished or capture.created) + datetime.timedelta(days=days)


def _expired(now: datetime.datetime | None) -> Q:
    cutoff = (now or timezone.now()) - datetime.timedelta(days=settings.KVIZ_RETENTION_DAYS)
    return Q(status__in=TERMINAL, pinned=False) & (
        Q(finished__lt=cutoff) | Q(finished__isnull=True, created__lt=cutoff))


def expired(now: datetime.datetime | None = None):
    """The captures whose retention has ended (none when retention is off)."""
    if settings.KVIZ_RETENTION_DAYS <= 0:
        return Capture.objects.none()
    return Capture.objects.filter(_expired(now))


def pin(capture: Capture, pinned: bool) -> Capture | None:
    """Pin (keep for good) or unpin (expire as any other) a capture. None when it is gone."""
    if not isinstance(pinned, bool):
        raise ValueError("pinned must be true or false")
    if not Capture.objects.filter(id=capture.id).update(pinned=pinned):
        return None
    capture.pinned = pinned
    return capture


def _paths(capture: Capture) -> list[str]:
    relative = [f.path for f in capture.files.all() if f.path]
    if capture.analysis_path:
        relative.append(capture.analysis_path)
    return relative


def delete_capture(capture_id, condition: Q | None = None) -> bool:
    """Delete a capture's row (when it still meets `condition`), then its files. True when
    this call deleted it."""
    with transaction.atomic():
        rows = Capture.objects.select_for_update().filter(id=capture_id)
        if condition is not None:
            rows = rows.filter(condition)
        capture = rows.first()
        if capture is None:
            return False
        directory, relative = capture.directory, _paths(capture)
        capture.delete()
        transaction.on_commit(lambda: delete_files(directory, relative))
    return True


def delete_files(directory: Path, relative: list[str]) -> None:
    """Remove a capture's stored files (paths relative to DATA_DIR) and its directory (the
    analysis, its redacted copies, the diagram cache, meta files)."""
    root = Path(settings.DATA_DIR).resolve()
    for name in relative:
        path = (root / name).resolve()
        if path.is_relative_to(root):
            path.unlink(missing_ok=True)
    if directory.resolve().is_relative_to(root / "captures"):
        shutil.rmtree(directory, ignore_errors=True)
        # Its TLS key log, kept apart from the capture's own files (keylogs.py).
        shutil.rmtree(root / "keys" / directory.name, ignore_errors=True)
    capture_storage.delete_capture(directory.name)  # a remote storage's objects (S3)
    local_copy.forget(directory.name)  # this machine's cached copies of them


def sweep_orphans(now: float | None = None) -> list[str]:
    """Delete capture directories that have no row (a deletion cut short between the commit
    and the files), once untouched for ORPHAN_GRACE."""
    base = Path(settings.DATA_DIR) / "captures"
    now = time.time() if now is None else now
    if not base.is_dir():
        return capture_storage.sweep_orphans(now, ORPHAN_GRACE)
    candidates = {}
    for entry in base.iterdir():
        try:
            candidates[uuid.UUID(entry.name)] = entry
        except ValueError:
            continue  # not a capture's directory: not ours to judge
    known = set(Capture.objects.filter(id__in=candidates).values_list("id", flat=True))
    swept = []
    for capture_id, entry in candidates.items():
        if capture_id in known or not entry.is_dir():
            continue
        if now - entry.stat().st_mtime < ORPHAN_GRACE:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        shutil.rmtree(base.parent / "keys" / entry.name, ignore_errors=True)  # keylogs.py
        swept.append(entry.name)
    swept += capture_storage.sweep_orphans(now, ORPHAN_GRACE)  # a remote storage's objects
    return swept


def cleanup(now: datetime.datetime | None = None, dry_run: bool = False) -> dict:
    """One retention pass: expired captures and their files, orphaned directories, and the
    finding kinds of captures analysed before they were kept. Returns what it did."""
    candidates = list(expired(now).values_list("id", "name", "bytes"))
    report = {"expired": [str(c) for c, _n, _b in candidates], "deleted": [], "freed_bytes": 0,
              "orphans": [], "findings_filled": 0}
    if dry_run:
        return report
    days = settings.KVIZ_RETENTION_DAYS
    for capture_id, name, nbytes in candidates:
        # Checked again under the row's lock: pinned or changed since it was listed: kept.
        if delete_capture(capture_id, _expired(now)):
            report["deleted"].append(str(capture_id))
            report["freed_bytes"] += nbytes
            logger.info("retention: deleted capture %s (%s), %d bytes, older than %d days",
                        capture_id, name, nbytes, days)
    report["orphans"] = sweep_orphans()
    report["findings_filled"] = findings.backfill()
    return report
