"""The diagnosis reads DNS exchanges through ExchangeFields (dns.py), which answers each key
without building the exchange's dict, and the model writes each as to_json()'s text, written
by hand: both must say exactly what the dict says, key for key and byte for byte."""

from __future__ import annotations

import json
import math

import pytest

from captures.analysis.dns import ExchangeFields
from captures.analysis.engine import DEFAULT_MAX_FLOWS, CaptureFile, _Analysis
from captures.analysis.hops import DEFAULT_WINDOW
from captures.analysis.model import millis_json, seconds_json
from tests.support.corpus import corpus_files

DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # as model.py


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
            assert exchange.to_json(t0) == DUMPS(expected), path.name
            rcodes.add(expected["rcode"])
    assert {"NOERROR", None} <= rcodes  # answered and unanswered lookups were read


@pytest.mark.parametrize("seconds", [
    0.0, -0.0, 5e-7, 4e-7, 0.000089, 0.0000999996, 0.0001, 0.00010000049, 0.5, 0.0000005,
    1.0000005, 2.5e-6, 1234.5678915, 86399.9999995, 8e6, 8e6 + 0.25, 999999999.999999,
    1e9, 1234567890.123456, 1e16 + 2.0, 3.1e20, -0.000089, -1.5, -1e9 - 0.3,
])
def test_an_exchange_time_is_written_as_json_writes_the_rounded_float(seconds):
    assert seconds_json(seconds) == DUMPS(round(seconds, 6))


def test_exchange_times_agree_with_json_across_many_offsets():
    # Offsets a capture's first minutes and days produce, near every rounding boundary.
    for micros in range(0, 3_000_000, 997):
        for nudge in (-0.5000001e-6, -1e-12, 0.0, 1e-12, 0.4999999e-6):
            seconds = micros / 1e6 + nudge
            if math.isfinite(seconds):
                assert seconds_json(seconds) == DUMPS(round(seconds, 6)), seconds


def test_a_latency_is_written_as_json_writes_it():
    """millis_json writes a latency (rounded to three decimals) from its thousandths: the
    text json.dumps gives the float, where it has an exponent too."""
    latencies = [0.0, -0.0, 0.001, 0.0005, 0.01, 0.1, 1.0, 1.5, 999.999, 1000.0, 12345.678,
                 999999999.999, 1e9, 1e16, 3.1e20, -0.001, -12.5]
    latencies += [thousandths / 1000 for thousandths in range(0, 3_000_000, 7)]
    latencies += [round(ms, 3) for ms in (i * 0.3331 + 1e-4 for i in range(100_000))]
    for latency in latencies:
        assert millis_json(latency) == DUMPS(latency), latency
