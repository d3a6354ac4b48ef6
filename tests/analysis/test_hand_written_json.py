"""write_json writes connections and HTTP requests by hand (model.encode_connection,
model.encode_http_request): each must be exactly what json writes for its dict, on every
corpus capture, and for any dict the hand-written text does not expect (another shape, a value
of another type), json's own text."""

from __future__ import annotations

import copy
import io
import json

import pytest

from captures.analysis import analyze_files
from captures.analysis.engine import CaptureFile
from captures.analysis.model import encode_connection, encode_http_request
from tests.support.corpus import corpus_files

DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # as model.py


@pytest.fixture(scope="module")
def models():
    return [(path, analyze_files([CaptureFile(path)])) for path in corpus_files()]


def test_every_corpus_connection_and_request_is_written_as_json_writes_it(models):
    connections = requests = tls = h2 = 0
    for path, model in models:
        for summary in model.connections:
            assert encode_connection(summary) == DUMPS(summary), (path.name, summary)
            connections += 1
            tls += summary["tls"] is not None
        for request in model.http:
            assert encode_http_request(request) == DUMPS(request), (path.name, request)
            requests += 1
            h2 += request["protocol"] == "h2"
        out = io.StringIO()
        model.write_json(out)
        document = json.loads(out.getvalue())
        assert document["connections"] == model.connections, path.name
        assert document["http"] == model.http, path.name
    # The corpus holds what the hand-written text covers and what it leaves to json (TLS
    # details, HTTP/2 streams).
    assert connections > 20 and requests > 10 and tls > 0 and h2 > 0, (connections, requests)


@pytest.fixture(scope="module")
def summary(models) -> dict:
    """A TLS connection's summary (its "tls" a dict) from the corpus."""
    return next(copy.deepcopy(c) for _, model in models for c in model.connections
                if c["tls"] is not None)


@pytest.fixture(scope="module")
def request_(models) -> dict:
    """An HTTP/1.1 request with its response from the corpus."""
    return next(copy.deepcopy(r) for _, model in models for r in model.http
                if r["protocol"] == "http/1.1" and r["response_t"] is not None)


UNUSUAL_VALUES = [True, False, None, 0, -1, 2**70, 0.0, -0.0, 1e-5, 0.1 + 0.2, 1e20, -2.5, 1e9,
                  float("inf"), "é\"\\\n\u2028", "", [1, 2], {"a": 1}]


@pytest.mark.parametrize("value", UNUSUAL_VALUES, ids=repr)
def test_a_connection_with_any_value_anywhere_is_still_json(value, summary):
    for key in [*summary, "timing.start", "timing.ttfb_ms", "annotations.0"]:
        changed = copy.deepcopy(summary)
        if key.startswith("timing."):
            changed["timing"][key[7:]] = value
        elif key == "annotations.0":
            changed["annotations"] = [value]
        else:
            changed[key] = value
        assert encode_connection(changed) == DUMPS(changed), key


@pytest.mark.parametrize("value", UNUSUAL_VALUES, ids=repr)
def test_a_request_with_any_value_anywhere_is_still_json(value, request_):
    for key in request_:
        changed = {**request_, key: value}
        assert encode_http_request(changed) == DUMPS(changed), key


def test_another_shape_is_left_to_json(summary, request_):
    request = request_
    for changed in (
        {**request, "stream": 3},  # HTTP/2
        {**request, "decrypted": True},
        {k: v for k, v in request.items() if k != "ttfb_ms"},
        dict(reversed(list(request.items()))),
    ):
        assert encode_http_request(changed) == DUMPS(changed)
    for changed in (
        {**summary, "extra": [1]},
        {k: v for k, v in summary.items() if k != "outcome"},
        {**summary, "timing": {**summary["timing"], "dns_ms": 1.5}},
        {**summary, "tls": {"sni": "a\"b", "alpn": ["h2"], "version": None}},
        {**summary, "tls": {**summary["tls"], "alerts": [
            {"by": "server", "level": "fatal", "description": "handshake_failure"}]}},
        {**summary, "tls": {**summary["tls"], "sni": "é\"\\\u2028"}},
        {**summary, "tls": {**summary["tls"], "alpn_offered": ["h2", 3]}},
        {**summary, "tls": {**summary["tls"], "certificate_request": 1}},
    ):
        assert encode_connection(changed) == DUMPS(changed)
