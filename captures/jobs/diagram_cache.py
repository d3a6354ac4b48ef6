"""The browser's diagram: a capture's layout cut into a head and row chunks, cached on disk.

Why: a 100k-arrow capture has a layout of ~50 MB as one JSON document, too slow to send, parse
and keep in a browser just to draw the 40 rows on screen. So the layout (captures.render, the
one place positions come from) is built once per variant (folded or not, which folds a reader
opened, which phases a reader closed) and written as
- `head.json`: everything but the rows, plus `ys` (every row's y, null when hidden) so the
  browser can find the rows inside the scrolled window by binary search, and
- `rows-<k>.json`: rows k*CHUNK_ROWS .. (k+1)*CHUNK_ROWS-1, fetched as they scroll into view;
- `head-lean.json` and `connections.json`: the head without its connections and annotations,
  and the connections (what the page asks for first, and after its first paint);
- `index.bin`: every row's place in the layout in ~40 bytes (captures/render/rowindex.py), from
  which the browser folds, unfolds, closes phases and filters on its own: a variant the browser
  asks the server for is only ever the first one it shows.
Variants live in `<capture dir>/layout/<key>/`; the oldest beyond KEEP_VARIANTS are removed, and
a variant older than analysis.json is rebuilt.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from captures.models import Capture
from captures.render import build_layout
from captures.render.rowindex import filtered_head, layout_index, match_rows, read_index
from captures.render.svg import stream_svg

CHUNK_ROWS = 1000
KEEP_VARIANTS = 12
MAX_IDS = 500  # folds opened or phases closed in one request


class NoAnalysis(Exception):
    pass


def variant_key(fold: bool, expand: list[int], collapse: list[int]) -> str:
    key = f"f{int(fold)}-e{'.'.join(map(str, expand))}-c{'.'.join(map(str, collapse))}"
    if len(key) > 120:  # long lists: a stable hash keeps the directory name short
        import hashlib

        key = f"f{int(fold)}-h{hashlib.sha256(key.encode()).hexdigest()[:32]}"
    return key


def load_model(capture: Capture) -> dict:
    path = capture.analysis_file
    if path is None or not path.exists():
        raise NoAnalysis
    with open(path, encoding="utf-8") as fp:
        return json.load(fp)


def ensure(capture: Capture, fold: bool, expand: list[int], collapse: list[int],
           view: str = "all", prepare=None) -> Path:
    """The directory of this layout variant, built if missing or older than the analysis.

    `prepare` turns the stored model into what `view` may read (captures.web.redaction); each
    view keeps its own variants."""
    analysis = capture.analysis_file
    if analysis is None or not analysis.exists():
        raise NoAnalysis
    root = capture.directory / "layout"
    target = root / f"{view}-{variant_key(fold, expand, collapse)}"
    head = target / "head.json"
    if (head.exists() and head.stat().st_mtime >= analysis.stat().st_mtime
            and (target / "index.bin").exists()):  # a variant of before the row index: rebuilt
        return target
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        model = load_model(capture)
        _write_variant(building, prepare(model) if prepare else model, fold, expand, collapse)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        # Readers see a whole variant or none. Should another request have built it at the
        # same moment, theirs is as good.
        with contextlib.suppress(OSError):
            os.rename(building, target)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    _forget_old(root)
    return target


def index_file(variant: Path) -> Path | None:
    path = variant / "index.bin"
    return path if path.exists() else None


def svg_pieces(variant: Path, title: str | None = None, filters: dict | None = None,
               transform=None) -> tuple[int, Iterator[str]]:
    """The SVG of a cached variant, streamed from its head and one row chunk at a time (memory
    bounded by a chunk and the head's per-row numbers, whatever the capture's size), and the
    number of arrows it draws. `filters` ({connection, lane, phase}, as the page's) draws only
    the matching rows, closed up as the page shows them; `transform` turns each stored document
    into what the reader may see (captures.web.redaction)."""
    transform = transform or (lambda doc: doc)
    with open(variant / "head.json", encoding="utf-8") as fp:
        head = transform(json.load(fp))
    if filters and any(filters.values()):
        index_path = index_file(variant)
        if index_path is None:
            raise NoAnalysis
        index = read_index(index_path.read_bytes(), as_lists=False)
        match = match_rows(index, head["phases"], **filters)
        del index["t"], index["tok_kind"], index["tok_key"], index["tok_val"], index["tok_len"]
        head = filtered_head(head, index, match)
    ys = head["ys"]
    arrows = sum(y is not None for y in ys)

    def rows():
        for number in range(-(-head["row_count"] // head["chunk_rows"])):
            path = chunk_file(variant, number)
            if path is None:
                return
            with open(path, encoding="utf-8") as fp:
                chunk = transform(json.load(fp))
            for row in chunk["rows"]:
                row["y"] = ys[row["index"]]  # the head's (a filter moves rows up)
                yield row

    return arrows, stream_svg(head, rows(), title=title)


def chunk_file(variant: Path, chunk: int) -> Path | None:
    path = variant / f"rows-{chunk}.json"
    return path if chunk >= 0 and path.exists() else None


def _write_variant(directory: Path, model: dict, fold: bool, expand: list[int],
                   collapse: list[int]) -> None:
    layout = build_layout(model, fold=fold, expand=expand, collapse=collapse)
    (directory / "index.bin").write_bytes(layout_index(layout))
    doc = layout.to_dict()
    rows = doc.pop("rows")
    messages = model.get("messages") or []
    ids = [row["message"] for row in rows]
    doc.update({
        "row_count": len(rows), "chunk_rows": CHUNK_ROWS,
        "ys": [row["y"] for row in rows],
        # Deep links name a message id; the browser needs its row. Usually they are equal.
        "message_rows": None if ids == list(range(len(ids))) else ids,
        "expanded": sorted(expand), "collapsed_phases": sorted(collapse),
    })
    _dump(directory / "head.json", doc)
    # What the page's first screen waits for: the head without the connections (the filter's
    # list, fetched after the first paint) and the annotations (read from the rows' badges);
    # at 1M arrows that is 15 MB less to parse first.
    _dump(directory / "connections.json", {"connections": doc.pop("connections")})
    doc.pop("annotations")
    doc["lean"] = True
    _dump(directory / "head-lean.json", doc)
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start:start + CHUNK_ROWS]
        for row in chunk:
            message = messages[row["index"]] if row["index"] < len(messages) else {}
            # Packet details need a little more of the message than the arrow does.
            row["len"] = message.get("len")
            row["hop_detail"] = message.get("hops") or []
        _dump(directory / f"rows-{start // CHUNK_ROWS}.json", {"start": start, "rows": chunk})


def _dump(path: Path, doc) -> None:
    # dumps, not dump: json.dump streams through the pure-Python encoder, several times slower
    # than the C one that dumps uses for a whole document.
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    with open(path, "w", encoding="utf-8") as fp:
        fp.write(text)


def _forget_old(root: Path) -> None:
    variants = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    for old in variants[KEEP_VARIANTS:]:
        shutil.rmtree(old, ignore_errors=True)
