"""Where capture files and analyses are kept: Django's storage alias "captures", one door.

Theory of operation
-------------------
A stored file has a *name*, the path relative to DATA_DIR it always had
(`captures/<id>/upload.pcapng`, `captures/<id>/analysis.json`); StoredFile.path and
Capture.analysis_path hold names. The storage behind the alias is either

- local (the default): FileSystemStorage at DATA_DIR. A name's file *is* the local file that
  the runner and the upload wrote, so nothing is copied, pushed or downloaded: every function
  here answers with the file in place, exactly as kviz worked before there was a storage.
- remote (S3 or a look-alike, django-storages): web and workers share only the bucket. Files are
  written to a *spool* first, the same name under the process' own DATA_DIR (an upload's parts
  on the web process, a live capture's files on the worker: dumpcap and the live decoder need
  a file), and pushed when they are whole: `publish` uploads them and removes the spool. A
  reader that needs a file on disk (the analysis, tshark for one frame, the merged download)
  gets a temporary copy (`local_copies`); a download streams ranges of the object (`chunks`);
  an analysis is kept in a local cache (DATA_DIR/captures/<id>/.cache/), checked against the
  object on each use.

The capture's files are never pushed while they are being written (S3 has no append): a
capture still recording is visible to other machines only through its live view.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, storages

log = logging.getLogger(__name__)

ALIAS = "captures"
CHUNK = 256 * 1024
META_SUFFIX = ".meta.json"


class DataDirStorage(FileSystemStorage):
    """The local default: FileSystemStorage at settings.DATA_DIR, read on every use (so a moved
    DATA_DIR, as tests do, moves the storage too), unless a location is given."""

    @property
    def base_location(self):
        return self._value_or_setting(self._location, str(settings.DATA_DIR))

    @property
    def location(self):
        return os.path.abspath(self.base_location)


def backend():
    return storages[ALIAS]


def is_local() -> bool:
    return isinstance(backend(), FileSystemStorage)


def spool_path(name: str) -> Path:
    """Where this process writes `name` before it is stored (local: where it is stored)."""
    return Path(settings.DATA_DIR) / name


def local_path(name: str) -> Path | None:
    """The stored file itself when the storage is local; None for a remote one."""
    if not name or not is_local():
        return None
    return Path(backend().path(name))


def exists(name: str) -> bool:
    return bool(name) and backend().exists(name)


def size(name: str) -> int:
    return backend().size(name)


def modified(name: str) -> float:
    return backend().get_modified_time(name).timestamp()


def delete(names) -> None:
    """Remove stored files by name; a missing one is not an error."""
    store = backend()
    for name in names:
        if name:
            with contextlib.suppress(FileNotFoundError):
                store.delete(name)


def delete_capture(capture_id) -> None:
    """Remove every object under `captures/<id>/` (remote storage only: locally the capture's
    directory goes as a whole, captures.jobs.retention)."""
    if is_local():
        return
    store = backend()
    prefix = f"captures/{capture_id}"
    with contextlib.suppress(FileNotFoundError):
        directories, files = store.listdir(prefix)
        delete(f"{prefix}/{name}" for name in files)
        for directory in directories:
            sub = f"{prefix}/{directory}"
            delete(f"{sub}/{name}" for name in store.listdir(sub)[1])


def capture_ids() -> set[str]:
    """The capture ids that have objects in a remote storage (for the orphan sweep)."""
    if is_local():
        return set()
    with contextlib.suppress(FileNotFoundError):
        return set(backend().listdir("captures")[0])
    return set()


# -- writing ---------------------------------------------------------------------------------


def put(name: str, source: Path) -> None:
    """Store the whole local file `source` under `name` (a no-op when it is already there)."""
    store = backend()
    if is_local() and Path(store.path(name)).resolve() == Path(source).resolve():
        return
    with open(source, "rb") as fp:
        store.save(name, File(fp, name=Path(name).name))


def publish(names, *, keep: bool = False) -> list[str]:
    """Push spooled files (and the `.meta.json` beside each) to a remote storage, then remove
    the spool unless `keep`. Locally there is nothing to do. A spool file that is missing was
    published already (a run analysed again). Returns the names pushed."""
    if is_local():
        return []
    pushed = []
    for name in names:
        for each in (name, name + META_SUFFIX):
            spooled = spool_path(each)
            if spooled.is_file():
                put(each, spooled)
                pushed.append(each)
    if not keep:
        for each in pushed:
            spool_path(each).unlink(missing_ok=True)
    return pushed


def clear_spool(capture_id) -> None:
    """Remove a capture's spool directory after its files were pushed (remote storage only)."""
    if not is_local():
        shutil.rmtree(Path(settings.DATA_DIR) / "captures" / str(capture_id), ignore_errors=True)


def write_document(name: str, write) -> None:
    """Store a document written by `write(fp)` (text) so that readers see the whole document
    or none: locally a temporary file renamed over the old one; remotely one PUT."""
    target = spool_path(name) if not is_local() else local_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".write-", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fp:
            write(fp)
        if is_local():
            os.replace(temporary, target)
        else:
            put(name, Path(temporary))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


