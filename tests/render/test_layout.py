"""The layout of real captures: lanes, rows, phase groups, folds and badges in the right places."""

from __future__ import annotations

import copy
import json
import time

import pytest

from captures.render import build_layout

from .conftest import corpus_params, corpus_path, model_of

MTLS = "tls/zeek_tls12-mutual-tls-client-certificate-sni-alpn.pcap"
THOUSAND = "keepalive/zeek_http11-1000-requests-one-conn-one-dropped-response.pcap"


def _ip(endpoint: str) -> str:
    from captures.analysis.records import split_endpoint

    return split_endpoint(endpoint)[0]


@pytest.mark.parametrize("capture", corpus_params())
def test_it_orders_lanes_by_first_appearance(capture):
    model = model_of(str(capture))
    order: list[str] = []
    for message in model["messages"]:
        for ip in (_ip(message["src"]), _ip(message["dst"])):
            if ip not in order:
                order.append(ip)
    layout = build_layout(model)
    assert [lane.ip for lane in layout.lanes][: len(order)] == order
    xs = [lane.x for lane in layout.lanes]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    named = {p["ip"]: p["name"] for p in model["participants"]}
    assert all(lane.name == named.get(lane.ip, lane.ip) for lane in layout.lanes)


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "unfolded"])
@pytest.mark.parametrize("capture", corpus_params())
def test_it_places_every_message_exactly_once(capture, fold):
    model = model_of(str(capture))
    layout = build_layout(model, fold=fold)
    assert [row.message for row in layout.rows] == [m["id"] for m in model["messages"]]
    folded_away = set()
    for group in layout.folds:
        hidden = range(group.shown_last_row + 1, group.last_row + 1)
        assert not folded_away & set(hidden), "fold groups overlap"
        if group.collapsed:
            folded_away |= set(hidden)
        assert all(layout.rows[r].fold == group.id for r in range(group.first_row,
                                                                   group.last_row + 1))
    for row in layout.rows:
        # Drawn, or counted in exactly one collapsed fold group: never both, never neither.
        assert (row.y is None) == (row.index in folded_away)
    drawn = [row.y for row in layout.visible_rows()]
    assert drawn == sorted(drawn) and len(set(drawn)) == len(drawn)
    if not fold:
        assert all(row.y is not None for row in layout.rows)
    grouped = sum(group.rows for group in layout.phases)
    assert grouped == len(layout.rows)


@pytest.mark.parametrize("capture", corpus_params())
def test_its_json_keeps_every_message_and_parses(capture):
    model = model_of(str(capture))
    doc = json.loads(build_layout(model, fold=True).to_json())
    assert doc["schema"] == "kviz.layout/1"
    assert len(doc["rows"]) == len(model["messages"])
    assert {"lanes", "rows", "phases", "folds", "gaps", "size"} <= doc.keys()
    for row in doc["rows"]:
        assert 0 <= row["from"] < len(doc["lanes"]) and 0 <= row["to"] < len(doc["lanes"])
        assert row["y"] is not None or row["fold"] is not None


def test_it_puts_the_mtls_lock_on_the_mtls_connection():
    model = model_of(str(corpus_path(MTLS)))
    layout = build_layout(model)
    mtls = next(a for a in model["annotations"] if a["kind"] == "mtls")
    locked = [row for row in layout.rows if any(b["kind"] == "mtls" for b in row.badges)]
    assert len(locked) == 1
    assert locked[0].connection == mtls["connection"]
    assert locked[0].label.startswith("TLS ClientHello")
    assert "client-certificate" in next(b["text"] for b in locked[0].badges
                                        if b["kind"] == "mtls")


def test_it_compresses_the_idle_gap_during_the_client_certificate_prompt():
    layout = build_layout(model_of(str(corpus_path(MTLS))))
    assert [gap.text for gap in layout.gaps] == ["… 5.0 s idle …"]
    gap = layout.gaps[0]
    before = layout.rows[gap.before_row - 1]
    after = layout.rows[gap.before_row]
    assert after.y - before.y < 100  # a fixed band, not 5 s of paper


