"""TLS decrypted with a key log (NSS format, as SSLKEYLOGFILE writes it): the corpus' TLS 1.2
captures with their key logs read as tshark reads them with `-o tls.keylog_file:`, request by
request; connections the key log has no key for stay encrypted and say why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from captures.analysis import CaptureError, analyze_files
from captures.analysis.narrative import narrate
from captures.analysis.tlsdecrypt import KeyLog, KeyLogError
from tests.support.corpus import corpus_files

from .tshark_reference import decode_as_for, tshark_binary

SEP = "\x1f"
DECRYPTABLE = [p for p in corpus_files() if p.with_suffix(".keylog").is_file()]


def tshark_requests(path: Path, keylog: Path) -> list[tuple]:
    """(method, target, host, status) of each HTTP/1.x or HTTP/2 request tshark reads with the
    key log, in request order; the status is that of the response tshark pairs with it."""
    argv = [tshark_binary(), "-n", "-r", str(path), "-o", f"tls.keylog_file:{keylog}",
            "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
            "-E", f"aggregator={SEP}", "-e", "tcp.stream", "-e", "http.request.method",
            "-e", "http.request.uri", "-e", "http.host", "-e", "http.response.code",
            "-e", "http2.streamid", "-e", "http2.header.name", "-e", "http2.header.value"]
    for spec in decode_as_for(path):
        argv[1:1] = ["-d", spec]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    requests: list[dict] = []
    waiting: dict[tuple, list[dict]] = {}  # HTTP/1.x: per connection, requests unanswered
    streams: dict[tuple, dict] = {}  # HTTP/2: (connection, stream) → request
    for line in out.splitlines():
        conn, methods, uris, hosts, codes, ids, names, values = [*line.split("\t"),
                                                                 *[""] * 8][:8]
        for method, uri, host in zip(methods.split(SEP), uris.split(SEP), hosts.split(SEP),
                                     strict=False):
            if method:
                request = {"key": (method, uri, host or None), "status": None}
                requests.append(request)
                waiting.setdefault(conn, []).append(request)
        for code in codes.split(SEP):
            if code and waiting.get(conn):
                waiting[conn].pop(0)["status"] = int(code)
        headers = list(zip(names.split(SEP), values.split(SEP), strict=False))
        stream_ids = [s for s in ids.split(SEP) if s and s != "0"]
        if names and stream_ids:
            found = dict(headers)
            key = (conn, stream_ids[0])
            if ":method" in found and key not in streams:
                streams[key] = {"key": (found[":method"], found.get(":path"),
                                        found.get(":authority")), "status": None}
                requests.append(streams[key])
            if ":status" in found and key in streams and streams[key]["status"] is None:
                streams[key]["status"] = int(found[":status"])
    return [(*r["key"], r["status"]) for r in requests]


def engine_requests(model) -> list[tuple]:
    return [(r["method"], r["target"], r["host"], r["status"]) for r in model.to_dict()["http"]]


@pytest.mark.parametrize("path", DECRYPTABLE, ids=lambda p: p.name)
def test_it_reads_inside_tls_what_tshark_reads_with_the_same_key_log(path):
    keylog = path.with_suffix(".keylog")
    expected = tshark_requests(path, keylog)
    assert expected, "tshark read no request: the key log does not fit the capture"
    model = analyze_files([path], keylog=keylog)
    assert engine_requests(model) == expected
    doc = model.to_dict()
    assert all(r["decrypted"] for r in doc["http"])
    [conn] = doc["connections"]
    assert (conn["tls"]["decrypted"], conn["tls"]["decryption"]) == (True, None)
    assert any("decrypted with the key log" in line for line in narrate(model))
    labels = [m["label"] for m in doc["messages"]]
    assert any(label.startswith("decrypted GET ") for label in labels)
    assert "TLS application data" not in labels


@pytest.mark.parametrize("path", DECRYPTABLE, ids=lambda p: p.name)
def test_without_the_key_log_the_same_capture_stays_encrypted(path):
    doc = analyze_files([path]).to_dict()
    assert doc["http"] == []
    assert "decrypted" not in doc["connections"][0]["tls"]


def test_a_connection_the_key_log_has_no_key_for_says_so():
    others = [p for p in corpus_files() if p.parent.name == "tls" and "tls13-wolfssl" in p.name]
    model = analyze_files(others, keylog=DECRYPTABLE[0].with_suffix(".keylog"))
    [conn] = model.to_dict()["connections"]
    assert conn["tls"]["decrypted"] is False
    assert conn["tls"]["decryption"] == "no key for this connection in the key log"
    assert any("not decrypted: no key for this connection" in line for line in narrate(model))


def test_a_file_that_is_not_a_key_log_is_refused(tmp_path):
    bogus = tmp_path / "keys.txt"
    bogus.write_text("hello\nCLIENT_RANDOM nothex nothex\n")
    with pytest.raises(KeyLogError):
        KeyLog.from_path(bogus)
    with pytest.raises(CaptureError, match="not a TLS key log"):
        analyze_files(DECRYPTABLE[:1], keylog=bogus)


def test_key_log_lines_it_cannot_use_are_skipped_not_fatal():
    text = DECRYPTABLE[0].with_suffix(".keylog").read_text()
    keylog = KeyLog.parse("# a comment\n\nRSA 0011223344556677 00ff\n" + text)
    assert len(keylog) == 1


def test_records_held_for_decryption_at_once_are_bounded(monkeypatch):
    """A record split over segments is held until whole; past the bound for all connections
    together, a direction stops being decrypted (and says why) rather than hold more."""
    from captures.analysis import tcp

    [path] = [p for p in DECRYPTABLE if p.name.startswith("scapy_")]  # records span segments
    monkeypatch.setattr(tcp, "MAX_TLS_BUFFERED", 0)
    doc = analyze_files([path], keylog=path.with_suffix(".keylog")).to_dict()
    assert any("TLS records held at once for decryption" in w
               for w in doc["capture"]["warnings"])
    assert doc["connections"][0]["tls"]["decryption"].endswith(
        "too many TLS records held at once (see warnings)")


def test_the_cli_takes_a_key_log(capsys, tmp_path):
    from captures.cli.analyze import main

    path = DECRYPTABLE[0]
    assert main(["--keylog", str(path.with_suffix(".keylog")), str(path)]) == 0
    out = capsys.readouterr().out
    assert "decrypted with the key log" in out
    assert "HTTP #0 request 1: GET /" in out
    bogus = tmp_path / "keys.log"
    bogus.write_text("nothing\n")
    assert main(["--keylog", str(bogus), str(path)]) == 2
    assert "not a TLS key log" in capsys.readouterr().err
