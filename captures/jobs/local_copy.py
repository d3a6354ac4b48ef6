"""A capture's files on this machine, for readers that need a file (tshark's dissection of one
frame), and what to say when a file cannot be read here yet.

Theory of operation
-------------------
With the local storage a capture's file is on disk and nothing here does anything. With a remote
one (S3) the file is an object in the bucket, and tshark needs a file: fetching the whole object
for every click on an arrow costs the whole capture's transfer each time. So a web process keeps
the files it fetched, bounded, shared by the processes of one machine:

- Where: KVIZ_FRAME_CACHE_DIR (default DATA_DIR/frame-cache), a directory per capture and an
  entry per stored file and version: `<capture id>/<position>.<version>`. The version is a hash
  of what one HEAD says (size, modified time, ETag), asked on every use, so an object stored
  again (a capture's spool pushed after its worker restarted) gets a new entry and the old one
  goes.
- Concurrency (threads of one process, web processes on one machine):
  1. an exclusive flock on `<capture id>/.lock-<position>` lets one request fetch a missing
     entry while the others wait, then read what it fetched: two first clicks, one GET;
  2. the fetch writes a temporary file in the same directory and renames it into place, so no
     reader ever sees part of a file;
  3. a reader reads through a hard link of its own (`.use-*`), removed when it is done: an
     eviction meanwhile unlinks the entry, never the data tshark is reading.
- Bound: after a fetch, entries go least recently used first (their mtime, set on each use)
  until the cache holds at most KVIZ_FRAME_CACHE_BYTES. A file larger than that is never kept:
  it is copied for the request and removed after it, as before there was a cache. The same pass
  removes the directories of captures that have no row (deleted through another web process).
- Deletion: `forget(capture_id)` (captures.jobs.storage.delete_capture, with the capture's
  objects) removes the capture's entries at once.

A capture still recording with a remote storage has its files only in its worker's spool: they
reach the bucket when the recording ends. A web process on that machine (sharing the worker's
DATA_DIR) reads the spool; any other answers 409 with `recording_elsewhere` (the worker's name,
and a Retry-After of the time the capture may still record).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from captures.adapters import storage
from captures.jobs.errors import ActionError
from captures.models import TERMINAL, Capture, Status, StoredFile, TargetKind

log = logging.getLogger(__name__)

STALE = 3600  # seconds: a `.use-` link or a `.fetch-` file this old was left by a dead process


def root() -> Path:
    return Path(settings.KVIZ_FRAME_CACHE_DIR or Path(settings.DATA_DIR) / "frame-cache")


# -- readable here, or not yet ------------------------------------------------------------------


def _recording(capture: Capture) -> bool:
    """The capture's files are still being written on its worker (not in a remote storage yet)."""
    return (not storage.is_local() and capture.status not in TERMINAL
            and capture.target_kind != TargetKind.UPLOAD)


def spooled(capture: Capture, row: StoredFile) -> Path | None:
    """The file as its worker writes it, when this process shares that worker's DATA_DIR (a
    remote storage and a capture still recording only)."""
    if not _recording(capture):
        return None
    path = storage.spool_path(row.path)
    return path if path.is_file() else None


def recording_elsewhere(capture: Capture) -> ActionError:
    """The refusal for a file that a capture still records on another machine: 409, with the
    seconds it may still record as Retry-After."""
    if capture.status == Status.QUEUED or not capture.started:
        return ActionError(f"{capture.name} has not started recording yet (it is "
                           f"{capture.status}); its packets can be read here once it has ended",
                           409, retry_after=capture.limit_seconds)
    worker = capture.worker_id.rpartition(":")[0] or capture.worker_id or "its worker"
    ends = capture.started + datetime.timedelta(seconds=capture.limit_seconds)
    left = max(1, math.ceil((ends - timezone.now()).total_seconds()))
    return ActionError(f"{capture.name} is still recording on worker {worker}; its packets "
                       "reach the shared storage, and can be read here, when it ends (stop it, "
                       "or wait; its live view shows them meanwhile)", 409,
                       retry_after=left + 5)  # + the push to the bucket


