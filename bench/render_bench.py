"""Diagram benchmark: layout time in Python and first paint in headless Chromium, for models
of about 1k, 10k and 100k arrows built from real traffic.

    .venv/bin/python bench/render_bench.py
    .venv/bin/python bench/render_bench.py --sizes 1000,10000 --pattern PCAP

The pattern is a recorded capture (default: the corpus' DNS + two HTTP/1.1 connections,
skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap). It is repeated end to end: each copy shifted
in time and given its own client ports (so each copy is new connections, not retransmissions
of the first), written as one pcap, and analysed by the real engine. Then, per size:
1. layout: `build_layout(model, fold=False)` timed (every arrow placed: the browser's worst
   case), and the diagram cache written as the server does (captures/jobs/diagram_cache.py);
2. first paint: Chromium opens a page running the real frontend/static/diagram modules against
   those cache files (served statically, as Django's FileResponse would), unfolded; the time
   is from navigation start until the first screen's rows are all drawn (`data-first-paint`);
3. scroll: 2 s of continuous scrolling through the middle; the 95th percentile frame interval.
The last line printed is `first_paint_ms_100k=A layout_ms_100k=B` (median of --repeat runs).
A benchmark, not a test: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STATIC = ROOT / "frontend" / "static"
DEFAULT_PATTERN = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]

HARNESS = """<!doctype html><html><head><meta charset="utf-8">
<meta name="csrf-token" content="x"><link rel="stylesheet" href="/static/diagram/diagram.css">
</head><body>
<section id="diagram" class="kd" data-api="/api/" data-status="completed" data-read-only="true"
  data-frames="false" data-name="bench">
  <div class="kd-toolbar">
  <select class="kd-filter" data-filter="connection"><option value="">all</option></select>
  <select class="kd-filter" data-filter="lane"><option value="">all</option></select>
  <input type="checkbox" class="kd-fold-all">
  <span class="kd-exports"></span><span class="kd-status"></span></div>
  <div class="kd-main"><div class="kd-scroll" tabindex="0"><div class="kd-head"><svg></svg></div>
  <div class="kd-body"></div></div><aside class="kd-details" hidden></aside></div>
