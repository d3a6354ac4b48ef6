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
4. fold and filter (issue 14): in the same page, laid out in the browser from the row index
   (frontend/static/diagram/fold.js): folding everything, opening one fold, and a filter by
   connection, each until the window is drawn; against, in the same run, what they cost before:
   the server laying out the variant (`_write_variant` with that fold open, the page then
   fetching and parsing its head) and the filter fetching every row chunk first
   (`LayoutSource.filtered`, still there for layouts without an index).
Then, with `--svg-capture FILE` (default bench/.cache/mixed-200000.pcapng when present):
5. SVG export, each in a child process of its own (wall seconds, peak RSS as its VmHWM): the
   whole-document renderer (`render("svg", model)` from the stored analysis, the baseline) and
   the stream from the diagram cache (`diagram_cache.svg_pieces`), and building that cache once
   (what opening the page does first).
With `--upload-capture FILE` (default bench/.cache/mixed-534000.pcapng, ~100 MiB, made from the
recorded 200k capture when missing):
6. an upload's wait after its analysis: the first screen as the worker builds it before the
   capture is announced completed (the first KVIZ_FIRST_SCREEN_MESSAGES messages of the
   stored analysis) plus the page's first paint on it, against the target (1 s), also as a
   ratio to the analysis (`upload_wait_vs_analysis`); then the whole first variant, which the
   worker builds after the announcement and the page swaps in, and, as the baseline in the
   same run, that variant as the web built it on the first page view before the worker laid
   anything out (the whole document loaded), each build in a child (wall seconds, peak RSS as
   its VmHWM). The whole build is also printed per row and as a ratio to the analysis of the
   same capture in this run (`upload_layout_vs_analysis`); `--before-root DIR` (a checkout of
   the previous code, e.g. `git worktree add /tmp/layout-old HEAD`) times that code's worker
   build on the same analysis too (`upload_layout_speedup`).
And with `--page-capture FILE` (default bench/.cache/mixed-1000000.pcapng when present):
7. the capture page of a big capture: the cache built as the worker does (folded), then first
   paint in Chromium, against the smallest size's first paint in the same run.
