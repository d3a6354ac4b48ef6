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
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

from captures.adapters.decode import LiveDecoder
from captures.analysis import CaptureError, CaptureFile, analyze_files
from captures.jobs.live import LivePublisher, thin
from captures.models import ACTIVE, Capture, Status, TargetKind, append_log
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


def _record(capture: Capture, worker_id: str, publisher: LivePublisher) -> None:
    source = sources.open_live(capture.target_kind, capture.target_spec, capture.bpf_filter,
                               capture.limit_packets, capture_id=capture.id)
    capture.directory.mkdir(parents=True, exist_ok=True)
    # tcpdump in a pod or on a node writes classic pcap; everything else here is pcapng.
    suffix = "pcap" if capture.target_kind in ("pod", "node") else "pcapng"
    path = capture.directory / f"capture.{suffix}"
    capture.pcap_path = str(path.relative_to(settings.DATA_DIR))
    source.open()
    try:
        inventory = source.inventory()
        _write_meta(path, source)
        _owned(capture, worker_id).update(pcap_path=capture.pcap_path, inventory=inventory)
        capture.inventory = inventory
        _capture_loop(capture, worker_id, publisher, source, path)
        failure = getattr(source, "failure", lambda: "")()
        if failure:
            _add_log(capture, worker_id, f"source: {failure}")
    finally:
        source.close()


def _write_meta(path: Path, source) -> None:
    # Beside the pcap, so a re-analysis (after a crash, or by `kviz analyze`) knows where the
    # file was taken and what the interface indexes of a cooked capture mean.
    meta = {"schema": "kviz.capture-meta/1", "vantage": source.vantage,
            "interfaces": {str(k): v for k, v in sorted(source.interfaces.items())}}
    path.with_name(path.name + ".meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _capture_loop(capture, worker_id, publisher, source, path: Path) -> None:
    decoder = LiveDecoder(path, source.interfaces)
    start = time.monotonic()
    last_batch = last_check = last_sync = start
    stop_reason, stopped_at = "", None
    size = 0
    fd = source.stream.fileno()
    with open(path, "wb", buffering=0) as out:
        out.write(source.preamble)
        size += len(source.preamble)
        decoder.start()
        ended = False
        while not ended:
            if select.select([fd], [], [], 0.05)[0]:
                chunk = os.read(fd, READ_SIZE)
                if chunk:
                    out.write(chunk)
                    size += len(chunk)
                else:
                    ended = True
            now = time.monotonic()
            if now - last_sync >= FSYNC_INTERVAL:
                os.fsync(out.fileno())
                last_sync = now
            if now - last_batch >= BATCH_INTERVAL:
                _send_batch(capture, decoder, publisher)
                last_batch = now
            capture.packets, capture.bytes, capture.elapsed = decoder.packets, size, now - start
            reason = _limit_reached(capture)  # in memory, every turn: overshoot stays small
            if now - last_check >= CHECK_INTERVAL or ended:
                last_check = now
                reason = _check(capture, worker_id) or reason
            if reason and not stop_reason:
                stop_reason, stopped_at = reason, now
                _add_log(capture, worker_id, f"stopping: {reason}")
                source.stop()
            if stopped_at is not None and now - stopped_at > STOP_GRACE and not ended:
                source.kill()
                stopped_at = float("inf")  # killed once; EOF follows
        os.fsync(out.fileno())
    decoder.finish()
    capture.packets, capture.bytes = decoder.packets, size
    _send_batch(capture, decoder, publisher)
    _owned(capture, worker_id).update(packets=capture.packets, bytes=capture.bytes,
                                      elapsed=capture.elapsed)
    if not stop_reason:
        # A source that stops itself at a limit (dumpcap -c) ends before we see the limit.
        _add_log(capture, worker_id, f"stopped: {_limit_reached(capture)}"
                 if _limit_reached(capture) else "the source ended")
    if decoder.error:
        _add_log(capture, worker_id, f"live view: {decoder.error}")


def _send_batch(capture, decoder, publisher) -> None:
    rows = decoder.take()
    if rows:
        kept, thinned = thin(rows, settings.KVIZ_LIVE_MAX_ROWS)
        publisher.batch(kept, thinned, _counters(capture))


def _check(capture: Capture, worker_id: str) -> str:
    """Save progress; return "stopped by the user" when the row says so, else ''."""
    saved = _owned(capture, worker_id).update(packets=capture.packets, bytes=capture.bytes,
                                              elapsed=capture.elapsed)
    status = Capture.objects.filter(id=capture.id).values_list("status", flat=True).first()
    if not saved or status not in ACTIVE:
        raise Lost
    return "stopped by the user" if status == Status.STOPPING else ""


def _limit_reached(capture: Capture) -> str:
    if capture.elapsed >= capture.limit_seconds:
        return f"time limit ({capture.limit_seconds} s)"
    if capture.packets >= capture.limit_packets:
        return f"packet limit ({capture.limit_packets})"
    if capture.bytes >= capture.limit_bytes:
        return f"size limit ({capture.limit_bytes} bytes)"
    return ""


def analyse(capture: Capture) -> dict:
    """Analyse the stored file; write analysis.json beside it; return the row's summary."""
    pcap = capture.pcap_file
    if pcap is None or not pcap.exists():
        raise CaptureError("no capture file was stored")
    model = analyze_files([CaptureFile.from_path(pcap)], capture.inventory,
                          max_flows=settings.KVIZ_MAX_FLOWS)
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