# -- reading ---------------------------------------------------------------------------------


def chunks(name: str, start: int = 0, end: int | None = None,
           chunk: int = CHUNK) -> Iterator[bytes]:
    """The bytes start..end (inclusive; None: to the end) of a stored file, a chunk at a time,
    without holding the file in memory (S3: one ranged GET streamed)."""
    local = local_path(name)
    if local is not None:
        with open(local, "rb") as fp:
            fp.seek(start)
            left = None if end is None else end - start + 1
            while left is None or left > 0:
                data = fp.read(chunk if left is None else min(chunk, left))
                if not data:
                    return
                if left is not None:
                    left -= len(data)
                yield data
        return
    store = backend()
    key = store._normalize_name(name)  # the object's key (the bucket's prefix and the name)
    wanted = f"bytes={start}-{'' if end is None else end}"
    body = store.connection.meta.client.get_object(
        Bucket=store.bucket_name, Key=key, Range=wanted)["Body"]
    try:
        yield from body.iter_chunks(chunk)
    finally:
        body.close()


@contextlib.contextmanager
def local_copies(names: list[str]) -> Iterator[list[Path]]:
    """A file on disk for each stored name, for readers that need one (the analysis, tshark,
    the merge): locally the stored files themselves; remotely temporary copies, removed when
    the block ends."""
    if is_local():
        yield [local_path(name) for name in names]
        return
    # Under DATA_DIR (a volume, not a tmpfs that holds copies in memory), keeping each file's
    # own name: what the analysis says about a file (its path, in warnings too) reads as it
    # does with the local storage once captures.web.redaction cuts DATA_DIR off.
    root = Path(settings.DATA_DIR) / ".copies"
    root.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="kviz-copy-", dir=root))
    try:
        paths = []
        for index, name in enumerate(names):
            path = directory / str(index) / Path(name).name
            path.parent.mkdir()
            with open(path, "wb") as out:
                for data in chunks(name):
                    out.write(data)
            paths.append(path)
        yield paths
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def cached(name: str) -> Path | None:
    """A readable local file with the stored document `name` (an analysis), or None when it is
    not stored. Remotely a copy in this process' DATA_DIR, fetched again when the object is newer or
    of another size; callers may compare its mtime with their own derived files."""
    if not name:
        return None
    if is_local():
        return local_path(name)
    # Beside the capture's other derived files (redacted copies, the diagram cache), so that
    # deleting or sweeping the capture's directory takes it too.
    copy = spool_path(name).parent / ".cache" / Path(name).name
    facts = stat(name)
    if facts is None:
        copy.unlink(missing_ok=True)
        return None
    remote_size, remote_time = facts
    with contextlib.suppress(FileNotFoundError):
        facts = copy.stat()
        if facts.st_size == remote_size and facts.st_mtime >= remote_time:
            return copy
    copy.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".fetch-", dir=copy.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for data in chunks(name):
                out.write(data)
        os.utime(temporary, (remote_time, max(remote_time, os.stat(temporary).st_mtime)))
        os.replace(temporary, copy)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return copy


def stat(name: str) -> tuple[int, float] | None:
    """(size, modified time) of a stored file, or None when there is none (one HEAD for S3)."""
    if is_local():
        try:
            return (size(name), modified(name)) if name else None
        except FileNotFoundError:
            return None
    head = _head(name)
    return None if head is None else (head["ContentLength"], head["LastModified"].timestamp())


def version(name: str) -> str | None:
    """What changes whenever the stored file does: its size, modified time and (S3) ETag, from
    one HEAD; None when it is not stored."""
    if is_local():
        facts = _local_stat(name)
        return None if facts is None else f"{facts.st_size}-{facts.st_mtime_ns}"
    head = _head(name)
    if head is None:
        return None
    etag = head.get("ETag", "").strip('"')
    return f"{head['ContentLength']}-{head['LastModified'].timestamp()}-{etag}"


def _local_stat(name: str) -> os.stat_result | None:
    path = local_path(name)
    if path is None:
        return None
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _head(name: str) -> dict | None:
    """The bucket's HEAD of a stored file, or None when it is not there."""
    if not name:
        return None
    store = backend()
    try:
        return store.connection.meta.client.head_object(
            Bucket=store.bucket_name, Key=store._normalize_name(name))
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


def _not_found(exc: BaseException) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code", ""))
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return status == 404 or code in ("404", "NoSuchKey", "NotFound")


def check_reachable(timeout: float = 2.0) -> None:
    """Raise when a remote storage's bucket cannot be reached within `timeout` (for /readyz);
    nothing to check locally (the data directory has its own check)."""
    if is_local():
        return
    from botocore.config import Config

    store = backend()
    client = store._create_session().client(
        "s3", endpoint_url=store.endpoint_url or None, region_name=store.region_name or None,
        config=Config(connect_timeout=timeout, read_timeout=timeout,
                      retries={"max_attempts": 1},
                      s3={"addressing_style": store.addressing_style}))
    try:
        client.head_bucket(Bucket=store.bucket_name)
    finally:
        client.close()
