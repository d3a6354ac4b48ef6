"""Runs one capture: source → pcapng on disk → live view → limits and stop → analysis.

A run, step by step:
1. Claim the row (queued → running, race-safe); a capture someone else claimed, stopped or
   reaped is left alone. From here a heartbeat thread marks the row alive every second.
2. Uploads skip to step 6. Live captures open their source and snapshot the inventory.
3. Durable first: each chunk from the source is appended to capture.pcapng before anything
   else looks at it, and the file is fsynced every second. A SIGKILL loses nothing that
   reached the kernel; a power cut at most the last second.
4. The live decoder reads that file as it grows; ten times a second its rows go out as one
   numbered batch (thinned beyond KVIZ_LIVE_MAX_ROWS; the file never is).
5. Every half second: progress is saved, and the row is read back: `stopping` (the user)
   stops the source; a row we no longer own (reaped) ends the run. Limits stop the source too.
   A source that has not ended 2 s after being stopped is killed.
6. The stored file is analysed (captures.analysis, with the inventory), the model JSON
   written beside it, a summary kept in the row, the diagram layout the page asks for first
   built from it (captures.jobs.diagram_cache), and the row finished: completed, or failed
   with the error. Outcomes map to statuses here and nowhere else, and the final status is
   always announced to the viewers, even when the row cannot be written.

Faults while recording (docs/deploy.md, "Faults"):
- The database away (restarted, failed over, a network cut): recording does not wait for it.
  Progress that cannot be saved is saved at the next check, log lines ride along with the
  next write that gets through, and only the end of the capture waits for the database
  (DATABASE_WAIT). The heartbeat thread carries on the same way. A broken connection is
  closed at once, so the next write opens a new one instead of failing on the dead one.
- The disk full: the capture stops as failed with "disk full", what reached the disk is kept
  and analysed. A reserve (DISK_RESERVE bytes) taken when recording starts and given back
  when it ends leaves room for the analysis; a capture that cannot take it fails at once with
  the same words.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from captures.adapters.decode import LiveDecoder
from captures.analysis import CaptureError, CaptureFile, analyze_files
from captures.jobs import described, diagram_cache, findings, keylogs, observe
from captures.jobs import storage as capture_storage
from captures.jobs.live import LivePublisher, announce_final, thin
from captures.models import ACTIVE, Capture, Status, StoredFile, TargetKind, append_log
from captures.sources import base as sources

log = logging.getLogger(__name__)

BATCH_INTERVAL = 0.1  # at most ten batches a second
CHECK_INTERVAL = 0.5  # progress saved, stop and limits checked
FSYNC_INTERVAL = 1.0
HEARTBEAT_INTERVAL = 1.0
STOP_GRACE = 2.0  # a stopped source must end within this, or is killed
READ_SIZE = 256 * 1024
DATABASE_WAIT = 600.0  # the end of a capture waits this long for an unreachable database
DATABASE_RETRY = 1.0
DISK_RESERVE = 2 * 1024 * 1024  # bytes kept free for the analysis of a capture the disk ended
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# What a lost database looks like to Django: connection refused or reset, server closed the
# connection, the connection already closed. Other database errors are bugs and fail the run.
UNREACHABLE = (OperationalError, InterfaceError)


class Lost(Exception):
    """The row is no longer ours (reaped as interrupted, or deleted): stop quietly."""


class DiskFull(Exception):
    """The data directory has no room left for the capture's files."""

    def __init__(self, cause: OSError | None = None, stored: int = 0):
        why = os.strerror(cause.errno) if cause is not None and cause.errno else "no space left"
        # Never str(cause): it may name a server path (API answers carry none).
        super().__init__(f"disk full: {why[:1].lower()}{why[1:]} in the data directory; "
                         + (f"the {stored} bytes stored before are kept and analysed"
                            if stored else "nothing could be stored"))


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def _drop_connection() -> None:
    # A connection that failed is not tried again: the next query opens a new one.
    with contextlib.suppress(Exception):
        connection.close()