def readable(capture: Capture, row: StoredFile) -> bool:
    """True when `row`'s file can be read here (stored, or spooled on this machine); False when
    there is none. Raises ActionError (409) when it is still being recorded elsewhere."""
    if storage.is_local():
        return row.file is not None and row.file.exists()
    if storage.exists(row.path) or spooled(capture, row) is not None:
        return True
    if _recording(capture):
        raise recording_elsewhere(capture)
    return False


# -- the cache ----------------------------------------------------------------------------------


@contextlib.contextmanager
def capture_file(capture: Capture, row: StoredFile) -> Iterator[Path]:
    """A file on disk with `row`'s packets for the time of the block: the stored file (local
    storage), the worker's spool (a capture recording on this machine), or the cache's entry
    (remote storage). Raises ActionError (404) when it is stored nowhere."""
    local = storage.local_path(row.path)
    if local is not None:
        yield local
        return
    spool = spooled(capture, row)
    if spool is not None and not storage.exists(row.path):
        yield spool
        return
    version = storage.version(row.path)
    if version is None:  # deleted since the request began
        raise ActionError("no such capture file", 404)
    limit = settings.KVIZ_FRAME_CACHE_BYTES
    size = int(version.split("-", 1)[0])
    if limit <= 0 or size > limit:  # never kept: a copy for this request only
        with storage.local_copies([row.path]) as (path,):
            yield path
        return
    directory = root() / str(capture.id)
    directory.mkdir(parents=True, exist_ok=True)
    entry = directory / f"{row.position}.{hashlib.sha256(version.encode()).hexdigest()[:20]}"
    private = _entry(entry, row)
    try:
        yield private
    finally:
        private.unlink(missing_ok=True)


def _entry(entry: Path, row: StoredFile) -> Path:
    """A private hard link to the cache's `entry`, fetched first when missing."""
    with open(entry.parent / f".lock-{row.position}", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        fetched = False
        if not entry.exists():
            _fetch(row.path, entry)
            fetched = True
        for old in entry.parent.glob(f"{row.position}.*"):
            if old != entry:
                old.unlink(missing_ok=True)  # the object changed since it was fetched
        private = entry.with_name(f".use-{uuid.uuid4().hex}")
        os.link(entry, private)
        os.utime(entry)  # used now: the last to go
    if fetched:
        evict(settings.KVIZ_FRAME_CACHE_BYTES)
    return private


def _fetch(name: str, entry: Path) -> None:
    fd, temporary = tempfile.mkstemp(prefix=".fetch-", dir=entry.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for data in storage.chunks(name):
                out.write(data)
        os.replace(temporary, entry)  # readers see the whole file or none
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    log.info("frame cache: fetched %s (%d bytes)", name, entry.stat().st_size)


def evict(limit: int) -> list[Path]:
    """Remove entries, least recently used first, until the cache holds at most `limit` bytes;
    and the directories of captures that no longer have a row. Returns what it removed."""
    base = root()
    if not base.is_dir():
        return []
    removed: list[Path] = []
    directories = {}
    for directory in base.iterdir():
        with contextlib.suppress(ValueError):
            directories[uuid.UUID(directory.name)] = directory
    known = set(Capture.objects.filter(id__in=directories).values_list("id", flat=True))
    entries = []
    now = time.time()
    for capture_id, directory in directories.items():
        if capture_id not in known:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
            continue
        for path in directory.iterdir():
            with contextlib.suppress(FileNotFoundError):
                facts = path.stat()
                if not path.name.startswith("."):
                    entries.append((facts.st_mtime, facts.st_size, path))
                elif path.name.startswith((".use-", ".fetch-")) and now - facts.st_mtime > STALE:
                    path.unlink()  # left by a process that died while reading or fetching
    total = sum(size for _m, size, _p in entries)
    for _mtime, size, path in sorted(entries):
        if total <= limit:
            break
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed


def forget(capture_id) -> None:
    """Remove a deleted capture's cached files from this machine."""
    shutil.rmtree(root() / str(capture_id), ignore_errors=True)