The last line printed is `first_paint_ms_100k=A layout_ms_100k=B` plus the ratios (median of
--repeat runs). A benchmark, not a test: nothing here asserts on timing.
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
CACHE = ROOT / "bench" / ".cache"
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
    folded: Path | None = None  # the fold=1 variant, when there is one

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/harness":
            return self._send(HARNESS.encode(), "text/html")
        if path == "/api/notes/":
            return self._send(b'{"notes": []}', "application/json")
        query = self.path.partition("?")[2]
        variant = self.folded if self.folded and "fold=1" in query else self.variant
        if path == "/api/layout/" and "part=index" in query:
            return self._send((variant / "index.bin").read_bytes(), "application/octet-stream")
        if path == "/api/layout/":
            part = {"part=lean": "head-lean.json", "part=connections": "connections.json"}
            name = next((f for key, f in part.items() if key in query), "head.json")
            return self._send((variant / name).read_bytes(), "application/json")
        if path.startswith("/api/layout/rows/"):
            chunk = int(path.rstrip("/").rsplit("/", 1)[1])
            return self._send((variant / f"rows-{chunk}.json").read_bytes(),
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


# Each returns milliseconds from the reader's action until the new window is drawn.
DRAWN = "await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));"
FOLD_PROBE = """async () => {
  const d = window.kvizDiagram, out = {};
  let t = performance.now();
  d.fold = true; d.expanded.clear(); await d.reload(); __DRAWN__
  out.fold_all = performance.now() - t;
  const fold = d.source.head.folds.findIndex((f) => f.collapsed);
  out.folds = d.source.head.folds.length; out.fold_id = fold;
  if (fold >= 0) {
    t = performance.now(); await d.toggleFold(fold); __DRAWN__
    out.unfold_one = performance.now() - t;
    t = performance.now(); await d.toggleFold(fold); __DRAWN__
    out.fold_one = performance.now() - t;
  }
  t = performance.now();
  d.fold = false; d.expanded.clear(); await d.reload(); __DRAWN__
  out.unfold_all = performance.now() - t;
  out.arrows = d.source.drawnY.length;
  return out;
}""".replace("__DRAWN__", DRAWN)
FILTER_PROBE = """async (connection) => {
  const d = window.kvizDiagram, out = {};
  const select = document.querySelector('.kd-filter[data-filter="connection"]');
  select.value = String(connection);
  let t = performance.now();
  await d.applyFilter(); __DRAWN__
  out.index_ms = performance.now() - t;
  out.matching = d.source.matching;
  select.value = ""; await d.applyFilter();
  // Before: every chunk fetched, then each row tested (a fresh source: no chunk cached).
  const { LayoutSource } = await import("/static/diagram/api.js");
  const fresh = new LayoutSource(d.api, d.base.head, d.base.query, null);
  t = performance.now();
  const old = await fresh.filtered((row) => row.connection === connection); __DRAWN__
  out.fetch_all_ms = performance.now() - t;
  out.old_matching = old.matching;
  return out;
}""".replace("__DRAWN__", DRAWN)


def measure_browser(browser, url: str, probes: bool = False, connection: int | None = None
                    ) -> tuple[float, dict, dict]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    extra: dict = {}
    try:
        page.goto(url)
        page.wait_for_selector("#diagram[data-first-paint]", timeout=120000)
        first_paint = float(page.get_attribute("#diagram", "data-first-paint"))
        scroll = page.evaluate(SCROLL_PROBE)
        if probes:
            extra["fold"] = page.evaluate(FOLD_PROBE)
            if connection is not None:
                extra["filter"] = page.evaluate(FILTER_PROBE, connection)
    finally:
        context.close()
    return first_paint, scroll, extra


# -- exports and big pages, each in a child process of its own --------------------------------

# Peak RSS is the child's VmHWM: ru_maxrss from wait4 would carry this process' own (large)
# high-water mark over the child's fork and exec.
HWM = """
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
"""
# The children below that need Django (the diagram cache): its set-up, then their own lines.
DJANGO_CHILD = HWM + """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kviz.settings")
import django
django.setup()
from pathlib import Path
from captures.jobs import diagram_cache
"""
SVG_OLD = HWM + """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from captures.render.export import render
t = time.perf_counter()
with open(sys.argv[2], encoding="utf-8") as fp:
    model = json.load(fp)
size = len(render("svg", model, title="bench"))
print(json.dumps({"bytes": size, "s": time.perf_counter() - t, "hwm_kb": hwm()}))
"""
SVG_CACHE = DJANGO_CHILD + """
t = time.perf_counter()
target = Path(sys.argv[3])
target.mkdir(parents=True, exist_ok=True)
with open(sys.argv[2], encoding="utf-8") as fp:
    model = json.load(fp)
diagram_cache._write_variant(target, model, sys.argv[4] == "1", [], [])
print(json.dumps({"s": time.perf_counter() - t, "hwm_kb": hwm()}))
"""
# The first layout of a stored analysis: as the worker builds it now (a message at a time,
# captures.jobs.diagram_cache.ensure_first), and as the web built it on the first page view
# before (the whole document loaded, its paths cut, laid out): the baseline.
LAYOUT_STORED = DJANGO_CHILD + """
t = time.perf_counter()
target = Path(sys.argv[3])
target.mkdir(parents=True, exist_ok=True)
import contextlib
# As ensure() builds it (the collector off, where that code does so).
with getattr(diagram_cache, "_no_collection", contextlib.nullcontext)():
    model = diagram_cache.StoredModel(Path(sys.argv[2]), diagram_cache.OWNER_PREPARE)
    diagram_cache._write_variant(target, model, True, [], [])
rows = json.loads((target / "head-lean.json").read_text())["row_count"]
print(json.dumps({"s": time.perf_counter() - t, "hwm_kb": hwm(), "rows": rows}))
"""
LAYOUT_FIRST = DJANGO_CHILD + """
from django.conf import settings
from captures.analysis import CaptureFile, analyze_files
# As begin_first writes it, from the model the worker has just stored (only the first screen
# is timed): argv 2 is the capture, 3 the stored analysis (its time stamps the variant).
model = analyze_files([CaptureFile(Path(sys.argv[2]), None, {})], None)
target = Path(sys.argv[4])
target.parent.mkdir(parents=True, exist_ok=True)
t = time.perf_counter()
diagram_cache._build(target, Path(sys.argv[3]), lambda: diagram_cache.first_screen_model(
    model, settings.KVIZ_FIRST_SCREEN_MESSAGES), True, [], [],
    extra={"first_screen": {"messages": len(model.messages)}})
s = time.perf_counter() - t
model.close()
rows = json.loads((target / "head-lean.json").read_text())["row_count"]
print(json.dumps({"s": s, "hwm_kb": hwm(), "rows": rows}))
"""
LAYOUT_WHOLE = DJANGO_CHILD + """
from captures.jobs.owner_view import unpath
t = time.perf_counter()
target = Path(sys.argv[3])
target.mkdir(parents=True, exist_ok=True)
with open(sys.argv[2], encoding="utf-8") as fp:
    model = unpath(json.load(fp))
diagram_cache._write_variant(target, model, True, [], [])
print(json.dumps({"s": time.perf_counter() - t, "hwm_kb": hwm()}))
"""
SVG_STREAM = DJANGO_CHILD + """
t = time.perf_counter()
arrows, pieces = diagram_cache.svg_pieces(Path(sys.argv[2]), title="bench")
size = 0
with open(os.devnull, "w") as out:
    for piece in pieces:
        size += len(piece)
        out.write(piece)
print(json.dumps({"bytes": size, "arrows": arrows, "s": time.perf_counter() - t,
                  "hwm_kb": hwm()}))
"""


def child(script: str, *args: str, root: Path = ROOT) -> dict:
    """Run `script` in a Python child (importing the code of `root`, this checkout unless
    told); its JSON answer plus its peak RSS in MB (VmHWM)."""
    import json
    import os
    import subprocess

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-c", script, str(root), *args], stdout=out,
                                stderr=err, cwd=root)
        _, status, _usage = os.wait4(proc.pid, 0)
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(err.read()[-3000:].decode("utf-8", "replace"))
        answer = json.loads(out.read())
    answer["rss_mb"] = answer.pop("hwm_kb") / 1024
    return answer


