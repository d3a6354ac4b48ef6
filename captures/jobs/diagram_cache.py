"""The browser's diagram: a capture's layout cut into a head and row chunks, cached on disk.

Why: a 100k-arrow capture has a layout of ~50 MB as one JSON document, too slow to send, parse
and keep in a browser just to draw the 40 rows on screen. So the layout (captures.render, the
one place positions come from) is built once per variant (folded or not, which folds a reader
opened, which phases a reader closed) and written as
- `head.json`: everything but the rows, plus `ys` (every row's y, null when hidden) so the
  browser can find the rows inside the scrolled window by binary search, and
- `rows-<k>.json`: rows k*CHUNK_ROWS .. (k+1)*CHUNK_ROWS-1, fetched as they scroll into view;
- `head-lean.json` and `connections.json`: the head without its connections and annotations
  and with its phases as columns, and the connections (what the page asks for first, and
  after its first paint);
- `index.bin`: every row's place in the layout in ~40 bytes (captures/render/rowindex.py), from
  which the browser folds, unfolds, closes phases and filters on its own: a variant the browser
  asks the server for is only ever the first one it shows.
Variants live in `<capture dir>/layout/<view>-<key>/`; the oldest beyond KEEP_VARIANTS are
removed, and a variant older than analysis.json is rebuilt. One process builds a variant at a
time: the others wait for it (an flock on `layout/.<variant>.lock`) and read what it wrote.

The variant the owner's page asks for first is built by the worker once the analysis is stored
(`ensure_first`, captures.jobs.runner); the others by the web on their first request. Laying
out a big capture takes about as long as analysing it, so for one of more than
KVIZ_FIRST_SCREEN_MESSAGES messages the worker first writes that variant's first screen (the
variant of its first messages, `<variant>-first/`, its head saying `first_screen`), announces
the capture completed, and builds the whole variant while holding its lock (`begin_first`).
A page that asks meanwhile gets the first screen (`ensure(first_screen=True)`), reads its rows
and index with `first=1`, and asks again until the whole variant answers; everything else that
needs the variant waits for the worker's build instead of making one of its own.

Building one reads the stored analysis a message at a time
into the layout's columns (captures.render.columns: typed arrays and interned strings, ~150
bytes a row) and writes the rows' JSON from them directly; memory is those columns, not the
model's document nor a Row object per message.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import itertools
import json
import os
import re
import shutil
import tempfile
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from django.conf import settings

from captures.jobs import derived
from captures.jobs.owner_view import OWNER, may_name_paths, unpath
from captures.models import Capture
from captures.render import build_layout
from captures.render.columns import ColumnLayout, Unusual, lay_out_columns
from captures.render.rowindex import filtered_head, layout_index, match_rows, read_index
from captures.render.svg import stream_svg

CHUNK_ROWS = 1000
KEEP_VARIANTS = 12
MAX_IDS = 500  # folds opened or phases closed in one request
READ_BLOCK = 1 << 20  # characters read at a time from a stored analysis
WRITE_SLICE = 1000  # list items encoded at a time
# What build_layout reads besides the messages: a stored analysis lists them before its
# messages (captures.analysis.model, write_json), so the messages can be read one at a time.
HEAD_KEYS = frozenset({"capture", "participants", "connections", "http", "annotations"})
# What it does not read at all: the DNS exchanges (a third of a 1M-packet capture's head).
SKIPPED_KEYS = frozenset({"dns"})


class NoAnalysis(Exception):
    pass


class Prepare(NamedTuple):
    """What a view may read of the stored model, given a part at a time: the model without its
    messages (`head`), then each message in order (`message`). Never the whole model at once:
    at 1M messages that alone is gigabytes. `changes(text, start, end)`, when given, says
    whether `message` can change the message whose JSON text is text[start:end]; a message it
    cannot change is kept as read (most messages name no server path)."""

    head: Callable[[dict], dict]
    message: Callable[[dict], dict]
    changes: Callable[[str, int, int], bool] | None = None


# The owner's (and a full share link's) model: the stored one without server paths.
OWNER_PREPARE = Prepare(unpath, unpath, may_name_paths)


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


def variant_dir(capture: Capture, fold: bool, expand: list[int], collapse: list[int],
                view: str) -> Path:
    return capture.directory / "layout" / f"{view}-{variant_key(fold, expand, collapse)}"


def is_fresh(variant: Path, analysis: Path) -> bool:
    """Whether `variant` was built whole from this analysis (not an older one): its head
    carries the analysis' time (captures.jobs.derived)."""
    return (derived.is_current(variant / "head.json", analysis)
            and (variant / "index.bin").exists())  # a variant of before the row index


