"""Mermaid, PlantUML and Markdown exports of every corpus capture.

Mermaid is checked by the real `mermaid` package under Node (tests/render/js, installed with
`npm ci --prefix tests/render/js`), all diagrams in one Node process."""

from __future__ import annotations

import json
import re

import pytest
from django.core.management import call_command

from captures.render import build_layout, render_markdown, render_mermaid, render_plantuml
from captures.render.markdown import escape as markdown_escape

from .conftest import (
    corpus_files,
    corpus_id,
    corpus_params,
    corpus_path,
    mermaid_errors,
    model_of,
)


def test_every_mermaid_diagram_parses_with_the_mermaid_package(tmp_path):
    files = corpus_files()
    if not files:
        pytest.skip("no capture corpus found")
    diagrams = {corpus_id(p): render_mermaid(build_layout(model_of(str(p)))) for p in files}
    diagrams["1000 requests, unfolded, capped"] = render_mermaid(build_layout(
        model_of(str(corpus_path(
            "keepalive/zeek_http11-1000-requests-one-conn-one-dropped-response.pcap"))),
        fold=False))
    errors = mermaid_errors(diagrams, tmp_path)
    assert not errors, json.dumps(errors, indent=1)


@pytest.mark.parametrize("capture", corpus_params())
def test_mermaid_has_one_arrow_per_drawn_row_and_declares_every_participant(capture):
    layout = build_layout(model_of(str(capture)))
    text = render_mermaid(layout)
    assert text.startswith("sequenceDiagram\n")
    declared = set(re.findall(r"^    participant (P\d+) as ", text, re.M))
    arrows = re.findall(r"^    (P\d+)(?:->>|-->>|-x|--\))(P\d+): ", text, re.M)
    assert len(arrows) == len(list(layout.visible_rows()))
    assert {p for pair in arrows for p in pair} <= declared
    assert text.count("    loop ") == text.count("    end\n")


@pytest.mark.parametrize("capture", corpus_params())
def test_plantuml_is_balanced_and_declares_every_participant(capture):
    layout = build_layout(model_of(str(capture)))
    text = render_plantuml(layout, title=capture.name)
    lines = text.splitlines()
    assert lines[0] == "@startuml" and lines[-1] == "@enduml"
    assert text.count("@startuml") == 1 and text.count("@enduml") == 1
    declared = set(re.findall(r'^participant ".*" as (P\d+)$', text, re.M))
    used = re.findall(r"^(P\d+) (?:->|-->|-\[#[0-9a-f]+\]-?>) (P\d+) : ", text, re.M)
    assert len(used) == len(list(layout.visible_rows()))
    assert {p for pair in used for p in pair} <= declared
    assert sum(line.startswith("loop ") for line in lines) == lines.count("end")


@pytest.mark.parametrize("capture", corpus_params())
def test_markdown_postmortem_has_title_names_diagram_and_a_timing_row_per_request(capture):
    model = model_of(str(capture))
    layout = build_layout(model)
    notes = [{"target": f"message:{model['messages'][0]['id']}", "author": "ana",
              "text": "this is where it starts"}] if model["messages"] else []
    text = render_markdown(layout, facts={"target": "pod/default/ubuntu", "filter": "tcp or udp",
                                          "limits": "60 s"},
                           notes=notes, svg_href="capture.svg")
    assert text.startswith("# Postmortem: pod/default/ubuntu\n")
    assert "| filter | tcp or udp |" in text and "| limits | 60 s |" in text
    for participant in model["participants"]:
        assert f"| `{participant['ip']}` | {markdown_escape(participant['name'])} |" in text
    assert "```mermaid\nsequenceDiagram\n" in text
    assert "![Sequence diagram (SVG)](capture.svg)" in text
    timing = text.split("## Timing", 1)[1].split("\n## ", 1)[0]
    for request in model["http"]:
        assert re.search(rf"^\| {request['connection']}: .* \| {request['n']} \| ", timing,
                         re.M), request
    for connection in model["connections"]:
        assert re.search(rf"^\| {connection['id']}: ", timing, re.M)
    if notes:
        assert "**ana** on message" in text and "this is where it starts" in text


def test_markdown_says_the_findings_in_words():
    model = model_of(str(corpus_path(
        "k8s/deepflow_istio-sidecar-inbound-127.0.0.6-to-productpage-9080.pcap")))
    text = render_markdown(build_layout(model))
    findings = text.split("## Findings", 1)[1]
    assert "the istio sidecar intercepted inbound traffic on port 9080 via 127.0.0.6" in findings
    assert "no FIN: the connection was kept open" in findings
    assert "| 0: `127.0.0.6:36493` → `10.233.64.230:9080` | 1 | GET /productpage → 200 |" in text


def test_the_analyze_command_writes_markdown_with_the_svg_beside_it(tmp_path):
    capture = corpus_path("dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap")
    out = tmp_path / "postmortem.md"
    call_command("kviz", "analyze", str(capture), "--format", "markdown", "--out", str(out))
    text = out.read_text(encoding="utf-8")
    assert "![Sequence diagram (SVG)](postmortem.svg)" in text
    assert f"| files | {capture.name} |" in text
    assert (tmp_path / "postmortem.svg").read_text(encoding="utf-8").startswith("<svg ")
    for fmt, start in (("svg", "<svg "), ("mermaid", "sequenceDiagram"),
                       ("plantuml", "@startuml"), ("layout", '{"schema":"kviz.layout/1"')):
        target = tmp_path / f"diagram.{fmt}"
        call_command("kviz", "analyze", str(capture), "--format", fmt, "--out", str(target))
        assert target.read_text(encoding="utf-8").startswith(start), fmt