class Outage:
    """The database as one run sees it: since when it cannot be reached, and why."""

    def __init__(self, capture_id):
        self.capture_id = capture_id
        self.since: float | None = None
        self.reason = ""
        self.failures = 0
        self.took = 0.0  # how long the last outage lasted

    def failed(self, exc: BaseException) -> None:
        _drop_connection()
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            self.reason = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
            log.warning("capture %s: the database cannot be reached (%s); recording goes on",
                        self.capture_id, self.reason)

    def recovered(self) -> str:
        """A log line when the database just came back, else ''."""
        if self.since is None:
            return ""
        took, self.since = time.monotonic() - self.since, None
        self.took = took
        log.warning("capture %s: the database is back after %.1f s", self.capture_id, took)
        return (f"the database could not be reached for {took:.0f} s ({self.reason}); "
                "recording went on")


def _outage(capture: Capture) -> Outage:
    outage = getattr(capture, "_kviz_outage", None)
    if outage is None:
        outage = capture._kviz_outage = Outage(capture.id)
    return outage


def _persist(capture: Capture, write, wait: float = DATABASE_WAIT):
    """Run `write` (database work the capture's outcome needs), waiting up to `wait` seconds
    for an unreachable database; the last failure is raised after that."""
    outage = _outage(capture)
    deadline = time.monotonic() + wait
    while True:
        try:
            result = write()
        except UNREACHABLE as exc:
            outage.failed(exc)
            if time.monotonic() >= deadline:
                raise
            time.sleep(DATABASE_RETRY)
            continue
        back = outage.recovered()
        if back:
            capture.log = append_log(capture.log, back)
            with contextlib.suppress(*UNREACHABLE):
                Capture.objects.filter(id=capture.id).update(log=capture.log)
        return result


class Heartbeat(threading.Thread):
    def __init__(self, capture_id, worker_id: str):
        super().__init__(name="kviz-heartbeat", daemon=True)
        self.capture_id = capture_id
        self.worker_id = worker_id
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(HEARTBEAT_INTERVAL):
                try:
                    Capture.objects.filter(id=self.capture_id, status__in=ACTIVE,
                                           worker_id=self.worker_id).update(
                        heartbeat=timezone.now())
                except UNREACHABLE:  # the database is away: beat again in a second
                    _drop_connection()
        finally:
            _drop_connection()  # this thread's own connection; threads do not share them

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


def _owned(capture: Capture, worker_id: str):
    return Capture.objects.filter(id=capture.id, status__in=ACTIVE, worker_id=worker_id)


def _counters(capture: Capture) -> dict:
    return {"packets": capture.packets, "bytes": capture.bytes,
            "elapsed": round(capture.elapsed, 2)}


def _add_log(capture: Capture, worker_id: str, line: str) -> None:
    """Log a line; with the database away it is kept and written with the next write."""
    capture.log = append_log(capture.log, line)
    try:
        _owned(capture, worker_id).update(log=capture.log)
    except UNREACHABLE as exc:
        _outage(capture).failed(exc)


@observe.timed_run  # its duration, for /metrics (captures/jobs/observe.py)
def run(capture_id, worker_id: str) -> str | None:
    """Run capture `capture_id`; returns its final status, or None when not ours to run."""
    now = timezone.now()
    claimed = Capture.objects.filter(id=capture_id, status=Status.QUEUED).update(
        status=Status.RUNNING, started=now, heartbeat=now, worker_id=worker_id)
    if not claimed:
        return None
    capture = Capture.objects.get(id=capture_id)
    layout: list = []  # the diagram's whole layout, when it is built after the announcement
    try:
        return _run(capture, worker_id, layout)
    finally:
        for pending in layout:  # announced: the page has the first screen meanwhile
            lay_out(capture, pending.finish)


