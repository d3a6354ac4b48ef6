"""The SVG export streamed from the diagram cache: the same text as the whole-document
renderer, the page's filters applied as the page closes rows up, and memory that does not grow
with the capture (measured in a child process on a capture made from recorded traffic)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from captures.analysis import CaptureFile, analyze_files
from captures.jobs import diagram_cache
from captures.render import build_layout, render_svg
from captures.render.rowindex import layout_index, read_index

from .conftest import corpus_files, corpus_id, corpus_path, model_of

SVG = "{http://www.w3.org/2000/svg}"
ROOT = Path(__file__).resolve().parents[2]


def variant_of(model: dict, directory: Path, fold: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    diagram_cache._write_variant(directory, model, fold, [], [])
    return directory


def streamed(variant: Path, **kwargs) -> tuple[int, str]:
    arrows, pieces = diagram_cache.svg_pieces(variant, **kwargs)
    return arrows, "".join(pieces)


def test_it_streams_exactly_the_whole_document_svg_for_every_capture(tmp_path):
    files = corpus_files()
    if not files:
        pytest.skip("no capture corpus found")
    for number, path in enumerate(files):
        model = model_of(str(path))
        for fold in (True, False):
            variant = variant_of(model, tmp_path / f"{number}-{fold}", fold)
            layout = build_layout(model, fold=fold)
            arrows, text = streamed(variant, title=path.name)
            assert text == render_svg(layout, title=path.name), corpus_id(path)
            assert arrows == sum(1 for _ in layout.visible_rows())


def test_it_draws_only_the_filtered_arrows_closed_up(tmp_path):
    model = model_of(str(corpus_path(
        "dns-http/zeek_dns-search-suffix-nxdomain-then-http11-keepalive-8-conns.pcap")))
    variant = variant_of(model, tmp_path / "v", fold=False)
    layout = build_layout(model, fold=False)
    connection = max(row.connection for row in layout.rows if row.connection is not None)
    arrows, text = streamed(variant, filters={"connection": str(connection), "lane": "",
                                              "phase": ""})
    wanted = [row for row in layout.rows if row.connection == connection]
    assert arrows == len(wanted) > 0
    root = ET.fromstring(text)
    # each arrow is a <g> whose tooltip names its message
    drawn = [g for g in root.iter(f"{SVG}g") if g.find(f"{SVG}title") is not None
             and ", message " in (g.find(f"{SVG}title").text or "")]
    assert len(drawn) == len(wanted)
    assert all(f"connection {connection}," in g.find(f"{SVG}title").text
               or f"connection {connection}" in g.find(f"{SVG}title").text for g in drawn)
    # closed up: the last kept arrow sits near the top of a much shorter picture
    assert float(root.get("height")) < layout.height
    ys = [float(line.get("y1")) for g in drawn for line in g.iter(f"{SVG}line")]
    assert max(ys) < float(root.get("height"))
    # the phase filter reads the same groups as the page
    arrows, _ = streamed(variant, filters={"connection": "", "lane": "", "phase": "handshake"})
    index = read_index(layout_index(layout))
    assert arrows == sum(1 for row in layout.rows
                         if layout.phases[index["group"][row.index]].phase == "handshake")


# Peak RSS as VmHWM of the child's own memory: ru_maxrss would keep the parent's across the
# fork and exec (Linux carries the high-water mark over an execve).
CHILD = """
import os, sys
sys.path.insert(0, sys.argv[2])
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kviz.settings")
import django
django.setup()
from pathlib import Path
from captures.jobs import diagram_cache
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
base = hwm()
arrows, pieces = diagram_cache.svg_pieces(Path(sys.argv[1]), title="big")
size = 0
with open(os.devnull, "w") as out:
    for piece in pieces:
        size += len(piece)
        out.write(piece)
print(arrows, size, base, hwm())
"""


def _bench_module():
    spec = importlib.util.spec_from_file_location("render_bench",
                                                  ROOT / "bench" / "render_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _child_peak(variant: Path) -> tuple[int, int, int]:
    """Arrows, characters and peak RSS (KB, Django included) of streaming `variant`."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(variant), str(ROOT)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    arrows, size, _base_kb, peak_kb = map(int, done.stdout.split())
    return arrows, size, peak_kb


def test_it_streams_a_big_capture_in_bounded_memory(tmp_path):
    pattern = corpus_path("dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap")
    bench = _bench_module()
    peaks = {}
    for packets in (3000, 40000):
        pcap = tmp_path / f"repeat-{packets}.pcap"
        bench.repeated_pcap(pattern, packets, pcap)
        model = analyze_files([CaptureFile(pcap)], None).to_dict()
        # Unfolded: every arrow drawn, the export's worst case.
        variant = variant_of(model, tmp_path / f"v{packets}", fold=False)
        del model
        arrows, size, grown_kb = _child_peak(variant)
        peaks[packets] = (arrows, size, grown_kb)
    small, big = peaks[3000], peaks[40000]
    assert big[0] > 10 * small[0]  # ten times the arrows ...
    assert big[1] > 10 * small[1]  # ... and the text ...
    # ... in about the same memory: a chunk of rows and the head's numbers per row, not the SVG.
    assert big[2] - small[2] < 40 * 1024, json.dumps(peaks)
    assert big[2] < 300 * 1024, json.dumps(peaks)