def ensure_first(capture: Capture) -> Path:
    """The variant the owner's page asks for first (folded, no fold opened, no phase closed:
    frontend/static/diagram/main.js), built now if it is not there."""
    return ensure(capture, True, [], [], view=OWNER, prepare=OWNER_PREPARE)


def first_screen_dir(variant: Path) -> Path:
    """Where the first screen of `variant` (its first messages' layout) is kept."""
    return variant.with_name(variant.name + "-first")


class PendingLayout:
    """The owner's first variant while the worker builds it: its lock is held until `finish`
    (or `release`, or the process' end) lets it go."""

    def __init__(self, capture: Capture, target: Path, lock) -> None:
        self.capture, self.target, self._lock = capture, target, lock

    def finish(self) -> Path:
        try:
            analysis = self.capture.analysis_file
            if analysis is None or not analysis.exists():
                raise NoAnalysis
            if not is_fresh(self.target, analysis):
                _build(self.target, analysis, lambda: StoredModel(analysis, OWNER_PREPARE),
                       True, [], [])
            return self.target
        finally:
            self.release()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file lets the flock go
            self._lock = None


def begin_first(capture: Capture, model) -> PendingLayout | None:
    """The worker's layout of the analysis it has just stored (`model`, still open: a
    captures.analysis.model.SequenceModel). A small one is laid out whole now (None). A big one
    gets its first screen now, from `model` (the stored document's head is tens of MB to read
    at 1M packets), and a PendingLayout whose `finish` builds the whole variant: the capture
    can be announced completed in between, and its page opens on the first screen instead of
    waiting a layout's time (issue 14)."""
    if len(model.messages) <= settings.KVIZ_FIRST_SCREEN_MESSAGES:
        ensure_first(capture)
        return None
    analysis = capture.analysis_file
    if analysis is None or not analysis.exists():
        raise NoAnalysis
    target = variant_dir(capture, True, [], [], OWNER)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_file(target)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_fresh(target, analysis):
            _build(first_screen_dir(target), analysis,
                   lambda: first_screen_model(model, settings.KVIZ_FIRST_SCREEN_MESSAGES),
                   True, [], [], extra={"first_screen": {"messages": len(model.messages)}})
    except BaseException:
        lock.close()
        raise
    return PendingLayout(capture, target, lock)


def first_screen_model(model, limit: int) -> dict:
    """The owner's model of `model`'s first `limit` messages: with the connections and HTTP
    requests those name, not all of them (what the first screen's layout reads of them, and
    what its filter lists). The annotations stay whole: messages name them by position."""
    messages = [unpath(message) for message in itertools.islice(model.messages, limit)]
    named = {message.get("connection") for message in messages}
    return {**unpath({
        "capture": model.capture, "participants": model.participants,
        "connections": [c for c in model.connections if c.get("id") in named],
        "http": [request for request in model.http if request.get("connection") in named],
        "annotations": model.annotations,
    }), "messages": messages}