def _run(capture: Capture, worker_id: str, layout: list) -> str | None:
    publisher = LivePublisher(capture.id)
    heartbeat = Heartbeat(capture.id, worker_id)
    heartbeat.start()
    status, error = Status.COMPLETED, ""
    try:
        publisher.status(Status.RUNNING, _counters(capture))
        _add_log(capture, worker_id, f"running on {worker_id}")
        if capture.target_kind != TargetKind.UPLOAD:
            failure = _record(capture, worker_id, publisher)
            if failure:
                status, error = Status.FAILED, failure
        _analyse(capture, worker_id, layout)
    except Lost:
        return None
    except DiskFull as exc:
        log.warning("capture %s: %s", capture.id, exc)
        status, error = Status.FAILED, str(exc)
    except Exception as exc:  # every failure becomes the row's error
        if is_disk_full(exc):
            log.warning("capture %s: disk full: %s", capture.id, exc)
            status, error = Status.FAILED, str(DiskFull(exc))
        else:
            log.exception("capture %s failed", capture.id)
            status, error = Status.FAILED, str(exc) or exc.__class__.__name__
    finally:
        heartbeat.stop()
    try:
        finished = _persist(capture, lambda: _owned(capture, worker_id).update(
            status=status, finished=timezone.now(), error=error[:2000],
            log=append_log(capture.log, f"{status}" + (f": {error[:200]}" if error else ""))))
    except UNREACHABLE as exc:
        # Nothing more can be written; the viewers still learn how the run ended, and the
        # reaper marks the row interrupted once the database is back.
        log.error("capture %s ended (%s) but the database never came back: %s",
                  capture.id, status, exc)
        publisher.status(Status.FAILED, _counters(capture),
                         f"the database could not be reached for {DATABASE_WAIT:.0f} s at the "
                         f"end of the capture ({status}{': ' + error if error else ''}); its "
                         "files are kept")
        return None
    finally:
        _drop_connection()
    if finished:
        capture.status = status
        publisher.status(status, _counters(capture), error)
        return status
    return None


@dataclass
class _Recording:
    """One part's source being written to its own file."""

    row: StoredFile
    source: sources.LiveSource
    path: Path
    decoder: LiveDecoder
    out: object = None
    size: int = 0
    ended: bool = False


def _record(capture: Capture, worker_id: str, publisher: LivePublisher) -> str:
    """Record every part of the capture at once (one, or a path's several), each to its own
    file. Parts open in parallel and each stream joins the loop the moment it opens: a stream
    nobody reads fills its pipe and the kernel drops what it cannot queue. A part that cannot
    start is named (a row with its error, after the recorded ones) and the others go on; none
    at all fails the run. Files are numbered in the order their parts start, so a file's
    position is its index everywhere from its first packet on: live rows, frames, downloads
    and the analysis. Returns why the recording failed ("disk full: ..."), or ''."""
    parts = sources.parts_of(capture.target_kind, capture.target_spec)
    capture.directory.mkdir(parents=True, exist_ok=True)
    reserve = capture.directory / ".reserve"
    try:
        _take_reserve(reserve)
    except OSError as exc:
        reserve.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFull(exc) from None
        raise
    try:
        return _record_parts(capture, worker_id, publisher, parts)
    finally:
        reserve.unlink(missing_ok=True)  # the analysis' room
        capture_storage.publish_spool(capture.id)  # a remote storage gets the whole files


def _take_reserve(path: Path) -> None:
    with open(path, "wb") as fp:
        try:
            os.posix_fallocate(fp.fileno(), 0, DISK_RESERVE)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            fp.write(b"\0" * DISK_RESERVE)  # a file system without fallocate
            os.fsync(fp.fileno())