def analysis_json(capture: Path, out: Path) -> float:
    """`kviz analyze` of `capture` into `out` as the runner stores it; its wall seconds."""
    import subprocess

    started = time.perf_counter()
    with open(out, "wb") as fp:
        subprocess.run([sys.executable, "manage.py", "kviz", "analyze", str(capture), "--format",
                        "json"], cwd=ROOT, stdout=fp, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--pattern", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--svg-capture", type=Path, default=CACHE / "mixed-200000.pcapng")
    parser.add_argument("--page-capture", type=Path, default=CACHE / "mixed-1000000.pcapng")
    parser.add_argument("--upload-capture", type=Path, default=CACHE / "mixed-534000.pcapng")
    parser.add_argument("--skip", default="", help="comma-separated: svg, page, upload")
    parser.add_argument("--before-root", type=Path, default=None,
                        help="a checkout of the previous code (e.g. `git worktree add "
                             "/tmp/layout-old HEAD`): its worker's first layout is timed "
                             "too, in the same run")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

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

    results, ratios = {}, {}
    with tempfile.TemporaryDirectory(prefix="kviz-render-bench-") as tmp, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium,
                                             args=CHROMIUM_ARGS, headless=True)

        def serve(variant: Path, folded: Path | None = None):
            handler = type("BenchHandler", (Handler,), {"variant": variant, "folded": folded})
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            return server, f"http://127.0.0.1:{server.server_address[1]}/harness"

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
                layout = build_layout(model, fold=False)
                layout_ms.append((time.perf_counter() - started) * 1000)
            variant = Path(tmp) / f"variant-{size}"
            variant.mkdir()
            started = time.perf_counter()
            diagram_cache._write_variant(variant, model, False, [], [])
            cache_s = time.perf_counter() - started
            # Before the row index, opening one fold had the server lay out that variant.
            fold_id = next((g.id for g in layout.folds), None)
            opened = Path(tmp) / f"variant-{size}-opened"
            opened.mkdir()
            started = time.perf_counter()
            diagram_cache._write_variant(opened, model, True, [fold_id] if fold_id is not None
                                         else [], [])
            server_variant_ms = (time.perf_counter() - started) * 1000
            connection = max((c["id"] for c in model.get("connections") or ()), default=None)
            del layout, model
            head_mb = (variant / "head.json").stat().st_size / 1e6
            index_mb = (variant / "index.bin").stat().st_size / 1e6
            server, url = serve(variant)
            try:
                runs = [measure_browser(browser, url, probes=True, connection=connection)
                        for _ in range(args.repeat)]
            finally:
                server.shutdown()
            paint = statistics.median(r[0] for r in runs)
            scroll_p95 = statistics.median(r[1]["p95"] for r in runs)
            fold = {key: statistics.median(r[2]["fold"][key] for r in runs)
                    for key in ("fold_all", "unfold_all", "unfold_one", "fold_one")
                    if key in runs[0][2]["fold"]}
            filt = ({key: statistics.median(r[2]["filter"][key] for r in runs)
                     for key in ("index_ms", "fetch_all_ms", "matching", "old_matching")}
                    if "filter" in runs[0][2] else {})
            results[size] = (paint, statistics.median(layout_ms), server_variant_ms, fold, filt)
            print(f"size={size} packets={packets} arrows={arrows} analyse_s={analyse_s:.1f} "
                  f"layout_ms={statistics.median(layout_ms):.0f} cache_write_s={cache_s:.1f} "
                  f"head_mb={head_mb:.1f} index_mb={index_mb:.1f} first_paint_ms={paint:.0f} "
                  f"scroll_p95_frame_ms={scroll_p95:.1f}", flush=True)
            print("  fold in the browser: " + " ".join(f"{k}_ms={v:.0f}" for k, v in fold.items())
                  + f"; before, the server's variant with one fold open: "
                  f"{server_variant_ms:.0f} ms (+ fetching its head)", flush=True)
            if filt:
                print(f"  filter by connection {connection}: index_ms={filt['index_ms']:.0f} "
                      f"matching={filt['matching']:.0f}; before, every chunk fetched: "
                      f"fetch_all_ms={filt['fetch_all_ms']:.0f} "
                      f"(matching={filt['old_matching']:.0f})", flush=True)
        largest = max(results)
        label = f"{largest // 1000}k" if largest >= 1000 else str(largest)
        paint, layout_time, server_variant_ms, fold, filt = results[largest]
        worst_fold = max(fold.values()) if fold else float("nan")
        ratios[f"fold_speedup_{label}"] = server_variant_ms / worst_fold
        if filt:
            ratios[f"filter_speedup_{label}"] = filt["fetch_all_ms"] / max(filt["index_ms"], 0.1)
        summary = (f"first_paint_ms_{label}={paint:.0f} layout_ms_{label}={layout_time:.0f} "
                   f"worst_fold_ms_{label}={worst_fold:.0f} "
                   f"filter_ms_{label}={filt.get('index_ms', float('nan')):.0f}")

        if "svg" not in skip and args.svg_capture.exists():
            summary += " " + svg_section(args.svg_capture, Path(tmp), ratios)
        if "upload" not in skip and upload_capture(args.upload_capture).exists():
            summary += " " + upload_section(args.upload_capture, Path(tmp), browser, serve,
                                            args.before_root,
                                            ratios)
        if "page" not in skip and args.page_capture.exists():
            smallest = results[min(results)][0]
            summary += " " + page_section(args.page_capture, Path(tmp), browser, serve, smallest,
                                          ratios)
        browser.close()
    print(" ".join([summary, *(f"{k}={v:.2f}" for k, v in ratios.items())]))