def ensure(capture: Capture, fold: bool, expand: list[int], collapse: list[int],
           view: str = "all", prepare: Prepare | None = None,
           first_screen: bool = False) -> Path:
    """The directory of this layout variant, built if missing or older than the analysis.

    `prepare` turns the stored model into what `view` may read (OWNER_PREPARE, or
    captures.web.redaction's for a redacted link); each view keeps its own variants. Another
    process building the same variant is waited for; with `first_screen`, its first screen is
    the answer instead when there is one (the page's first request, see the module doc)."""
    analysis = capture.analysis_file
    if analysis is None or not analysis.exists():
        raise NoAnalysis
    target = variant_dir(capture, fold, expand, collapse, view)
    if is_fresh(target, analysis):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock_file(target) as lock:
        if first_screen:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # the worker is laying it out: its first screen, if any
                partial = first_screen_dir(target)
                if is_fresh(partial, analysis):
                    return partial
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits while another process builds it
        if not is_fresh(target, analysis):
            _build(target, analysis, lambda: StoredModel(analysis, prepare), fold, expand,
                   collapse)
    return target


def first_screen(capture: Capture, view: str = OWNER) -> Path | None:
    """The first screen a page was given (`ensure(first_screen=True)`), while it is current."""
    analysis = capture.analysis_file
    partial = first_screen_dir(variant_dir(capture, True, [], [], view))
    if analysis is None or not analysis.exists() or not is_fresh(partial, analysis):
        return None
    return partial


def _lock_file(variant: Path):
    return open(variant.with_name(f".{variant.name}.lock"), "a")  # the caller closes it


def _build(target: Path, analysis: Path, model_of: Callable[[], object], fold: bool,
           expand: list[int], collapse: list[int], extra: dict | None = None) -> None:
    """Write the variant of `model_of()` (a StoredModel of `analysis`, or a model document
    made from it) into `target`, stamped with the analysis' time; readers see a whole variant
    or none. `extra` joins its head."""
    root = target.parent
    building = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        with _no_collection():
            made_from = derived.version(analysis)
            _write_variant(building, model_of(), fold, expand, collapse, extra=extra)
            derived.stamp(building / "head.json", made_from)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        # Readers see a whole variant or none. Should another request have built it at the
        # same moment, theirs is as good.
        with contextlib.suppress(OSError):
            os.rename(building, target)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    _forget_old(root)


class StoredModel:
    """A stored analysis as a layout reads it: its head (everything but the messages and
    SKIPPED_KEYS) and its messages one at a time, each passed through `prepare`; `messages()`
    reads them again from the file. A document whose messages come before the rest (not
    written by the analysis) is read whole instead."""

    def __init__(self, path: Path, prepare: Prepare | None = None) -> None:
        self.path = path
        self.prepare = prepare or Prepare(_same, _same)
        self._whole: list | None = None
        self._skip = -1  # characters before the messages' array (-1: none)
        with open(path, encoding="utf-8") as fp:
            reader = _Reader(fp)
            head = reader.head(SKIPPED_KEYS)
            if reader.at_messages and not head.keys() >= HEAD_KEYS:
                fp.seek(0)
                head = json.load(fp)
                self._whole = head.pop("messages", None) or []
            elif reader.at_messages:
                self._skip = reader.dropped + reader.at
        head = {key: value for key, value in head.items() if key not in SKIPPED_KEYS}
        changes = self.prepare.changes
        if (changes is not None and self.prepare.head is self.prepare.message
                and not changes(_encode(head), 0, None)):
            self.head = head  # the owner's `unpath` would walk every string to change none
        else:
            self.head = {key: value for key, value in self.prepare.head(head).items()
                         if key not in SKIPPED_KEYS}

    def messages(self) -> Iterator[dict]:
        """The messages, read from the file again at each call."""
        message, changes = self.prepare.message, self.prepare.changes
        if self._whole is not None:
            yield from (message(m) for m in self._whole)
            return
        if self._skip < 0:
            return
        with open(self.path, encoding="utf-8") as fp:
            left = self._skip  # the head was read once: skipped, not parsed, this time
            while left > 0:
                left -= len(fp.read(min(left, READ_BLOCK)) or "x" * left)
            reader = _Reader(fp)
            checked, clean = None, False
            for found, start, end in reader.items():
                if changes is None:
                    yield message(found)
                    continue
                # One search per block read: most blocks name no path at all.
                if reader.text is not checked:
                    checked = reader.text
                    clean = not changes(checked, 0, len(checked))
                yield found if clean or not changes(reader.text, start, end) else message(found)