def _record_parts(capture: Capture, worker_id: str, publisher: LivePublisher,
                  parts: list) -> str:
    unstarted = [(part, part.error) for part in parts if part.error]
    for part, why in unstarted:
        _add_log(capture, worker_id, f"not captured: {part.vantage or part.kind}: {why}")
    opening = ThreadPoolExecutor(max_workers=max(1, min(8, len(parts))),
                                 thread_name_prefix="kviz-open")
    pending = {opening.submit(_open_part, capture, part): part
               for part in parts if not part.error}
    recordings: list[_Recording] = []
    try:
        failure = _capture_loop(capture, worker_id, publisher, pending, recordings, unstarted)
    finally:
        opening.shutdown(wait=True)
        for future in pending:  # opened after the loop ended: close what it started
            if future.exception() is None:
                future.result().close()
        for recording in recordings:
            if not recording.out.closed:  # the loop ended early (the row was lost)
                recording.out.close()
                recording.decoder.finish()
            recording.source.close()
        _persist(capture, lambda: StoredFile.objects.bulk_create([
            StoredFile(capture=capture, position=len(recordings) + index, role=part.role,
                       vantage=part.vantage, error=why[:2000])
            for index, (part, why) in enumerate(unstarted)]))
    for recording in recordings:
        said = getattr(recording.source, "failure", lambda: "")()
        if said:
            _add_log(capture, worker_id, f"source: {said}")
    if not recordings:
        if len(unstarted) == 1:  # a capture of one place fails with that place's own words
            raise RuntimeError(unstarted[0][1])
        reasons = "; ".join(f"{part.vantage or part.kind}: {why}" for part, why in unstarted)
        raise RuntimeError(reasons or "nothing could be captured")
    return failure


def _open_part(capture: Capture, part: sources.Part) -> sources.LiveSource:
    source = sources.open_live(part.kind, part.spec, capture.bpf_filter, capture.limit_packets,
                               capture_id=capture.id)
    source.open()
    return source


def _start_recording(capture, worker_id, part: sources.Part, source, position: int):
    # tcpdump in a pod or on a node writes classic pcap; everything else here is pcapng.
    suffix = "pcap" if getattr(source, "writes_pcap", False) else "pcapng"
    path = capture.directory / f"{StoredFile.stem(position)}.{suffix}"
    row = StoredFile.objects.create(
        capture=capture, position=position, role=part.role,
        vantage=source.vantage or part.vantage, path=str(path.relative_to(settings.DATA_DIR)),
        interfaces={str(k): v for k, v in sorted(source.interfaces.items())})
    _write_meta(path, source)
    if capture.inventory is None:
        inventory = source.inventory()
        if inventory is not None:
            _owned(capture, worker_id).update(inventory=inventory)
            capture.inventory = inventory
    label = row.label if capture.target_kind == TargetKind.PATH else ""
    recording = _Recording(row, source, path, LiveDecoder(path, source.interfaces,
                                                          file_index=position, label=label))
    recording.out = open(path, "wb", buffering=0)  # noqa: SIM115 - closed when the loop ends
    recording.out.write(source.preamble)
    recording.size = len(source.preamble)
    recording.decoder.start()
    return recording


def _write_meta(path: Path, source) -> None:
    # Beside the pcap, so a re-analysis (after a crash, or by `kviz analyze`) knows where the
    # file was taken and what the interface indexes of a cooked capture mean.
    meta = {"schema": "kviz.capture-meta/1", "vantage": source.vantage,
            "interfaces": {str(k): v for k, v in sorted(source.interfaces.items())}}
    path.with_name(path.name + ".meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _join_opened(capture, worker_id, pending: dict, recordings: list, unstarted: list,
                 stopping: bool) -> None:
    """Move parts that finished opening into the loop (or name why they could not)."""
    for future in [f for f in pending if f.done()]:
        part = pending.pop(future)
        try:
            source = future.result()
        except Exception as exc:  # one part's failure is named, the others go on
            why = str(exc) or exc.__class__.__name__
            unstarted.append((part, why))
            _add_log(capture, worker_id, f"not captured: {part.vantage or part.kind}: "
                                         f"{why[:200]}")
            continue
        recordings.append(_start_recording(capture, worker_id, part, source, len(recordings)))
        if stopping:  # the capture is already stopping: this part stops at once
            source.stop()