def svg_section(capture: Path, tmp: Path, ratios: dict) -> str:
    """SVG export of a big capture: the whole-document renderer against the stream."""
    analysis = tmp / "svg-analysis.json"
    analyse_s = analysis_json(capture, analysis)
    old = child(SVG_OLD, str(analysis))
    cache = child(SVG_CACHE, str(analysis), str(tmp / "svg-variant"), "1")
    new = child(SVG_STREAM, str(tmp / "svg-variant"))
    unfolded = child(SVG_CACHE, str(analysis), str(tmp / "svg-variant-all"), "0")
    new_all = child(SVG_STREAM, str(tmp / "svg-variant-all"))
    print(f"svg {capture.name}: analysis {analyse_s:.1f} s; whole document {old['s']:.1f} s "
          f"{old['rss_mb']:.0f} MB {old['bytes'] / 1e6:.1f} MB of SVG; cache built once "
          f"(page opened) {cache['s']:.1f} s {cache['rss_mb']:.0f} MB; streamed from it "
          f"{new['s']:.1f} s {new['rss_mb']:.0f} MB ({new['arrows']} arrows); unfolded: "
          f"cache {unfolded['s']:.1f} s {unfolded['rss_mb']:.0f} MB, streamed {new_all['s']:.1f} s "
          f"{new_all['rss_mb']:.0f} MB ({new_all['arrows']} arrows, "
          f"{new_all['bytes'] / 1e6:.0f} MB of SVG)", flush=True)
    ratios["svg_time_ratio"] = old["s"] / new["s"]
    ratios["svg_rss_ratio"] = old["rss_mb"] / new["rss_mb"]
    return (f"svg_stream_s={new['s']:.1f} svg_stream_rss_mb={new['rss_mb']:.0f} "
            f"svg_unfolded_stream_rss_mb={new_all['rss_mb']:.0f}")


