"""A capture's files in the storage (captures.adapters.storage): what the runner, the upload
and retention call, in terms of Capture rows.

With the local default every function here is a no-op or hands back the files in place; with a
remote storage (KVIZ_STORAGE=s3):
1. a live capture records to its spool (DATA_DIR/captures/<id>/ of the worker) and, when the
   recording ends, `publish_spool` pushes each recorded file to the bucket and clears the spool;
2. the analysis reads the stored files from temporary copies (`analysis_inputs`) and stores its
   document with one PUT (`store_analysis`);
3. a capture whose worker died before pushing keeps its spool; the same worker pushes it when
   it analyses what the capture stored (captures.jobs.runner.analyse_interrupted).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from captures.adapters import storage
from captures.models import Capture, StoredFile

log = logging.getLogger(__name__)

PCAP_SUFFIXES = (".pcap", ".pcapng")


def spooled_names(capture_id) -> list[str]:
    """The capture files waiting in this process' spool (remote storage only)."""
    if storage.is_local():
        return []
    directory = storage.spool_path(f"captures/{capture_id}")
    if not directory.is_dir():
        return []
    return sorted(f"captures/{capture_id}/{entry.name}" for entry in directory.iterdir()
                  if entry.is_file() and entry.suffix in PCAP_SUFFIXES
                  and not entry.name.startswith("."))


def publish_spool(capture_id) -> list[str]:
    """Push what this process recorded for the capture to a remote storage and clear the
    spool; nothing to do locally. Returns the names pushed."""
    names = spooled_names(capture_id)
    if not names:
        return []
    pushed = storage.publish(names)
    log.info("capture %s: %d file(s) pushed to the storage", capture_id, len(pushed))
    storage.clear_spool(capture_id)
    return pushed


@contextlib.contextmanager
def analysis_inputs(capture: Capture) -> Iterator[list[tuple[StoredFile, Path]]]:
    """(row, readable local file) for each stored file of the capture, in file order; with a
    remote storage the files are temporary copies, removed when the block ends."""
    publish_spool(capture.id)  # a recording of this process not pushed yet (its worker died)
    if storage.is_local():
        rows = [f for f in capture.stored_files() if f.file.exists()]
    else:
        rows = [f for f in capture.stored_files() if storage.exists(f.path)]
    with storage.local_copies([f.path for f in rows]) as paths:
        yield list(zip(rows, paths, strict=True))


def store_analysis(capture: Capture, write) -> str:
    """Store the analysis document `write(fp)` writes; returns its name (Capture.analysis_path).
    Readers see the whole document or none."""
    name = f"captures/{capture.id}/analysis.json"
    storage.write_document(name, write)
    return name


def stored_size(row: StoredFile) -> int | None:
    """The stored file's size, or None when it is not (or not yet) in the storage."""
    facts = storage.stat(row.path)
    return facts[0] if facts else None


def delete_capture(capture_id) -> None:
    """Remove a capture's objects from a remote storage (locally its directory is removed by
    captures.jobs.retention, as before), and its key log's (captures.jobs.keylogs)."""
    storage.delete_capture(capture_id)
    if not storage.is_local():
        storage.delete([f"keys/{capture_id}/keylog"])


def sweep_orphans(now: float, grace: float) -> list[str]:
    """Delete a remote storage's capture objects that have no row, once the newest of them is
    older than `grace` (an upload stores its files before its row). [] locally: the local
    files are the capture directories captures.jobs.retention sweeps itself."""
    import uuid

    found = {}
    for name in storage.capture_ids():
        with contextlib.suppress(ValueError):
            found[uuid.UUID(name)] = name
    if not found:
        return []
    known = set(Capture.objects.filter(id__in=found).values_list("id", flat=True))
    swept = []
    for capture_id, name in found.items():
        if capture_id in known:
            continue
        store = storage.backend()
        _dirs, files = store.listdir(f"captures/{name}")
        times = [storage.modified(f"captures/{name}/{file}") for file in files]
        if times and now - max(times) < grace:
            continue
        storage.delete_capture(name)
        swept.append(name)
    return swept