def _write_all(out, chunk: bytes) -> None:
    """Unbuffered writes may be short (a disk that fills up mid-chunk); the rest is written
    or the error raised."""
    view = memoryview(chunk)
    while view:
        written = out.write(view)
        if not written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _capture_loop(capture, worker_id, publisher, pending: dict, recordings: list,
                  unstarted: list) -> str:
    """Returns why recording failed (the disk is full), or ''."""
    start = time.monotonic()
    last_batch = last_check = last_sync = start
    stop_reason, stopped_at = "", None
    failure = ""
    while pending or not recordings or not all(r.ended for r in recordings):
        _join_opened(capture, worker_id, pending, recordings, unstarted, bool(stop_reason))
        if not pending and not recordings:
            break  # nothing opened
        live = {r.source.stream.fileno(): r for r in recordings if not r.ended}
        ready = select.select(list(live), [], [], 0.05)[0] if live else time.sleep(0.05) or []
        for fd in ready:
            recording = live[fd]
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                recording.ended = True
            elif not failure:  # once the disk is full, what is still read is dropped
                try:
                    _write_all(recording.out, chunk)
                    recording.size += len(chunk)
                except OSError as exc:
                    if not is_disk_full(exc):
                        raise
                    log.warning("capture %s: %s", capture.id, exc)
                    # What reached the file before stays; a torn last block is the reader's
                    # to skip, as after a crash.
                    recording.size = recording.out.tell()
                    failure = str(DiskFull(exc, sum(r.size for r in recordings)))
        now = time.monotonic()
        if now - last_sync >= FSYNC_INTERVAL:
            for recording in recordings:
                _fsync(recording.out)
            last_sync = now
        if now - last_batch >= BATCH_INTERVAL:
            _send_batch(capture, recordings, publisher)
            last_batch = now
        capture.packets = sum(r.decoder.packets for r in recordings)
        capture.bytes = sum(r.size for r in recordings)
        capture.elapsed = now - start
        ended = not pending and bool(recordings) and all(r.ended for r in recordings)
        reason = ("disk full" if failure else "") or _limit_reached(capture)  # every turn
        if now - last_check >= CHECK_INTERVAL or ended:
            last_check = now
            reason = _check(capture, worker_id) or reason
        if reason and not stop_reason:
            stop_reason, stopped_at = reason, now
            _add_log(capture, worker_id, f"stopping: {reason}")
            for recording in recordings:
                recording.source.stop()
        if stopped_at is not None and now - stopped_at > STOP_GRACE:
            for recording in recordings:
                if not recording.ended:
                    recording.source.kill()
            stopped_at = float("inf")  # killed once; EOF follows
    for recording in recordings:
        _fsync(recording.out)
        recording.out.close()
        recording.decoder.finish()
    capture.packets = sum(r.decoder.packets for r in recordings)
    capture.bytes = sum(r.size for r in recordings)
    _send_batch(capture, recordings, publisher)

    def save_counts():
        for recording in recordings:
            StoredFile.objects.filter(id=recording.row.id).update(
                packets=recording.decoder.packets, bytes=recording.size)
        return _owned(capture, worker_id).update(packets=capture.packets, bytes=capture.bytes,
                                                 elapsed=capture.elapsed)

    if not _persist(capture, save_counts):
        raise Lost
    if recordings and not stop_reason:
        # A source that stops itself at a limit (dumpcap -c) ends before we see the limit.
        _add_log(capture, worker_id, f"stopped: {_limit_reached(capture)}"
                 if _limit_reached(capture) else "the source ended")
    for recording in recordings:
        if recording.decoder.error:
            _add_log(capture, worker_id, f"live view: {recording.decoder.error}")
    return failure


def _fsync(out) -> None:
    try:
        os.fsync(out.fileno())
    except OSError as exc:  # a full disk is met by the next write, and said there
        if not is_disk_full(exc):
            raise


def _send_batch(capture, recordings: list, publisher) -> None:
    rows = [row for recording in recordings for row in recording.decoder.take()]
    if len(recordings) > 1:
        rows.sort(key=lambda row: row["t"])
    if rows:
        kept, thinned = thin(rows, settings.KVIZ_LIVE_MAX_ROWS)
        publisher.batch(kept, thinned, _counters(capture))


