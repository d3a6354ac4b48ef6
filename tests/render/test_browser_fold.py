"""Folding, unfolding, closing phases and filtering in the browser give the server's layout.

The browser lays out every variant after the first from the row index
(captures/render/rowindex.py) with frontend/static/diagram/fold.js. Here that very module runs
under Node for every corpus capture and several choices of folds and phases, and each result is
compared, number for number, with `build_layout` for the same choices: every row's y, which
badges are written under which arrow, phase bands, fold bands and their words, idle gaps and the
drawing's size. Filters are compared with the rows a reader would pick by hand."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from captures.render import build_layout
from captures.render.rowindex import layout_index, read_index

from .conftest import JS, corpus_files, corpus_id, model_of

FOLD_JS = Path(__file__).resolve().parents[2] / "frontend" / "static" / "diagram" / "fold.js"


def choices(layout) -> list[dict]:
    folds = [group.id for group in layout.folds]
    phases = [group.id for group in layout.phases]
    out = [{"fold": True}, {"fold": False}]
    if folds:
        out += [{"fold": True, "expand": folds[:1]}, {"fold": True, "expand": folds},
                {"fold": True, "expand": folds[1::2]}]
    if phases:
        out += [{"fold": True, "collapse": phases[:3:2]},
                {"fold": False, "collapse": phases[1::3]},
                {"fold": True, "expand": folds[:1], "collapse": phases[-1:]}]
    return out


def filters(layout) -> list[dict]:
    connections = sorted({row.connection for row in layout.rows if row.connection is not None})
    out = [{"connection": "none"}, {"lane": "0"}, {"phase": "handshake"}, {"phase": "exchange"}]
    if connections:
        out += [{"connection": str(connections[-1])},
                {"connection": str(connections[0]), "phase": "teardown"},
                {"connection": str(connections[0]), "lane": "1"}]
    return out


def expected_match(layout, choice: dict) -> list[int]:
    connection, lane, phase = (choice.get(k, "") for k in ("connection", "lane", "phase"))
    kept = []
    for row in layout.rows:
        if connection == "none" and row.connection is not None:
            continue
        if connection not in ("", "none") and str(row.connection) != connection:
            continue
        if lane and lane not in {str(row.src_lane), str(row.dst_lane), str(row.nat_lane)}:
            continue
        if phase and layout.phases[row.group].phase != phase:
            continue
        kept.append(row.index)
    return kept


def shown_bits(row) -> int:
    bits, bit = 0, 0
    for found in row.badges:
        if found["kind"] == "hops" or (found["annotation"] is not None
                                       and found["kind"] in ("dnat", "snat")):
            bits |= (found.get("shown") is not None) << bit
            bit += 1
    return bits


def run_node(cases: dict, tmp_path: Path) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    source = tmp_path / "cases.json"
    source.write_text(json.dumps({"fold_js": str(FOLD_JS), "cases": cases}))
    done = subprocess.run([node, str(JS / "relayout.mjs"), str(source)], capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def head_of(layout) -> dict:
    doc = layout.to_dict()
    rows = doc.pop("rows")
    doc["row_count"] = len(rows)
    return doc


def test_it_lays_out_every_variant_of_every_capture_as_the_server_does(tmp_path):
    files = corpus_files()
    if not files:
        pytest.skip("no capture corpus found")
    cases, expected = {}, {}
    for number, path in enumerate(files):
        name = corpus_id(path)
        model = model_of(str(path))
        base = build_layout(model)
        (tmp_path / f"{number}.head.json").write_text(json.dumps(head_of(base)))
        (tmp_path / f"{number}.index.bin").write_bytes(layout_index(base))
        variants = choices(base)
        cases[name] = {"head": str(tmp_path / f"{number}.head.json"),
                       "index": str(tmp_path / f"{number}.index.bin"), "variants": variants,
                       "filters": filters(base)}
        expected[name] = (base, [build_layout(model, fold=v["fold"], expand=v.get("expand", ()),
                                              collapse=v.get("collapse", ()))
                                 for v in variants])
    results = run_node(cases, tmp_path)
    compared = moved = 0
    for name, (base, layouts) in expected.items():
        for choice, server, browser in zip(cases[name]["variants"], layouts,
                                           results[name]["variants"], strict=True):
            where = f"{name} {choice}"
            want = server.to_dict()
            assert browser["ys"] == [row["y"] for row in want["rows"]], where
            assert browser["shown"] == [shown_bits(row) for row in server.rows], where
            assert browser["folded"] == want["folded"], where
            assert browser["size"] == want["size"], where
            assert [(p["y_top"], p["y_bottom"]) for p in browser["phases"]] == \
                [(p["y_top"], p["y_bottom"]) for p in want["phases"]], where
            keys = ("collapsed", "y", "height", "text", "band")
            assert [[f[k] for k in keys] for f in browser["folds"]] == \
                [[f[k] for k in keys] for f in want["folds"]], where
            assert browser["gaps"] == want["gaps"], where
            compared += 1
            moved += browser["ys"] != [row.y for row in base.rows]
        for choice, found in zip(cases[name]["filters"], results[name]["filters"], strict=True):
            rows = expected_match(base, choice)
            assert found == {"count": len(rows), "rows": rows}, f"{name} {choice}"
    assert compared >= len(files) * 2
    assert moved >= len(files)  # the choices did move rows: not a comparison of equals


def test_it_reads_back_what_it_wrote():
    files = corpus_files()
    if not files:
        pytest.skip("no capture corpus found")
    path = next(p for p in files if "1000-requests" in p.name)
    layout = build_layout(model_of(str(path)))
    index = read_index(layout_index(layout))
    assert index["header"]["count"] == len(layout.rows)
    assert index["t"] == [row.t for row in layout.rows]
    assert index["fold"] == [-1 if row.fold is None else row.fold for row in layout.rows]
    assert len(index["tok_start"]) == len(layout.rows) + 1
    # ~40 bytes a row, not the ~500 of a row chunk's JSON
    assert len(layout_index(layout)) < 64 * len(layout.rows) + 4096