def upload_capture(path: Path) -> Path:
    """The upload's capture; `mixed-N.pcapng` is made from the recorded 200k one when missing
    (bench/analyze_bench.py, `concatenate`: copies shifted in time, joined and cut)."""
    if path.exists() or not path.name.startswith("mixed-"):
        return path
    packets = path.name.removeprefix("mixed-").removesuffix(".pcapng")
    if not packets.isdigit() or not (CACHE / "mixed-200000.pcapng").exists():
        return path
    sys.path.insert(0, str(ROOT / "bench"))
    import analyze_bench

    analyze_bench.ensure_capture(int(packets), "concat", False, None)
    return path


def upload_section(capture: Path, tmp: Path, browser, serve, before_root: Path | None,
                   ratios: dict) -> str:
    """An upload of ~100 MiB: from "analysis done" (analysis.json stored) to "the page shows
    the diagram". The worker lays out the page's first screen (the first
    KVIZ_FIRST_SCREEN_MESSAGES messages), announces the capture completed, then lays out the
    whole first variant (captures.jobs.diagram_cache.begin_first), so that wait is the first
    screen's build plus the page's first paint on it. Also timed: the whole variant as the
    worker builds it after the announcement (the page swaps it in), and as the web built it
    from the whole document on the first page view before the worker laid anything out, in
    this run the baseline (time and peak RSS, each in a child). The whole build is also given
    as a ratio to the analysis of the same capture in this run, per row (µs) and, with
    `before_root`, against the previous code's worker build."""
    analysis = tmp / "upload-analysis.json"
    analyse_s = analysis_json(capture, analysis)
    before = child(LAYOUT_WHOLE, str(analysis), str(tmp / "upload-before"))
    first = child(LAYOUT_FIRST, str(capture), str(analysis), str(tmp / "upload-layout" / "first"))
    worker = child(LAYOUT_STORED, str(analysis), str(tmp / "upload-variant"))
    previous = None
    if before_root is not None:
        previous = child(LAYOUT_STORED, str(analysis), str(tmp / "upload-previous"),
                         root=before_root)
    paints = {}
    for name, variant in (("first", tmp / "upload-layout" / "first"),
                          ("whole", tmp / "upload-variant")):
        server, url = serve(variant)
        try:
            paints[name] = statistics.median(measure_browser(browser, url)[0] for _ in range(3))
        finally:
            server.shutdown()
    wait = first["s"] + paints["first"] / 1000
    whole_wait = worker["s"] + paints["whole"] / 1000
    rows = worker["rows"]
    print(f"upload {capture.name} ({capture.stat().st_size / 2**20:.0f} MiB): analysis "
          f"{analyse_s:.1f} s; the worker's first screen ({first['rows']} rows) "
          f"{first['s']:.2f} s (peak RSS with the analysis {first['rss_mb']:.0f} MB), first "
          f"paint on it "
          f"{paints['first']:.0f} ms; analysis done -> diagram shown {wait:.2f} s "
          f"(target: 1 s); the whole layout after the announcement {worker['s']:.1f} s "
          f"{worker['rss_mb']:.0f} MB, {worker['s'] / rows * 1e6:.1f} µs a row for {rows} "
          f"rows, {worker['s'] / analyse_s:.2f}× the analysis, first paint on it "
          f"{paints['whole']:.0f} ms (analysis done -> whole diagram {whole_wait:.1f} s; "
          f"before, by the web from the whole document: {before['s']:.1f} s "
          f"{before['rss_mb']:.0f} MB)", flush=True)
    if previous is not None:
        print(f"upload: the previous code's worker layout ({before_root}) {previous['s']:.1f} s "
              f"{previous['rss_mb']:.0f} MB, {previous['s'] / rows * 1e6:.1f} µs a row, "
              f"{previous['s'] / analyse_s:.2f}× the analysis", flush=True)
        ratios["upload_layout_speedup"] = previous["s"] / worker["s"]
        ratios["upload_layout_rss_vs_previous"] = worker["rss_mb"] / previous["rss_mb"]
    ratios["upload_layout_time_ratio"] = before["s"] / worker["s"]
    ratios["upload_layout_rss_ratio"] = before["rss_mb"] / worker["rss_mb"]
    ratios["upload_layout_vs_analysis"] = worker["s"] / analyse_s
    ratios["upload_wait_vs_analysis"] = wait / analyse_s
    return (f"upload_analysis_s={analyse_s:.1f} upload_wait_after_analysis_s={wait:.2f} "
            f"upload_whole_layout_after_analysis_s={whole_wait:.1f} "
            f"upload_layout_rss_mb={worker['rss_mb']:.0f} "
            f"upload_layout_us_per_row={worker['s'] / rows * 1e6:.1f}")