def _check(capture: Capture, worker_id: str) -> str:
    """Save progress; return why to stop when the row says so ("stopped by the user", or the
    worker's shutdown), else ''. With the database away, recording goes on: '' until it is
    back."""
    outage = _outage(capture)
    try:
        saved = _owned(capture, worker_id).update(packets=capture.packets, bytes=capture.bytes,
                                                  elapsed=capture.elapsed)
        status, why = Capture.objects.filter(id=capture.id).values_list(
            "status", "error").first() or (None, "")
    except UNREACHABLE as exc:
        outage.failed(exc)
        return ""
    back = outage.recovered()
    if back:
        _add_log(capture, worker_id, back)
    if not saved or status not in ACTIVE:
        if back and status == Status.INTERRUPTED:
            _taken_for_dead(capture, worker_id, outage)
        raise Lost
    if status != Status.STOPPING:
        return ""
    return why or "stopped by the user"


def _taken_for_dead(capture: Capture, worker_id: str, outage: Outage) -> None:
    """A reaper that could still reach the database while we could not took our silence for
    death and marked the capture interrupted. It was: the run ends here. Its error says why
    it really ended, to the row and to the viewers."""
    why = (f"interrupted: its worker could not reach the database for {outage.took:.0f} s "
           f"({outage.reason}) and was taken for dead; the packets stored so far are kept")
    row = Capture.objects.filter(id=capture.id, status=Status.INTERRUPTED,
                                 worker_id=worker_id).first()
    if row is None:
        return
    row.error, row.log = why, append_log(row.log, why)
    if Capture.objects.filter(id=row.id, status=Status.INTERRUPTED, worker_id=worker_id).update(
            error=row.error, log=row.log):
        announce_final(row)


def _limit_reached(capture: Capture) -> str:
    if capture.elapsed >= capture.limit_seconds:
        return f"time limit ({capture.limit_seconds} s)"
    if capture.packets >= capture.limit_packets:
        return f"packet limit ({capture.limit_packets})"
    if capture.bytes >= capture.limit_bytes:
        return f"size limit ({capture.limit_bytes} bytes)"
    return ""


@observe.timed_analysis  # its duration and failures, for /metrics
def analyse(capture: Capture, on_stored=None) -> dict:
    """Analyse the stored files together; write analysis.json beside them; return the row's
    summary. Each file's packet count is kept on its row (frames beyond it are 404).
    `on_stored(name, model)`, when given, is called once the document is stored, with the
    model still open."""
    with capture_storage.analysis_inputs(capture) as inputs:  # local files, or copies
        return _analyse_files(capture, inputs, on_stored)


def _analyse_files(capture: Capture, inputs: list, on_stored=None) -> dict:
    stored = [row for row, _path in inputs]
    if not stored:
        raise CaptureError("no capture file was stored")
    files = [CaptureFile(path, f.vantage or None,
                         {int(k): str(v) for k, v in (f.interfaces or {}).items()})
             for f, path in inputs]
    model = analyze_files(files, capture.inventory, max_flows=settings.KVIZ_MAX_FLOWS,
                          keylog=keylogs.path(capture.id))
    try:
        def save_counts():
            for row, facts in zip(stored, model.capture.get("files") or [], strict=False):
                StoredFile.objects.filter(id=row.id).update(packets=facts.get("packets", 0))

        _persist(capture, save_counts)
        try:  # readers see a whole document or none
            stored_name = capture_storage.store_analysis(capture, model.write_json)
        except OSError as exc:
            if is_disk_full(exc):
                raise CaptureError("disk full: no room left for the analysis") from None
            raise
        if on_stored is not None:
            on_stored(stored_name, model)
        facts = model.capture
        return {
            "analysis_path": stored_name,
            "finding_kinds": findings.encode(model.annotations),  # the list's search
            "summary": {
                "packets": facts.get("packets", 0), "duration": facts.get("duration"),
                "partial": bool(facts.get("partial")),
                "warnings": list(facts.get("warnings") or [])[:10],
                "participants": len(model.participants), "messages": len(model.messages),
                "connections": len(model.connections), "dns": len(model.dns_exchanges),
                "http": len(model.http),
            },
        }
    finally:
        model.close()