def read_head(path: Path) -> dict:
    """A stored analysis without its messages, which are never read (the rest is before them
    in what the analysis writes; a document written otherwise is read whole)."""
    with open(path, encoding="utf-8") as fp:
        reader = _Reader(fp)
        head = reader.head()
        if reader.at_messages and not head.keys() >= HEAD_KEYS | SKIPPED_KEYS:
            fp.seek(0)
            head = json.load(fp)
            head.pop("messages", None)
    return head


def _same(value):
    return value


class _Reader:
    """A JSON object read from a text file a block at a time: its keys up to `messages`
    (`head`), then that array's items one at a time (`items`)."""

    SPACE = re.compile(r"[ \t\n\r]*")

    def __init__(self, fp) -> None:
        self.fp, self.text, self.at, self.ended = fp, "", 0, False
        self.dropped = 0  # characters of the document before self.text
        self.at_messages = False
        self.decode = json.JSONDecoder().raw_decode

    def _more(self, at_least: int = READ_BLOCK) -> bool:
        # Reading as much again as is left keeps a long value's retries linear in its size.
        block = self.fp.read(max(READ_BLOCK, at_least))
        if not block:
            self.ended = True
            return False
        self.text = self.text[self.at:] + block
        self.dropped += self.at
        self.at = 0
        return True

    def _next(self) -> str:
        while True:
            self.at = self.SPACE.match(self.text, self.at).end()
            if self.at < len(self.text):
                return self.text[self.at]
            if not self._more():
                raise ValueError("the analysis document ends early")

    def _take(self, char: str) -> None:
        if self._next() != char:
            raise ValueError(f"the analysis document is not a kviz.sequence/1 model "
                             f"(expected {char!r})")
        self.at += 1

    def _value(self):
        self._next()
        while True:
            try:
                value, end = self.decode(self.text, self.at)
            except json.JSONDecodeError:
                # Three times as much again: a long value (the DNS exchanges, 10 MB at 200k
                # packets) is parsed in vain a few times, not at every block.
                if not self._more(3 * (len(self.text) - self.at)):
                    raise
                continue
            # A number at the end of what was read may go on in the next block.
            if end == len(self.text) and not self.ended and not isinstance(
                    value, dict | list | str) and self._more():
                continue
            self.at = end
            return value

    def head(self, skip=frozenset()) -> dict:
        """Every key before `messages` (all of them when there is none) but those in `skip`
        (read, and forgotten at once)."""
        head: dict = {}
        self._take("{")
        if self._next() == "}":
            return head
        while True:
            key = self._value()
            self._take(":")
            if key == "messages":
                self.at_messages = True
                return head
            value = self._value()
            if key not in skip:
                head[key] = value
            del value
            if self._next() == "}":
                return head
            self._take(",")

    def items(self) -> Iterator[tuple[object, int, int]]:
        """The array's items, each with where its text is in `self.text` (until the next)."""
        self._take("[")
        if self._next() == "]":
            return
        decode = self.decode
        while True:
            # The usual case first: an object right here, whole in what was read, then ",".
            text, at = self.text, self.at
            if text.startswith("{", at):
                try:
                    value, end = decode(text, at)
                except json.JSONDecodeError:
                    value = None
                if value is not None:
                    self.at = end
                    yield value, at, end
                    if text.startswith(",", end) and self.text is text:
                        self.at = end + 1
                        continue
                    if self._next() == "]":
                        return
                    self._take(",")
                    continue
            start = self.dropped + self.at
            value = self._value()
            yield value, start - self.dropped, self.at
            if self._next() == "]":
                return
            self._take(",")


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


