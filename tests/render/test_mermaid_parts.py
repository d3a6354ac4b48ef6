"""A diagram too long for Mermaid (a few hundred arrows) is split into parts, each a whole
diagram that the real mermaid package parses, together drawing every arrow once."""

from __future__ import annotations

import json
import re

from captures.render import build_layout, render_markdown, render_mermaid
from captures.render.mermaid import MAX_ARROWS, mermaid_parts, render_mermaid_parts

from .conftest import corpus_path, mermaid_errors, model_of

ARROW = re.compile(r"^    (P\d+)(?:->>|-->>|-x|--\))(P\d+): ", re.M)
THOUSAND = "keepalive/zeek_http11-1000-requests-one-conn-one-dropped-response.pcap"


def test_it_splits_a_long_diagram_into_parts_that_each_parse(tmp_path):
    layout = build_layout(model_of(str(corpus_path(THOUSAND))), fold=False)
    drawn = sum(1 for _ in layout.visible_rows())
    assert drawn > 2 * MAX_ARROWS
    parts = render_mermaid_parts(layout)
    assert len(parts) == mermaid_parts(layout) == -(-drawn // MAX_ARROWS)
    counts = [len(ARROW.findall(text)) for text in parts]
    assert sum(counts) == drawn and max(counts) <= MAX_ARROWS
    for number, text in enumerate(parts, 1):
        assert text.startswith("sequenceDiagram\n")
        assert f"part {number} of {len(parts)}" in text
        assert text.count("    loop ") == text.count("    end\n")
    assert "more arrows in parts 2" in parts[0] and "more arrows" not in parts[-1]
    assert render_mermaid(layout) == parts[0]
    errors = mermaid_errors({f"part {n}": text for n, text in enumerate(parts, 1)}, tmp_path)
    assert not errors, json.dumps(errors, indent=1)


def test_a_short_diagram_is_one_part_without_a_word_about_parts():
    layout = build_layout(model_of(str(corpus_path(THOUSAND))))  # folded: a few dozen arrows
    assert mermaid_parts(layout) == 1
    assert "part 1 of" not in render_mermaid(layout)


def test_the_markdown_carries_every_part():
    layout = build_layout(model_of(str(corpus_path(THOUSAND))), fold=False)
    text = render_markdown(layout)
    assert text.count("```mermaid") == mermaid_parts(layout)
    assert len(ARROW.findall(text)) == sum(1 for _ in layout.visible_rows())


def test_parts_cut_through_folds_and_phases_still_parse(tmp_path):
    # Folded, in parts of 5 arrows: folds (loops) and phases straddle the cuts.
    layout = build_layout(model_of(str(corpus_path(THOUSAND))))
    assert any(group.collapsed for group in layout.folds)
    parts = render_mermaid_parts(layout, max_arrows=5)
    assert len(parts) > 3
    assert sum(len(ARROW.findall(text)) for text in parts) == sum(
        1 for _ in layout.visible_rows())
    assert any("(continued)" in text for text in parts[1:])
    for text in parts:
        assert text.count("    loop ") == text.count("    end\n")
    errors = mermaid_errors({f"part {n}": text for n, text in enumerate(parts, 1)}, tmp_path)
    assert not errors, json.dumps(errors, indent=1)