def _analyse(capture: Capture, worker_id: str, layout: list) -> None:
    """Analyse what was stored and lay out the diagram (a big capture's first screen; its whole
    layout goes into `layout`, built once the capture is announced completed)."""

    # What the page shows first, before run() announces the capture completed, so that the
    # page opens on it: from the model while it is open (the stored document's head alone is
    # slow to read again). Without it the page still works: the web makes it.
    def prepare_page(name, model):
        _describe(capture, name, model)

        def begin():
            pending = diagram_cache.begin_first(capture, model)
            if pending is not None:
                layout.append(pending)
        lay_out(capture, begin)

    try:
        result = analyse(capture, prepare_page)
    except CaptureError as exc:
        if capture.target_kind == TargetKind.UPLOAD:
            raise
        # The packets are stored and downloadable even when they cannot be explained.
        _add_log(capture, worker_id, f"analysis failed: {exc}")
        return
    update = dict(result)
    if capture.target_kind == TargetKind.UPLOAD:
        update["packets"] = result["summary"]["packets"]
    _persist(capture, lambda: _owned(capture, worker_id).update(**update))
    capture.packets = update.get("packets", capture.packets)
    capture.analysis_path = result["analysis_path"]


def _describe(capture: Capture, name: str, model) -> None:
    """The owner's description of the analysis just stored as `name` (captures.jobs.described);
    a failure leaves it to the web."""
    capture.analysis_path = name
    try:
        described.write_owner(capture, model)
    except Exception:
        log.warning("capture %s: its description was left to the web", capture.id,
                    exc_info=True)


def lay_out(capture: Capture, build=None) -> None:
    """The diagram layout the owner's page asks for first, built from the stored analysis
    (captures.jobs.diagram_cache.ensure_first, or `build`: a big capture's PendingLayout.finish)
    so that opening the page finds it. Without it the page still works (the web builds it on
    the first request), so a failure here is logged, never the capture's."""
    started = time.monotonic()
    try:
        (build or (lambda: diagram_cache.ensure_first(capture)))()
    except Exception:
        log.warning("capture %s: the diagram layout was left to the web", capture.id,
                    exc_info=True)
        return
    log.info("capture %s: diagram laid out in %.1f s", capture.id, time.monotonic() - started)


def reanalyse(capture_id) -> bool:
    """Analyse a finished capture again (its key log was deleted: what it decrypted goes)."""
    capture = Capture.objects.filter(id=capture_id).first()
    if capture is None or not capture.is_terminal or not capture.analysis_path:
        return False
    result = _analysis_or_log(capture)
    if result is None:
        return False
    capture.analysis_path = result["analysis_path"]
    lay_out(capture)  # the old layout is older than the new analysis: built again
    Capture.objects.filter(id=capture.id).update(**result)
    return True


def analyse_interrupted(capture_id) -> bool:
    """Analyse what an interrupted capture stored before its worker died."""
    capture = Capture.objects.filter(id=capture_id, status=Status.INTERRUPTED).first()
    if capture is None or capture.analysis_path:
        return False
    result = _analysis_or_log(capture)
    if result is None:
        return False
    capture.analysis_path = result["analysis_path"]
    lay_out(capture)
    Capture.objects.filter(id=capture.id, status=Status.INTERRUPTED).update(
        packets=result["summary"]["packets"], **result)
    return True


def _analysis_or_log(capture: Capture) -> dict | None:
    """analyse(capture), or None with the reason in the capture's log."""
    try:
        return analyse(capture, lambda name, model: _describe(capture, name, model))
    except CaptureError as exc:
        Capture.objects.filter(id=capture.id).update(
            log=append_log(capture.log, f"analysis failed: {exc}"))
        return None