def _write_variant(directory: Path, model, fold: bool, expand: list[int],
                   collapse: list[int], columns: bool = True, extra: dict | None = None) -> str:
    """Lay out `model` (a StoredModel, or a model document) and write the variant's files;
    returns which way ("columns" or "layout").

    The columns (captures.render.columns): the layout's rows as typed arrays and interned
    strings, their JSON written directly, a few µs and ~150 bytes a row. A model they do not
    expect (`Unusual`), or `columns=False`, takes build_layout's Layout and its dicts instead
    (`_write_layout`), the path the exports take; both write the same bytes
    (tests/render/test_columns.py). `extra` joins the head's keys."""
    if isinstance(model, dict):
        head = {key: value for key, value in model.items() if key != "messages"}

        def messages():
            return iter(model.get("messages") or [])
    else:
        head, messages = model.head, model.messages
    if columns:
        try:
            with _no_collection():
                laid = lay_out_columns(head, messages(), fold=fold, expand=expand,
                                       collapse=collapse)
        except Unusual:
            laid = None
        if laid is not None:
            _write_columns(directory, laid, expand, collapse, extra or {})
            return "columns"
    _write_layout(directory, head, messages(), fold, expand, collapse, extra or {})
    return "layout"


@contextlib.contextmanager
def _no_collection():
    """The cyclic garbage collector off: a layout makes no cycles, but reading a million
    messages makes a million dicts, and each collection walks everything kept so far."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _write_columns(directory: Path, laid: ColumnLayout, expand: list[int],
                   collapse: list[int], extra: dict) -> None:
    (directory / "index.bin").write_bytes(laid.index_bytes())
    n = laid.n
    doc = laid.as_layout().head_dict()
    connections, annotations = doc.pop("connections"), doc.pop("annotations")
    ids = laid.message_ids()
    doc.update({
        "row_count": n, "chunk_rows": CHUNK_ROWS,
        "ys": _Slices(n, laid.ys),
        "message_rows": None if ids is None else _Slices(n, lambda a, b: ids[a:b].tolist()),
        "expanded": sorted(expand), "collapsed_phases": sorted(collapse), **extra,
    })
    _dump(directory / "head.json", {**doc, "connections": connections,
                                    "annotations": annotations})
    _dump(directory / "connections.json", {"connections": connections})
    _dump(directory / "head-lean.json", _lean(doc))
    del doc, connections, annotations
    for start in range(0, n, CHUNK_ROWS):
        with open(directory / f"rows-{start // CHUNK_ROWS}.json", "w", encoding="utf-8") as fp:
            fp.write(f'{{"start":{start},"rows":[')
            fp.write(laid.rows_text(start, min(n, start + CHUNK_ROWS)))
            fp.write("]}")


class _Slices:
    """A long list given a slice at a time (`_dump` writes it as the list it stands for)."""

    def __init__(self, length: int, part: Callable[[int, int], list]) -> None:
        self.length, self.part = length, part

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, where: slice) -> list:
        return self.part(where.start, min(where.stop, self.length))


def _write_layout(directory: Path, head: dict, messages: Iterator[dict], fold: bool,
                  expand: list[int], collapse: list[int], extra: dict) -> None:
    """The variant's files from build_layout's Layout (see `_write_variant`).

    Memory is the layout's rows and little else: the messages are read one at a time, the
    little more of each that the row chunks carry is kept aside (`_Details`), the layout's
    documents are written a slice at a time, and the row chunks as they are made."""
    details = _Details()
    layout = build_layout({**head, "messages": details.keep(messages)}, fold=fold,
                          expand=expand, collapse=collapse)
    del head, messages
    (directory / "index.bin").write_bytes(layout_index(layout))
    rows = layout.rows
    doc = layout.head_dict()
    connections, annotations = doc.pop("connections"), doc.pop("annotations")
    ids = [row.message for row in rows]
    doc.update({
        "row_count": len(rows), "chunk_rows": CHUNK_ROWS,
        "ys": [row.y for row in rows],
        # Deep links name a message id; the browser needs its row. Usually they are equal.
        "message_rows": None if ids == list(range(len(ids))) else ids,
        "expanded": sorted(expand), "collapsed_phases": sorted(collapse), **extra,
    })
    del ids
    _dump(directory / "head.json", {**doc, "connections": connections,
                                    "annotations": annotations})
    # What the page's first screen waits for: the head without the connections (the filter's
    # list, fetched after the first paint) and the annotations (read from the rows' badges);
    # at 1M arrows that is 15 MB less to parse first.
    _dump(directory / "connections.json", {"connections": connections})
    _dump(directory / "head-lean.json", _lean(doc))
    del doc, connections, annotations
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = []
        for row in rows[start:start + CHUNK_ROWS]:
            found = row.to_dict()
            # Packet details need a little more of the message than the arrow does.
            found["len"], found["hop_detail"] = details.of(row)
            chunk.append(found)
        _dump(directory / f"rows-{start // CHUNK_ROWS}.json", {"start": start, "rows": chunk})


class _Details:
    """Each message's `len` and `hops`, for its row chunk, kept while the layout reads the
    messages (row i is message i: build_layout makes one row per message, in order). Most
    messages were seen once, and their one hop says nothing the row does not (the message's
    addresses and time, where it was seen): only where it was seen is kept, once for all."""

    HOP_KEYS = ("interface", "direction", "src", "dst", "t")

    def __init__(self) -> None:
        self.lengths = array("q")
        self.hops: list = []
        self.places: dict = {}

    def keep(self, messages: Iterator[dict]) -> Iterator[dict]:
        lengths, hops, places = self.lengths, self.hops, self.places
        for message in messages:
            length = message.get("len")
            lengths.append(length if isinstance(length, int) and length >= 0 else -1)
            seen = message.get("hops") or []
            hop = seen[0] if len(seen) == 1 else None
            if (hop is not None and tuple(hop) == self.HOP_KEYS and hop["src"] == message["src"]
                    and hop["dst"] == message["dst"] and hop["t"] == message["t"]):
                place = (hop["interface"], hop["direction"])
                hops.append(places.setdefault(place, place))
            else:
                hops.append(seen)
            yield message

    def of(self, row) -> tuple[int | None, list]:
        if row.index >= len(self.lengths):
            return None, []
        length, hops = self.lengths[row.index], self.hops[row.index]
        if isinstance(hops, tuple):
            hops = [dict(zip(self.HOP_KEYS, (*hops, row.src, row.dst, row.t), strict=True))]
        return (None if length < 0 else length), hops


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


PHASE_KEYS = ("id", "connection", "phase", "title", "lanes", "first_row", "last_row", "rows",
              "y_top", "y_bottom")  # captures.render.layout.PhaseGroup.to_dict


def _lean(doc: dict) -> dict:
    """The head the page's first screen waits for, with its phases as columns (`phase_columns`:
    key -> one value per phase, frontend/static/diagram/api.js makes the objects again): at 1M
    arrows 150,000 phase objects, each spelling out its keys, were 33 of the head's 40 MB."""
    phases = doc["phases"]
    lean = {key: value for key, value in doc.items() if key != "phases"}
    lean["phase_columns"] = {key: [phase[key] for phase in phases] for key in PHASE_KEYS}
    lean["lean"] = True
    return lean


def _dump(path: Path, doc: dict) -> None:
    """`doc` as compact JSON, its long lists a slice at a time: never the whole text at once
    (a 1M-arrow head is ~50 MB of it). The C encoder does each slice; json.dump would stream
    through the pure-Python one, several times slower."""
    with open(path, "w", encoding="utf-8") as fp:
        fp.write("{")
        for number, (key, value) in enumerate(doc.items()):
            fp.write(("," if number else "") + _encode(key) + ":")
            if isinstance(value, list | _Slices) and len(value) > WRITE_SLICE:
                fp.write("[")
                for start in range(0, len(value), WRITE_SLICE):
                    fp.write(("," if start else "")
                             + _encode(value[start:start + WRITE_SLICE])[1:-1])
                fp.write("]")
            else:
                fp.write(_encode(value if not isinstance(value, _Slices) else value[0:len(value)]))
        fp.write("}")


def _forget_old(root: Path) -> None:
    variants = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    for old in variants[KEEP_VARIANTS:]:
        shutil.rmtree(old, ignore_errors=True)
        old.with_name(f".{old.name}.lock").unlink(missing_ok=True)
