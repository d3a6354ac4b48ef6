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
   written beside it, a summary kept in the row, and the row finished: completed, or failed
   with the error. Outcomes map to statuses here and nowhere else.
"""

from __future__ import annotations

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
from django.db import connection
from django.utils import timezone

from captures.adapters.decode import LiveDecoder
from captures.analysis import CaptureError, CaptureFile, analyze_files
from captures.jobs.live import LivePublisher, thin
from captures.models import ACTIVE, Capture, Status, StoredFile, TargetKind, append_log
from captures.sources import base as sources

log = logging.getLogger(__name__)

BATCH_INTERVAL = 0.1  # at most ten batches a second
CHECK_INTERVAL = 0.5  # progress saved, stop and limits checked
FSYNC_INTERVAL = 1.0
HEARTBEAT_INTERVAL = 1.0
STOP_GRACE = 2.0  # a stopped source must end within this, or is killed
READ_SIZE = 256 * 1024


class Lost(Exception):
    """The row is no longer ours (reaped as interrupted, or deleted): stop quietly."""


class Heartbeat(threading.Thread):
    def __init__(self, capture_id, worker_id: str):
        super().__init__(name="kviz-heartbeat", daemon=True)
        self.capture_id = capture_id
        self.worker_id = worker_id
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(HEARTBEAT_INTERVAL):
                Capture.objects.filter(id=self.capture_id, status__in=ACTIVE,
                                       worker_id=self.worker_id).update(heartbeat=timezone.now())
        finally:
            connection.close()  # this thread's own connection; threads do not share them

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


def _owned(capture: Capture, worker_id: str):
    return Capture.objects.filter(id=capture.id, status__in=ACTIVE, worker_id=worker_id)


def _counters(capture: Capture) -> dict:
    return {"packets": capture.packets, "bytes": capture.bytes,
            "elapsed": round(capture.elapsed, 2)}


def _add_log(capture: Capture, worker_id: str, line: str) -> None:
    capture.log = append_log(capture.log, line)
    _owned(capture, worker_id).update(log=capture.log)


def run(capture_id, worker_id: str) -> str | None:
    """Run capture `capture_id`; returns its final status, or None when not ours to run."""
    now = timezone.now()
    claimed = Capture.objects.filter(id=capture_id, status=Status.QUEUED).update(
        status=Status.RUNNING, started=now, heartbeat=now, worker_id=worker_id)
    if not claimed:
        return None
    capture = Capture.objects.get(id=capture_id)
    publisher = LivePublisher(capture.id)
    heartbeat = Heartbeat(capture.id, worker_id)
    heartbeat.start()
    status, error = Status.COMPLETED, ""
    try:
        publisher.status(Status.RUNNING, _counters(capture))
        _add_log(capture, worker_id, f"running on {worker_id}")
        if capture.target_kind != TargetKind.UPLOAD:
            _record(capture, worker_id, publisher)
        _analyse(capture, worker_id)
    except Lost:
        return None
    except Exception as exc:  # every failure becomes the row's error
        log.exception("capture %s failed", capture.id)
        status, error = Status.FAILED, str(exc) or exc.__class__.__name__
    finally:
        heartbeat.stop()
    finished = _owned(capture, worker_id).update(
        status=status, finished=timezone.now(), error=error[:2000],
        log=append_log(capture.log, f"{status}" + (f": {error[:200]}" if error else "")))
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


def _record(capture: Capture, worker_id: str, publisher: LivePublisher) -> None:
    """Record every part of the capture at once (one, or a path's several), each to its own
    file. Parts open in parallel and each stream joins the loop the moment it opens: a stream
    nobody reads fills its pipe and the kernel drops what it cannot queue. A part that cannot
    start is named (a row with its error, after the recorded ones) and the others go on; none
    at all fails the run. Files are numbered in the order their parts start, so a file's
    position is its index everywhere from its first packet on: live rows, frames, downloads
    and the analysis."""
    parts = sources.parts_of(capture.target_kind, capture.target_spec)
    capture.directory.mkdir(parents=True, exist_ok=True)
    unstarted = [(part, part.error) for part in parts if part.error]
    for part, why in unstarted:
        _add_log(capture, worker_id, f"not captured: {part.vantage or part.kind}: {why}")
    opening = ThreadPoolExecutor(max_workers=max(1, min(8, len(parts))),
                                 thread_name_prefix="kviz-open")
    pending = {opening.submit(_open_part, capture, part): part
               for part in parts if not part.error}
    recordings: list[_Recording] = []
    try:
        _capture_loop(capture, worker_id, publisher, pending, recordings, unstarted)
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
        StoredFile.objects.bulk_create([
            StoredFile(capture=capture, position=len(recordings) + index, role=part.role,
                       vantage=part.vantage, error=why[:2000])
            for index, (part, why) in enumerate(unstarted)])
    for recording in recordings:
        failure = getattr(recording.source, "failure", lambda: "")()
        if failure:
            _add_log(capture, worker_id, f"source: {failure}")
    if not recordings:
        if len(unstarted) == 1:  # a capture of one place fails with that place's own words
            raise RuntimeError(unstarted[0][1])
        reasons = "; ".join(f"{part.vantage or part.kind}: {why}" for part, why in unstarted)
        raise RuntimeError(reasons or "nothing could be captured")


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


def _capture_loop(capture, worker_id, publisher, pending: dict, recordings: list,
                  unstarted: list) -> None:
    start = time.monotonic()
    last_batch = last_check = last_sync = start
    stop_reason, stopped_at = "", None
    while pending or not recordings or not all(r.ended for r in recordings):
        _join_opened(capture, worker_id, pending, recordings, unstarted, bool(stop_reason))
        if not pending and not recordings:
            break  # nothing opened
        live = {r.source.stream.fileno(): r for r in recordings if not r.ended}
        ready = select.select(list(live), [], [], 0.05)[0] if live else time.sleep(0.05) or []
        for fd in ready:
            recording = live[fd]
            chunk = os.read(fd, READ_SIZE)
            if chunk:
                recording.out.write(chunk)
                recording.size += len(chunk)
            else:
                recording.ended = True
        now = time.monotonic()
        if now - last_sync >= FSYNC_INTERVAL:
            for recording in recordings:
                os.fsync(recording.out.fileno())
            last_sync = now
        if now - last_batch >= BATCH_INTERVAL:
            _send_batch(capture, recordings, publisher)
            last_batch = now
        capture.packets = sum(r.decoder.packets for r in recordings)
        capture.bytes = sum(r.size for r in recordings)
        capture.elapsed = now - start
        ended = not pending and bool(recordings) and all(r.ended for r in recordings)
        reason = _limit_reached(capture)  # in memory, every turn: overshoot stays small
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
        os.fsync(recording.out.fileno())
        recording.out.close()
        recording.decoder.finish()
    capture.packets = sum(r.decoder.packets for r in recordings)
    capture.bytes = sum(r.size for r in recordings)
    _send_batch(capture, recordings, publisher)
    for recording in recordings:
        StoredFile.objects.filter(id=recording.row.id).update(
            packets=recording.decoder.packets, bytes=recording.size)
    _owned(capture, worker_id).update(packets=capture.packets, bytes=capture.bytes,
                                      elapsed=capture.elapsed)
    if recordings and not stop_reason:
        # A source that stops itself at a limit (dumpcap -c) ends before we see the limit.
        _add_log(capture, worker_id, f"stopped: {_limit_reached(capture)}"
                 if _limit_reached(capture) else "the source ended")
    for recording in recordings:
        if recording.decoder.error:
            _add_log(capture, worker_id, f"live view: {recording.decoder.error}")


def _send_batch(capture, recordings: list, publisher) -> None:
    rows = [row for recording in recordings for row in recording.decoder.take()]
    if len(recordings) > 1:
        rows.sort(key=lambda row: row["t"])
    if rows:
        kept, thinned = thin(rows, settings.KVIZ_LIVE_MAX_ROWS)
        publisher.batch(kept, thinned, _counters(capture))


def _check(capture: Capture, worker_id: str) -> str:
    """Save progress; return why to stop when the row says so ("stopped by the user", or the
    worker's shutdown), else ''."""
    saved = _owned(capture, worker_id).update(packets=capture.packets, bytes=capture.bytes,
                                              elapsed=capture.elapsed)
    status, why = Capture.objects.filter(id=capture.id).values_list(
        "status", "error").first() or (None, "")
    if not saved or status not in ACTIVE:
        raise Lost
    if status != Status.STOPPING:
        return ""
    return why or "stopped by the user"


def _limit_reached(capture: Capture) -> str:
    if capture.elapsed >= capture.limit_seconds:
        return f"time limit ({capture.limit_seconds} s)"
    if capture.packets >= capture.limit_packets:
        return f"packet limit ({capture.limit_packets})"
    if capture.bytes >= capture.limit_bytes:
        return f"size limit ({capture.limit_bytes} bytes)"
    return ""


def analyse(capture: Capture) -> dict:
    """Analyse the stored files together; write analysis.json beside them; return the row's
    summary. Each file's packet count is kept on its row (frames beyond it are 404)."""
    stored = [f for f in capture.stored_files() if f.file.exists()]
    if not stored:
        raise CaptureError("no capture file was stored")
    files = [CaptureFile(f.file, f.vantage or None,
                         {int(k): str(v) for k, v in (f.interfaces or {}).items()})
             for f in stored]
    model = analyze_files(files, capture.inventory, max_flows=settings.KVIZ_MAX_FLOWS)
    for row, facts in zip(stored, model.capture.get("files") or [], strict=False):
        StoredFile.objects.filter(id=row.id).update(packets=facts.get("packets", 0))
    try:
        target = capture.directory / "analysis.json"
        temporary = target.with_suffix(".tmp")
        with open(temporary, "w", encoding="utf-8") as fp:
            model.write_json(fp)
        temporary.replace(target)  # readers see a whole document or none
        facts = model.capture
        return {
            "analysis_path": str(target.relative_to(settings.DATA_DIR)),
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


def _analyse(capture: Capture, worker_id: str) -> None:
    try:
        result = analyse(capture)
    except CaptureError as exc:
        if capture.target_kind == TargetKind.UPLOAD:
            raise
        # The packets are stored and downloadable even when they cannot be explained.
        _add_log(capture, worker_id, f"analysis failed: {exc}")
        return
    update = dict(result)
    if capture.target_kind == TargetKind.UPLOAD:
        update["packets"] = result["summary"]["packets"]
    _owned(capture, worker_id).update(**update)
    capture.packets = update.get("packets", capture.packets)


def analyse_interrupted(capture_id) -> bool:
    """Analyse what an interrupted capture stored before its worker died."""
    capture = Capture.objects.filter(id=capture_id, status=Status.INTERRUPTED).first()
    if capture is None or capture.analysis_path:
        return False
    try:
        result = analyse(capture)
    except CaptureError as exc:
        Capture.objects.filter(id=capture.id).update(
            log=append_log(capture.log, f"analysis failed: {exc}"))
        return False
    Capture.objects.filter(id=capture.id, status=Status.INTERRUPTED).update(
        packets=result["summary"]["packets"], **result)
    return True