def page_section(capture: Path, tmp: Path, browser, serve, baseline_ms: float,
                 ratios: dict) -> str:
    """The capture page of a big capture: its folded cache as the worker writes it, then
    first paint (median of 3) against the smallest size's first paint in the same run."""
    analysis = tmp / "page-analysis.json"
    analyse_s = analysis_json(capture, analysis)
    variant = tmp / "page-variant"
    cache = child(LAYOUT_STORED, str(analysis), str(variant))
    analysis.unlink()  # hundreds of MB
    server, url = serve(variant)
    try:
        runs = [measure_browser(browser, url) for _ in range(3)]
    finally:
        server.shutdown()
    paint = statistics.median(r[0] for r in runs)
    import json

    lean = variant / "head-lean.json"
    rows = json.loads((variant / "head.json").read_text())["row_count"]
    print(f"page {capture.name}: {rows} arrows, analysis {analyse_s:.1f} s, "
          f"first layout (the worker's) {cache['s']:.1f} s {cache['rss_mb']:.0f} MB, "
          f"head {(variant / 'head.json').stat().st_size / 1e6:.1f} MB (lean "
          f"{lean.stat().st_size / 1e6:.1f} MB), "
          f"index {(variant / 'index.bin').stat().st_size / 1e6:.1f} MB; first paint "
          f"{paint:.0f} ms (the smallest size: {baseline_ms:.0f} ms)", flush=True)
    ratios["page_big_vs_small"] = paint / baseline_ms
    return f"page_first_paint_ms={paint:.0f} page_layout_rss_mb={cache['rss_mb']:.0f}"


if __name__ == "__main__":
    main()
