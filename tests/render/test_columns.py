"""The diagram cache's fast writer (captures.render.columns) writes the very bytes of the path every
export takes (build_layout's Layout, its rows' to_dict() and the JSON encoder).

Why two code paths and not golden files: a digest recorded from this code would only say that
the code still does what it did when the digest was taken. Here the expected files come from
an independent path: `diagram_cache._write_variant(..., columns=False)` lays the model out with
build_layout (Row objects, badge dicts, `_choose_shown` setting `shown` on them, rowindex's
layout_index reading Rows), turns each row into a dict with Row.to_dict() plus the message's
len and hops (`_Details`) and lets json encode it; the fast path keeps rows in typed arrays,
interned strings and badge sets, and writes their JSON text itself. They share only the
per-lane, per-phase-group and per-fold code (place_lanes, regroup_lanes, folds.fold_groups,
fold_band, the badges' words), which the exports' own tests check. When the columns were
introduced, both were also compared with the files the previous code wrote for the 200k, 534k
and 1M-packet benchmark captures: identical.

Every corpus capture, for the owner (server paths cut) and a redacted link (neutral names),
folded, unfolded, with folds opened and phases closed; and two captures analysed together
(hop chains across files). Every file of each variant must be byte for byte the same, and the
fast path must have been the one taken.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captures.jobs import diagram_cache
from captures.web import redaction
from tests.support.stored import stored_analysis

from .conftest import corpus_params, corpus_path


def stored(sources: list[Path], target: Path) -> Path:
    return stored_analysis(sources, target, "columns-test")


def variants(analysis: Path) -> list[tuple[bool, list[int], list[int]]]:
    """Folded and not; with the first folds opened; with some phases closed (one of them
    inside a fold, when there is one) and a fold opened."""
    head = json.loads(analysis.read_text())
    messages = len(head["messages"])
    folds = list(range(3))
    closed = sorted({0, messages // 3 % 7, 5})
    return [(True, [], []), (False, [], []), (True, folds, []), (True, [1], closed),
            (False, [], closed)]


def built(analysis: Path, tmp_path: Path, view: str, fold: bool, expand: list[int],
          collapse: list[int], columns: bool) -> tuple[str, dict[str, bytes]]:
    directory = tmp_path / f"{view}-{int(fold)}-{expand}-{collapse}-{int(columns)}"
    directory.mkdir()
    way = diagram_cache._write_variant(
        directory, diagram_cache.StoredModel(analysis, redaction.sequence_parts(view)), fold,
        expand, collapse, columns=columns)
    return way, {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def assert_same_files(analysis: Path, tmp_path: Path) -> None:
    for view in (redaction.OWNER, redaction.REDACTED):
        for fold, expand, collapse in variants(analysis):
            way, fast = built(analysis, tmp_path, view, fold, expand, collapse, True)
            assert way == "columns", "the fast path was not taken"
            slow_way, slow = built(analysis, tmp_path, view, fold, expand, collapse, False)
            assert slow_way == "layout"
            assert list(fast) == list(slow), (view, fold, expand, collapse)
            for name in slow:
                assert fast[name] == slow[name], (name, view, fold, expand, collapse)


@pytest.mark.parametrize("path", corpus_params())
def test_it_writes_the_layouts_bytes_for_every_corpus_capture(path, tmp_path, settings):
    settings.DATA_DIR = tmp_path / "data"
    assert_same_files(stored([path], tmp_path / "analysis.json"), tmp_path)


def test_it_writes_the_layouts_bytes_for_captures_analysed_together(tmp_path, settings):
    settings.DATA_DIR = tmp_path / "data"
    sources = [corpus_path("k8s/deepflow_istio-sidecar-inbound-127.0.0.6-to-productpage-9080.pcap"),
               corpus_path("k8s/deepflow_pod-to-clusterip-10.96-tcp-midstream.pcap")]
    analysis = stored(sources, tmp_path / "analysis.json")
    assert len(json.loads(analysis.read_text())["capture"]["files"]) == 2
    assert_same_files(analysis, tmp_path)


def test_a_model_the_columns_do_not_expect_is_laid_out_by_build_layout(tmp_path):
    """Hand-written models may give a time as an int (`0`), which a float column would write
    as `0.0`: such a model takes the Layout path, and says so."""
    model = {"capture": {}, "participants": [], "connections": [], "http": [],
             "annotations": [], "messages": [
                 {"id": 0, "t": 0, "src": "10.0.0.1:1", "dst": "10.0.0.2:80", "proto": "tcp",
                  "label": "SYN", "flags": "S", "len": 0, "connection": 0,
                  "phase": "handshake", "hops": [], "frame": [0, 1], "annotations": []}]}
    way = diagram_cache._write_variant(tmp_path, model, True, [], [])
    assert way == "layout"
    row = json.loads((tmp_path / "rows-0.json").read_text())["rows"][0]
    assert row["t"] == 0 and isinstance(row["t"], int)
