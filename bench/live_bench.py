"""Live path benchmark (issue 4): packet written → row received by a WebSocket client.

What is replayed, and how: the Ethernet frames of a recorded capture (default: the corpus's
skydive DNS + HTTP pcap, looped) are fed through the runner's real live path at a paced rate:
a source whose stream is a pipe, written by a paced thread as pcapng blocks stamped with the
wall-clock time they are written. Everything after the pipe is the product: the runner appends
to capture.pcapng and fsyncs, the live decoder (tshark -l) reads the growing file, batches are
numbered, stored and sent through the channel layer, and kviz's WebSocket consumer (the real
ASGI app) forwards them to a client in this process. Latency per shown row = receive time - the
packet's timestamp. The stored share = packets tshark counts in the stored file / packets sent.

Redis carries the channel layer and the replay store, as in a deployment with a worker (default
redis://127.0.0.1:6379/13, keys under a unique prefix, removed at the end); the database is
SQLite in a temporary data directory. `--redis ""` tries the embedded mode, where the runner's
thread and the consumer share an in-memory layer.

    .venv/bin/python bench/live_bench.py [--seconds 5] [--redis redis://127.0.0.1:6379/13]

Last line: `p95_ms_2k=A stored_pct_20k=B` (targets: p95 < 500 ms at 2k pkt/s; 100 % stored
at 20k pkt/s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_PCAP = (ROOT.parent / "shared" / "corpus" / "dns-http" /
                "skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap")


def read_frames(path: Path) -> list[bytes]:
    """The frames of a classic little/big-endian pcap (Ethernet)."""
    data = path.read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    frames, offset = [], 24
    while offset + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        frames.append(data[offset + 16:offset + 16 + caplen])
        offset += 16 + caplen
    return frames


def pcapng_preamble() -> bytes:
    shb = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
    idb = struct.pack("<IIHHI", 1, 20, 1, 0, 262144) + struct.pack("<I", 20)
    return shb + idb


def epb(frame: bytes, now: float) -> bytes:
    micros = int(now * 1_000_000)
    padded = frame + b"\0" * (-len(frame) % 4)
    length = 32 + len(padded)
    return (struct.pack("<IIIIIII", 6, length, 0, micros >> 32, micros & 0xFFFFFFFF,
                        len(frame), len(frame)) + padded + struct.pack("<I", length))


class PacedSource:
    """A LiveSource (captures.sources.base) whose packets a paced thread writes into a pipe."""

    vantage = "bench"

    def __init__(self, frames: list[bytes], rate: int, seconds: float):
        self.frames, self.rate, self.seconds = frames, rate, seconds
        self.interfaces = {0: "bench0"}
        self.preamble = pcapng_preamble()
        self.sent = 0
        self.done = threading.Event()

    def open(self) -> None:
        read_fd, self.write_fd = os.pipe()
        self.stream = os.fdopen(read_fd, "rb", buffering=0)
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def _write(self) -> None:
        # Paced in 1 ms ticks: each tick writes the packets due by then, stamped now.
        start = time.time()
        total = int(self.rate * self.seconds)
        index = 0
        while self.sent < total and not self.done.is_set():
            due = min(total, int((time.time() - start) * self.rate))
            if due > self.sent:
                now = time.time()
                chunk = b"".join(epb(self.frames[(index + i) % len(self.frames)], now)
                                 for i in range(due - self.sent))
                index += due - self.sent
                os.write(self.write_fd, chunk)
                self.sent = due
            time.sleep(0.001)
        os.close(self.write_fd)  # EOF: the runner sees the source end

    def inventory(self):
        return None

    def stop(self) -> None:
        self.done.set()

    def kill(self) -> None:
        self.done.set()

    def close(self) -> None:
        self.thread.join(5)
        self.stream.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_once(frames, rate: int, seconds: float) -> dict:
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator
    from django.contrib.auth import get_user_model

    from captures.jobs import runner
    from captures.models import Capture
    from captures.sources import base
    from captures.web.routing import websocket_urlpatterns

    user, _ = get_user_model().objects.get_or_create(username="bench")
    capture = Capture.objects.create(
        name=f"bench-{rate}", owner=user, target_kind="local", target_spec={"interface": "x"},
        limit_seconds=3600, limit_packets=10**9, limit_bytes=10**12)
    source = PacedSource(frames, rate, seconds)
    base.open_live = lambda *args, **kwargs: source  # the runner asks for a source here

    async def with_user(scope, receive, send):
        return await URLRouter(websocket_urlpatterns)({**scope, "user": user}, receive, send)

    latencies: list[float] = []
    rows_shown = thinned = 0

    async def client():
        nonlocal rows_shown, thinned
        communicator = WebsocketCommunicator(with_user, f"/ws/captures/{capture.id}/")
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        await communicator.receive_json_from(timeout=10)  # hello
        await communicator.send_json_to({"resume_after": 0})
        worker = threading.Thread(target=runner.run, args=(capture.id, "bench:1"), daemon=True)
        worker.start()
        while True:
            event = await communicator.receive_json_from(timeout=seconds + 120)
            received = time.time()
            if event["kind"] == "batch":
                latencies.extend(received - row["t"] for row in event["rows"])
                rows_shown += len(event["rows"])
                thinned += event["thinned"]
            elif event["status"] in ("completed", "failed", "interrupted"):
                break
        await communicator.disconnect()
        await asyncio.to_thread(worker.join, 30)

    asyncio.run(client())
    capture.refresh_from_db()
    stored = int(subprocess.run(
        ["tshark", "-r", str(capture.pcap_file), "-T", "fields", "-e", "frame.number"],
        capture_output=True, text=True, check=False).stdout.split()[-1] or 0)
    return {"rate": rate, "sent": source.sent, "stored": stored, "status": capture.status,
            "error": capture.error, "rows_shown": rows_shown, "thinned": thinned,
            "p50_ms": percentile(latencies, 0.5) * 1000,
            "p95_ms": percentile(latencies, 0.95) * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pcap", type=Path, default=DEFAULT_PCAP)
    parser.add_argument("--redis", default=os.environ.get("KVIZ_BENCH_REDIS",
                                                          "redis://127.0.0.1:6379/13"),
                        help="Redis URL; empty for the embedded mode")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="kviz-live-bench-"))
    tag = f"kvizbench{uuid.uuid4().hex[:6]}"
    os.environ.update({"KVIZ_DATA_DIR": str(workdir), "REDIS_URL": args.redis,
                       "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
                       "KVIZ_LIVE_PREFIX": f"{tag}:live:", "KVIZ_CHANNELS_PREFIX": tag,
                       "DJANGO_SETTINGS_MODULE": "kviz.settings",
                       "DJANGO_ALLOW_ASYNC_UNSAFE": "true"})
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    frames = read_frames(args.pcap)
    mode = f"Redis {args.redis}" if args.redis else "embedded (in-memory layer and store)"
    print(f"live bench: {args.pcap.name} ({len(frames)} frames, looped), {args.seconds:g} s "
          f"per rate, {mode}")
    results = {}
    for rate in (2000, 20000):
        r = run_once(frames, rate, args.seconds)
        results[rate] = r
        pct = 100.0 * r["stored"] / r["sent"] if r["sent"] else 0.0
        print(f"{rate:>6} pkt/s: sent {r['sent']}, stored {r['stored']} ({pct:.2f} %), "
              f"rows shown {r['rows_shown']}, thinned {r['thinned']}, "
              f"latency p50 {r['p50_ms']:.1f} ms p95 {r['p95_ms']:.1f} ms, {r['status']}"
              + (f" ({r['error']})" if r["error"] else ""))
    if args.redis:
        import redis

        client = redis.Redis.from_url(args.redis)
        for key in client.scan_iter(f"{tag}*"):
            client.delete(key)
    shutil.rmtree(workdir, ignore_errors=True)
    stored_pct = 100.0 * results[20000]["stored"] / max(1, results[20000]["sent"])
    print(f"p95_ms_2k={results[2000]['p95_ms']:.1f} stored_pct_20k={stored_pct:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
