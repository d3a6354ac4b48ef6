"""The diagnosis reads DNS exchanges through ExchangeFields (dns.py), which answers each key
without building the exchange's dict: it must read exactly as that dict, key for key."""

from __future__ import annotations

from captures.analysis.dns import ExchangeFields
from captures.analysis.engine import DEFAULT_MAX_FLOWS, CaptureFile, _Analysis
from captures.analysis.hops import DEFAULT_WINDOW
from tests.support.corpus import corpus_files


def test_an_exchange_reads_as_its_dict_on_every_corpus_capture():
    rcodes = set()
    for path in corpus_files():
        analysis = _Analysis([CaptureFile(path)], None, DEFAULT_WINDOW, DEFAULT_MAX_FLOWS)
        analysis.run()
        t0 = analysis.t0 or 0.0
        for exchange in analysis.dns.exchanges:
            fields, expected = ExchangeFields(exchange, t0), exchange.to_dict(t0)
            assert list(fields) == list(expected)
            assert {key: fields[key] for key in expected} == expected, path.name
            rcodes.add(expected["rcode"])
    assert {"NOERROR", None} <= rcodes  # answered and unanswered lookups were read
