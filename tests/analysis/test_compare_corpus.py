"""The diff of two captures where no lab can run: real captures from the corpus compared with
themselves (nothing differs, at a thousand requests on one connection) and with a capture of
other traffic (nothing pairs, every request on its own side), and hostile text in the Markdown."""

from __future__ import annotations

import pytest

from captures.analysis import CaptureFile, analyze_files
from captures.analysis.compare import compare
from captures.render import diff as diff_render
from tests.analysis.conftest import corpus_dir

CORPUS = corpus_dir()
pytestmark = pytest.mark.skipif(CORPUS is None, reason="the shared corpus is not beside us")
KEEPALIVE = "keepalive/zeek_http11-1000-requests-one-conn-one-dropped-response.pcap"
DNS_HTTP = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"


def model(relative: str) -> dict:
    analysed = analyze_files([CaptureFile(CORPUS / relative)], inventory=None)
    try:
        return analysed.to_dict()
    finally:
        analysed.close()


def test_a_thousand_requests_compared_with_themselves_are_the_same():
    doc = compare(model(KEEPALIVE), model(KEEPALIVE))
    assert doc["summary"]["requests"] == 1000 == doc["summary"]["same"]
    assert doc["summary"]["differs"] == doc["summary"]["only_a"] == doc["summary"]["only_b"] == 0
    assert diff_render.render_text(doc).splitlines()[2].startswith(
        "1000 requests and 0 lookups compared: 0 differ")


def test_captures_of_other_traffic_pair_nothing():
    a, b = model(DNS_HTTP), model(KEEPALIVE)
    doc = compare(a, b)
    assert doc["summary"]["only_a"] == len(doc["requests"]) - 1000 + len(doc["dns"])
    assert doc["summary"]["only_b"] == 1000 and doc["summary"]["same"] == 0
    only_a = [r for r in doc["requests"] if r["status"] == "only_a"]
    # Named by the DNS name its address came from, with the request read.
    assert any(r["title"].startswith("GET www.google.com:80/") for r in only_a)
    assert all(r["b"] is None for r in only_a)


def test_the_markdown_keeps_packet_text_as_text():
    doc = compare(model(DNS_HTTP), model(DNS_HTTP), "<img src=x>", "[b](http://x)")
    markdown = diff_render.render_markdown(doc)
    assert "<img" not in markdown and "&lt;img src=x&gt;" in markdown
    assert "](http" not in markdown  # no link made of a label