@pytest.mark.parametrize("capture", corpus_params("keepalive"))
def test_it_numbers_each_request_on_its_pooled_connection(capture):
    model = model_of(str(capture))
    layout = build_layout(model, fold=False)
    marked = {}
    for row in layout.rows:
        for found in row.badges:
            if found["kind"] == "request":
                marked[found["text"]] = row
    for request in model["http"]:
        text = f"request {request['n']} on connection {request['connection']}"
        row = next(r for t, r in marked.items() if t.startswith(text))
        assert row.connection == request["connection"]
        assert row.t >= request["t"] - 1e-6
    for note in model["annotations"]:
        if note["kind"] == "pooled":
            rows = [r for r in layout.rows if any(b["kind"] == "pooled" and
                                                  b["annotation"] is not None and
                                                  model["annotations"][b["annotation"]] == note
                                                  for b in r.badges)]
            assert len(rows) == 1 and rows[0].connection == note["connection"]


@pytest.mark.parametrize("capture", corpus_params("tcp"))
def test_it_badges_every_reset_and_retransmission_on_its_connection(capture):
    model = model_of(str(capture))
    layout = build_layout(model, fold=False)
    for row in layout.rows:
        kinds = {b["kind"] for b in row.badges}
        if "R" in (row.flags or "") and any(a["kind"] == "rst" for a in model["annotations"]):
            assert "rst" in kinds, row
            assert row.style == "rst"
        if row.label.endswith("(retransmission)"):
            assert "retransmission" in kinds, row
        for found in row.badges:
            note = found["annotation"]
            if note is not None and "connection" in model["annotations"][note]:
                assert model["annotations"][note]["connection"] == row.connection
    if any(a["kind"] == "rst" for a in model["annotations"]):
        assert any(b["kind"] == "rst" for row in layout.rows for b in row.badges)


def test_it_marks_connections_kept_open_on_their_last_arrow():
    model = model_of(str(corpus_path(MTLS)))
    layout = build_layout(model)
    kept = [row for row in layout.rows if any(b["kind"] == "kept_open" for b in row.badges)]
    assert [row.index for row in kept] == [len(layout.rows) - 1]
    assert kept[0].badges[-1]["text"] == "no FIN: kept open"


def test_it_folds_a_thousand_keepalive_requests_into_one_group():
    model = model_of(str(corpus_path(THOUSAND)))
    folded = build_layout(model)
    assert len(folded.folds) == 1
    group = folded.folds[0]
    assert group.unit == "exchange" and group.count >= 990
    assert len(list(folded.visible_rows())) < 40
    assert "repeated" in group.text
    unfolded = build_layout(model, fold=False)
    assert len(list(unfolded.visible_rows())) == len(model["messages"])
    assert unfolded.folds[0].count == group.count and not unfolded.folds[0].collapsed


def test_it_groups_phases_per_connection_in_time_order():
    model = model_of(str(corpus_path("dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap")))
    layout = build_layout(model, fold=False)
    kinds = [(g.connection, g.phase) for g in layout.phases]
    assert kinds[0] == (None, "dns")
    assert kinds[1:4] == [(0, "handshake"), (0, "exchange"), (None, "dns")]
    assert (0, "teardown") in kinds and (1, "teardown") in kinds
    for group in layout.phases:
        rows = [r for r in layout.rows if r.group == group.id]
        assert rows[0].index == group.first_row and rows[-1].index == group.last_row


def test_it_lays_out_100k_messages_in_a_few_seconds():
    """Scale: a model with 100k messages, made by replaying a real capture's conversations
    (the docker API keep-alive capture) on fresh connections, one after another."""
    base = model_of(str(corpus_path("keepalive/zeek_docker-api-http-upgrade-tcp-keepalive.pcap")))
    model = copy.deepcopy(base)
    model["messages"], model["connections"], model["http"] = [], [], []
    span = base["capture"]["duration"] + 0.5
    copies = 100_000 // len(base["messages"]) + 1
    for n in range(copies):
        offset, shift = n * span, n * len(base["connections"])
        for c in base["connections"]:
            model["connections"].append({**c, "id": c["id"] + shift})
        for r in base["http"]:
            model["http"].append({**r, "connection": r["connection"] + shift,
                                  "t": r["t"] + offset})
        for m in base["messages"]:
            model["messages"].append({**m, "id": len(model["messages"]), "t": m["t"] + offset,
                                      "connection": None if m["connection"] is None
                                      else m["connection"] + shift})
    started = time.perf_counter()
    layout = build_layout(model, fold=False)
    elapsed = time.perf_counter() - started
    assert len(layout.rows) == len(model["messages"]) >= 100_000
    assert elapsed < 5.0, f"layout of {len(layout.rows)} messages took {elapsed:.1f} s"
