"""A layout's rows as a compact binary index (`kviz.rowindex/1`), for the browser to fold, unfold,
close phases and filter a capture of any size without asking the server or fetching rows.

Why: a variant laid out on the server (fold one group open) costs seconds at 100k arrows, and a
filter needs every row's connection, lanes and phase, which live in the row chunks (~50 MB).
Everything those need fits in ~40 bytes a row: typed arrays the browser maps without parsing.
frontend/static/diagram/fold.js runs step 5 of layout.py (`_place_rows`, `_choose_shown`,
`content_right`) over these arrays; tests/render/test_browser_fold.py checks that it gives the
server's layout for the same choices, number for number.

File: b"KVIX", a little-endian u32 header length, the header (UTF-8 JSON), then each array at
the offset the header names (from the start of the file, 8-byte aligned), little-endian:

    {"schema": "kviz.rowindex/1", "count": N, "keys": K, "notes": A, "gap_seconds": 1.0,
     "fold_forms": [[text_open, band_open, text_collapsed, band_collapsed], ...],
     "arrays": {"t": ["f8", offset, length], ...}}

Per row (length N): `t` time, `fold` and `group` ids (-1: none), `conn` connection (-1: none),
`src`/`dst`/`nat` lanes (-1: none), `fixed` badges always written under the arrow and
`fixed_len` the longest of them (characters), `label_len` (label length, at most LABEL_CHARS),
`tok_start` (N + 1: the row's tokens are tok_start[i] .. tok_start[i+1]-1).
Per token, in badge order: `tok_kind` 0 a hop chain (written when it changes for `tok_key`,
a connection and sender, to `tok_val`, the chain), 1 a DNAT/SNAT finding written on its
first drawn arrow only (`tok_key`: its annotation), 2 another finding on that annotation,
always written, that counts as its first mention; `tok_len` the words' length when written.
"""

from __future__ import annotations

import json
import struct
from array import array

from .layout import LABEL_CHARS, Layout, fold_band

SCHEMA = "kviz.rowindex/1"
MAGIC = b"KVIX"
CONDITIONAL = ("dnat", "snat")


def layout_index(layout: Layout) -> bytes:
    rows = layout.rows
    n = len(rows)
    nat_notes = {b["annotation"] for row in rows for b in row.badges
                 if b["kind"] in CONDITIONAL and b["annotation"] is not None}
    t = array("d", bytes(8 * n))
    fold, group, conn = array("i", [-1]) * n, array("i", [-1]) * n, array("i", [-1]) * n
    src, dst, nat = array("i", bytes(4 * n)), array("i", bytes(4 * n)), array("i", [-1]) * n
    fixed, fixed_len, label_len = array("B", bytes(n)), array("H", bytes(2 * n)), array("H")
    tok_start = array("I", [0])
    tok_kind, tok_key, tok_val, tok_len = array("B"), array("i"), array("i"), array("H")
    keys: dict[tuple, int] = {}
    texts: dict[str, int] = {}
    for i, row in enumerate(rows):
        t[i] = row.t
        if row.fold is not None:
            fold[i] = row.fold
        if row.group is not None:
            group[i] = row.group
        if row.connection is not None:
            conn[i] = row.connection
        src[i], dst[i] = row.src_lane, row.dst_lane
        if row.nat_lane is not None:
            nat[i] = row.nat_lane
        label_len.append(min(len(row.label), LABEL_CHARS))
        always, longest = 0, 0
        for found in row.badges:
            kind, note = found["kind"], found["annotation"]
            if kind == "hops":
                key = keys.setdefault((row.connection, row.src), len(keys))
                tok_kind.append(0)
                tok_key.append(key)
                tok_val.append(texts.setdefault(found["text"], len(texts)))
                tok_len.append(min(len(found["text"]) + 4, 65535))  # "via " + the chain
                continue
            if note is not None and kind in CONDITIONAL:
                tok_kind.append(1)
                tok_key.append(note)
                tok_val.append(0)
                tok_len.append(min(len(found["text"]), 65535))
                continue
            always += 1
            longest = max(longest, len(found["text"]))
            if note is not None and note in nat_notes:
                tok_kind.append(2)
                tok_key.append(note)
                tok_val.append(0)
                tok_len.append(0)
        fixed[i], fixed_len[i] = min(always, 255), min(longest, 65535)
        tok_start.append(len(tok_kind))
    arrays = {"t": t, "fold": fold, "group": group, "conn": conn, "src": src, "dst": dst,
              "nat": nat, "fixed": fixed, "fixed_len": fixed_len, "label_len": label_len,
              "tok_start": tok_start, "tok_kind": tok_kind, "tok_key": tok_key,
              "tok_val": tok_val, "tok_len": tok_len}
    return pack_index(arrays, n, len(keys), len(layout.annotations),
                      layout.options["gap_seconds"], fold_forms(layout.lanes, layout.folds))


def fold_forms(lanes, folds) -> list[list]:
    """Each fold's text and band drawn open, then collapsed (the header's `fold_forms`)."""
    forms = []
    for found in folds:
        was = found.collapsed
        found.collapsed = False
        opened = (found.text, list(fold_band(lanes, found)))
        found.collapsed = True
        closed = (found.text, list(fold_band(lanes, found)))
        found.collapsed = was
        forms.append([*opened, *closed])
    return forms