</section>
<script type="module" src="/static/diagram/main.js"></script></body></html>"""


# -- the traffic: one recorded pattern, repeated ---------------------------------------------------

def read_pcap(path: Path) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    data = path.read_bytes()
    if data[:4] != b"\xd4\xc3\xb2\xa1":
        raise SystemExit(f"{path}: the pattern must be a little-endian microsecond pcap")
    header, records, at = data[:24], [], 24
    while at + 16 <= len(data):
        sec, usec, incl, _orig = struct.unpack_from("<IIII", data, at)
        records.append((sec, usec, data[at + 16:at + 16 + incl]))
        at += 16 + incl
    return header, records


def client_ports(records) -> set[int]:
    """Ephemeral ports of the pattern (Ethernet/IPv4 TCP and UDP): the ones each copy renames."""
    ports = set()
    for _s, _u, frame in records:
        if len(frame) < 38 or frame[12:14] != b"\x08\x00" or frame[23] not in (6, 17):
            continue
        offset = 14 + (frame[14] & 0x0F) * 4
        for port in struct.unpack_from("!HH", frame, offset):
            if port >= 32768:
                ports.add(port)
    return ports


def repeated_pcap(pattern: Path, arrows: int, out: Path) -> int:
    header, records = read_pcap(pattern)
    ports = sorted(client_ports(records))
    copies = max(1, -(-arrows // len(records)))
    first = records[0][0] + records[0][1] / 1e6
    span = records[-1][0] + records[-1][1] / 1e6 - first + 0.05
    chunks = [header]
    written = 0
    for copy in range(copies):
        # Each copy gets fresh client ports (1024 + a counter; 55k ports before one repeats).
        mapping = {port: 1024 + (copy * len(ports) + j) % 64000 for j, port in enumerate(ports)}
        for sec, usec, frame in records:
            if written >= arrows:
                break
            frame = bytearray(frame)
            if len(frame) >= 38 and frame[12:14] == b"\x08\x00" and frame[23] in (6, 17):
                offset = 14 + (frame[14] & 0x0F) * 4
                src, dst = struct.unpack_from("!HH", frame, offset)
                struct.pack_into("!HH", frame, offset, mapping.get(src, src), mapping.get(dst, dst))
            t = sec + usec / 1e6 + copy * span
            chunks.append(struct.pack("<IIII", int(t), round((t % 1) * 1e6) % 1000000,
                                      len(frame), len(frame)) + bytes(frame))
            written += 1
    out.write_bytes(b"".join(chunks))
    return written


# -- serving the cache to the real frontend -----------------------------------------------------

class Handler(http.server.SimpleHTTPRequestHandler):
    variant: Path = Path()

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/harness":
            return self._send(HARNESS.encode(), "text/html")
        if path == "/api/notes/":
            return self._send(b'{"notes": []}', "application/json")
        if path == "/api/layout/":
            return self._send((self.variant / "head.json").read_bytes(), "application/json")
        if path.startswith("/api/layout/rows/"):
            chunk = int(path.rstrip("/").rsplit("/", 1)[1])
            return self._send((self.variant / f"rows-{chunk}.json").read_bytes(),
                              "application/json")
        if path.startswith("/static/"):
            file = STATIC / path.removeprefix("/static/")
            kind = "text/javascript" if file.suffix == ".js" else "text/css"
            return self._send(file.read_bytes(), kind)
        self.send_error(404)

    def _send(self, body: bytes, kind: str):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


SCROLL_PROBE = """async () => {
  const s = document.querySelector('#diagram .kd-scroll');
  s.scrollTop = s.scrollHeight / 2;
  const frames = []; let last = performance.now(); const end = last + 2000;
  await new Promise((done) => {
    function step(now) {
      frames.push(now - last); last = now; s.scrollTop += 120;
      if (now < end) requestAnimationFrame(step); else done();
    }
    requestAnimationFrame(step);
  });
  frames.sort((a, b) => a - b);
  return {p95: frames[Math.floor(frames.length * 0.95)], frames: frames.length,
          pending: document.querySelectorAll('#diagram .kd-pending').length};
}"""


def measure_browser(browser, url: str) -> tuple[float, dict]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_selector("#diagram[data-first-paint]", timeout=60000)
        first_paint = float(page.get_attribute("#diagram", "data-first-paint"))
        scroll = page.evaluate(SCROLL_PROBE)
    finally:
        context.close()
    return first_paint, scroll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--pattern", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    import os

    import django
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kviz.settings")
    django.setup()
    from captures.analysis import CaptureFile, analyze_files
    from captures.jobs import diagram_cache
    from captures.render import build_layout
    from tests.analysis.conftest import corpus_dir

    pattern = args.pattern or (corpus_dir() or Path("/nonexistent")) / DEFAULT_PATTERN
    if not pattern.exists():
        raise SystemExit(f"no pattern capture at {pattern} (give --pattern)")
    from playwright.sync_api import sync_playwright

    results = {}
    with tempfile.TemporaryDirectory(prefix="kviz-render-bench-") as tmp, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium,
                                             args=CHROMIUM_ARGS, headless=True)
        # A few packets of the pattern are not arrows (copies folded into one message): ask
        # for enough packets that the model has at least `size` arrows.
        per_packet = (len(analyze_files([CaptureFile(pattern)], None).to_dict()["messages"])
                      / len(read_pcap(pattern)[1]))
        for size in [int(s) for s in args.sizes.split(",")]:
            pcap = Path(tmp) / f"repeat-{size}.pcap"
            packets = repeated_pcap(pattern, int(size / per_packet) + 1, pcap)
            started = time.perf_counter()
            model = analyze_files([CaptureFile(pcap)], None).to_dict()
            analyse_s = time.perf_counter() - started
            arrows = len(model["messages"])
            layout_ms = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                build_layout(model, fold=False)
                layout_ms.append((time.perf_counter() - started) * 1000)
            variant = Path(tmp) / f"variant-{size}"
            variant.mkdir()
            started = time.perf_counter()
            diagram_cache._write_variant(variant, model, False, [], [])
            cache_s = time.perf_counter() - started
            head_mb = (variant / "head.json").stat().st_size / 1e6
            handler = type("BenchHandler", (Handler,), {"variant": variant})
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(handler))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            try:
                url = f"http://127.0.0.1:{server.server_address[1]}/harness"
                runs = [measure_browser(browser, url) for _ in range(args.repeat)]
            finally:
                server.shutdown()
            paint = statistics.median(r[0] for r in runs)
            scroll_p95 = statistics.median(r[1]["p95"] for r in runs)
            results[size] = (paint, statistics.median(layout_ms))
            print(f"size={size} packets={packets} arrows={arrows} analyse_s={analyse_s:.1f} "
                  f"layout_ms={statistics.median(layout_ms):.0f} cache_write_s={cache_s:.1f} "
                  f"head_mb={head_mb:.1f} first_paint_ms={paint:.0f} "
                  f"scroll_p95_frame_ms={scroll_p95:.1f}", flush=True)
        browser.close()
    largest = max(results)
    label = f"{largest // 1000}k" if largest >= 1000 else str(largest)
    paint, layout = results[largest]
    print(f"first_paint_ms_{label}={paint:.0f} layout_ms_{label}={layout:.0f}")


if __name__ == "__main__":
    main()