def pack_index(arrays: dict[str, array], n: int, keys: int, notes: int, gap_seconds: float,
               forms: list[list]) -> bytes:
    """The file from its arrays (named and ordered as in the module doc) and header fields."""
    codes = {"d": "f8", "i": "i4", "I": "u4", "H": "u2", "B": "u1"}
    for typed in arrays.values():  # the browser reads these as Int32Array etc.
        assert typed.itemsize == int(codes[typed.typecode][1:]), typed.typecode
    header = {"schema": SCHEMA, "count": n, "keys": keys, "notes": notes,
              "gap_seconds": gap_seconds, "fold_forms": forms, "arrays": {}}
    # Two passes: offsets depend on the header's length, which depends on the offsets' digits;
    # the header is padded to a fixed size once measured.
    body: list[bytes] = []
    offset = 0
    for name, typed in arrays.items():
        header["arrays"][name] = [codes[typed.typecode], offset, len(typed)]
        data = typed.tobytes() if _little() else _swapped(typed)
        body.append(data + bytes(-len(data) % 8))
        offset += len(data) + (-len(data) % 8)
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
    start = 8 + len(text) + 64
    start += -start % 8
    for name in arrays:
        header["arrays"][name][1] += start
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
    text += b" " * (start - 8 - len(text))
    return MAGIC + struct.pack("<I", len(text)) + text + b"".join(body)


def read_index(data: bytes, as_lists: bool = True) -> dict:
    """The index as {name: list} (or `array`s: ~40 bytes a row) plus its header."""
    if data[:4] != MAGIC:
        raise ValueError("not a kviz row index")
    (length,) = struct.unpack_from("<I", data, 4)
    header = json.loads(data[8:8 + length])
    codes = {"f8": "d", "i4": "i", "u4": "I", "u2": "H", "u1": "B"}
    out: dict = {"header": header}
    for name, (code, offset, count) in header["arrays"].items():
        typed = array(codes[code])
        typed.frombytes(data[offset:offset + count * typed.itemsize])
        if not _little():
            typed.byteswap()
        out[name] = typed.tolist() if as_lists else typed
    return out


def match_rows(index: dict, phases: list[dict], connection: str = "", lane: str = "",
               phase: str = "") -> bytearray:
    """1 for each row a filter keeps (frontend/static/diagram/fold.js, matchRows)."""
    n = index["header"]["count"]
    want_conn = None if connection == "" else -1 if connection == "none" else int(connection)
    want_lane = None if lane == "" else int(lane)
    kinds = [group["phase"] == phase for group in phases] if phase else None
    conn, src, dst, nat, group = (index[k] for k in ("conn", "src", "dst", "nat", "group"))
    match = bytearray(n)
    for i in range(n):
        if want_conn is not None and conn[i] != want_conn:
            continue
        if want_lane is not None and want_lane not in (src[i], dst[i], nat[i]):
            continue
        if kinds is not None and not (group[i] >= 0 and kinds[group[i]]):
            continue
        match[i] = 1
    return match


def filtered_head(head: dict, index: dict, match: bytearray) -> dict:
    """`head` with only the matching rows drawn, closed up (fold.js/api.js, filteredBy): each
    kept row moves up by the height of the rows left out above it; a phase band spans its kept
    rows; fold bands and idle gaps, which stand between rows that may be gone, are left out."""
    ys, top_of_rows = head["ys"], head["size"]["lane_head_height"]
    new_ys: list = [None] * len(ys)
    removed, previous = 0.0, None
    for i, y in enumerate(ys):
        if y is None:
            continue
        if match[i]:
            new_ys[i] = y - removed
        else:
            removed += y - (previous if previous is not None else top_of_rows)
        previous = y
    span: dict[int, list[float]] = {}
    group_of = index["group"]
    for i, y in enumerate(new_ys):
        if y is None or group_of[i] < 0:
            continue
        seen = span.get(group_of[i])
        if seen:
            seen[1] = y
        else:
            span[group_of[i]] = [y, y]
    phases = [{**group, "y_top": None, "y_bottom": None} for group in head["phases"]]
    for number, (top, bottom) in span.items():
        group = head["phases"][number]
        first, last = ys[group["first_row"]], ys[group["last_row"]]
        above = (first if first is not None else top) - (
            group["y_top"] if group["y_top"] is not None else top)
        below = (group["y_bottom"] if group["y_bottom"] is not None else bottom) - (
            last if last is not None else bottom)
        phases[number]["y_top"] = max(top_of_rows, top - max(above, 0))
        phases[number]["y_bottom"] = bottom + max(below, 0)
    size = {**head["size"], "height": max(top_of_rows + 40, head["size"]["height"] - removed)}
    return {**head, "ys": new_ys, "phases": phases, "gaps": [], "size": size,
            "folds": [{**group, "y": None} for group in head["folds"]]}


def _little() -> bool:
    import sys

    return sys.byteorder == "little"


def _swapped(typed: array) -> bytes:
    copy = array(typed.typecode, typed)
    copy.byteswap()
    return copy.tobytes()
