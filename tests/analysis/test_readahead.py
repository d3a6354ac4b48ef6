"""Reading ahead in a second process (captures/analysis/readahead.py): the same bytes as one
process on every capture, the same errors, and no process left behind when either side fails.

The suite runs once against each build (compiled and interpreted), so both are checked here.
"""

from __future__ import annotations

import io
import json
import marshal
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from captures.analysis import CaptureError, CaptureFile, analyze_files, readahead, wire
from captures.analysis.dns import dns_label
from captures.analysis.hops import Hop, LogicalMessage
from captures.analysis.packets import decode_frame
from captures.analysis.pcapfile import Warnings, read_frames
from tests.support.corpus import corpus_files
from tests.support.dnat import record_dnat


def _document(files, how: str, monkeypatch, **options) -> str:
    monkeypatch.setenv("KVIZ_ANALYSIS_READAHEAD", how)
    out = io.StringIO()
    analyze_files(files, **options).write_json(out)
    return out.getvalue()


def _both(files, monkeypatch, **options) -> tuple[str, str]:
    return (_document(files, "never", monkeypatch, **options),
            _document(files, "always", monkeypatch, **options))


@pytest.fixture
def forks(monkeypatch):
    """The pids of the reading processes this test forks."""
    pids = []
    real_fork = os.fork

    def fork():
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(readahead.os, "fork", fork)
    return pids


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_every_corpus_capture_gives_the_same_bytes_read_ahead(monkeypatch, forks):
    captures = corpus_files()
    assert captures
    for path in captures:
        alone, ahead = _both([path], monkeypatch)
        assert ahead == alone, path.name
    assert len(forks) == len(captures)  # each was read in a second process
    assert all(_gone(pid) for pid in forks)


def test_several_files_merge_and_fold_the_same_read_ahead(tmp_path, monkeypatch, forks):
    recorded = record_dnat(tmp_path, "kra")
    files = [CaptureFile(recorded.client, "client"), recorded.router_file(),
             CaptureFile(recorded.server, "server")]
    alone, ahead = _both(files, monkeypatch)
    assert '"hops":[{' in ahead and ahead.count('"interface":"router:') > 0
    assert ahead == alone
    assert len(forks) == 1


def test_a_text_table_emptied_between_batches_gives_the_same_bytes(tmp_path, monkeypatch):
    """Addresses and interface labels cross as ids into a table both processes keep; past
    MAX_TEXTS texts it is emptied on both sides (a scan names a new address in every packet).
    Here it is emptied after almost every batch, across files, hops and DNS answers."""
    recorded = record_dnat(tmp_path, "ktt")
    files = [CaptureFile(recorded.client, "client"), recorded.router_file(),
             CaptureFile(recorded.server, "server")]
    monkeypatch.setattr(readahead, "BATCH", 4)
    monkeypatch.setattr(wire, "MAX_TEXTS", 3)
    monkeypatch.setattr(wire, "MAX_TEMPLATES", 2)
    alone, ahead = _both(files, monkeypatch)
    assert len(json.loads(ahead)["participants"]) > 3  # more texts than the table holds
    assert ahead == alone
    dns = next(p for p in corpus_files() if "dns-search-suffix" in p.name)
    alone, ahead = _both([dns], monkeypatch)
    assert '"phase":"dns"' in ahead
    assert ahead == alone


def _dns_records(path):
    """Every DNS-carrying record of a capture, decoded as the reading process decodes it."""
    with open(path, "rb") as fp:
        _linktypes, frames = read_frames(fp, 0, Warnings(), str(path))
        records = [decode_frame(frame) for frame in frames]
    return [r for r in records if r is not None and r.dns]


def test_a_lookup_asked_again_crosses_as_its_template():
    """A DNS message alike in all but its ID to one sent before crosses the pipe as its ID and
    a template's id; the analysing process rebuilds it whole, with its label's words."""
    path = next(p for p in corpus_files() if "dns-search-suffix" in p.name)
    records = _dns_records(path)
    batch = wire.Batch()
    for record in records:
        batch.add(LogicalMessage(record, (), Hop(record.interface, record.direction, record.src,
                                                 record.sport, record.dst, record.dport,
                                                 record.time, None, 0)))
    values = marshal.loads(marshal.dumps(batch.take()))
    sent = values[7]  # the templates this batch added to the table
    assert 0 < len(sent) < len(records)  # the repeated ones crossed as ids
    texts, templates = [], []
    decoded, _only_messages = wire.decode_batch(texts, templates, values)
    assert len(templates) == len(sent)
    for record, message in zip(records, decoded, strict=True):
        for sent_info, got in zip(record.dns, message.record.dns, strict=True):
            assert (got.id, got.is_response, got.rcode, got.name, got.qtype, got.answers,
                    got.truncated, got.answers_cut) == (
                sent_info.id, sent_info.is_response, sent_info.rcode, sent_info.name,
                sent_info.qtype, sent_info.answers, sent_info.truncated, sent_info.answers_cut)
        assert dns_label(message.record.dns) == dns_label(record.dns)
        assert message.record.dns[0].words is not None  # made once, with its template


def test_reading_warnings_land_where_one_process_puts_them(tmp_path, monkeypatch):
    """A capture cut off in the middle of a packet, next to one whole: the cut file's warning
    comes from the reading process, the analysis adds its own, and the order is kept."""
    source = max(corpus_files(), key=lambda p: p.stat().st_size)
    data = source.read_bytes()
    cut = tmp_path / f"cut{source.suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3 + 3])
    alone, ahead = _both([cut, source], monkeypatch)
    assert '"partial":true' in ahead
    assert ahead == alone


def test_a_file_that_is_no_capture_fails_with_the_same_words(tmp_path, monkeypatch, forks):
    good = corpus_files()[0]
    bad = tmp_path / "notes.pcap"
    bad.write_text("not a capture at all\n")
    said = []
    for how in ("never", "always"):
        monkeypatch.setenv("KVIZ_ANALYSIS_READAHEAD", how)
        with pytest.raises(CaptureError) as raised:
            analyze_files([good, bad])
        said.append(str(raised.value))
    assert said[0] == said[1]
    assert "not a pcap or pcapng capture" in said[1]
    assert forks and all(_gone(pid) for pid in forks)


def test_a_reading_process_that_dies_is_an_error_naming_it(monkeypatch, forks):
    path = max(corpus_files(), key=lambda p: p.stat().st_size)
    real_encode = readahead._encode
    encoded = []

    def encode_then_die(batch, message):
        encoded.append(1)
        if len(encoded) == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # runs in the child only
        return real_encode(batch, message)

    monkeypatch.setattr(readahead, "_encode", encode_then_die)
    monkeypatch.setenv("KVIZ_ANALYSIS_READAHEAD", "always")
    with pytest.raises(readahead.ReadaheadError) as raised:
        analyze_files([path])
    assert f"pid {forks[0]}" in str(raised.value)
    assert f"killed by signal {int(signal.SIGKILL)}" in str(raised.value)
    assert not encoded  # the parent encoded nothing: the counting happened in the child
    assert _gone(forks[0])


def test_an_analysis_that_fails_ends_its_reading_process(monkeypatch, forks):
    path = max(corpus_files(), key=lambda p: p.stat().st_size)
    real_decode = readahead.wire.decode_batch
    batches = []

    def decode_then_fail(texts, templates, values):  # in the analysing process, its 2nd batch
        batches.append(1)
        if len(batches) == 2:
            assert not _gone(forks[0])  # the reader was still there to be ended
            raise RuntimeError("the analysis itself failed")
        return real_decode(texts, templates, values)

    monkeypatch.setattr(readahead.wire, "decode_batch", decode_then_fail)
    monkeypatch.setenv("KVIZ_ANALYSIS_READAHEAD", "always")
    with pytest.raises(RuntimeError, match="the analysis itself failed"):
        analyze_files([path])
    assert len(batches) == 2
    assert _gone(forks[0])


def test_auto_reads_ahead_only_large_captures_on_several_cores(tmp_path, monkeypatch):
    monkeypatch.delenv("KVIZ_ANALYSIS_READAHEAD", raising=False)
    small, large = tmp_path / "small.pcap", tmp_path / "large.pcap"
    small.write_bytes(b"\0" * 1000)
    large.write_bytes(b"\0" * readahead.MIN_BYTES)
    monkeypatch.setattr(readahead.os, "cpu_count", lambda: 2)
    assert not readahead.wanted([CaptureFile(small)])
    assert readahead.wanted([CaptureFile(large)])
    assert readahead.wanted([CaptureFile(small), CaptureFile(large)])
    monkeypatch.setattr(readahead.os, "cpu_count", lambda: 1)
    assert not readahead.wanted([CaptureFile(large)])
    monkeypatch.setenv("KVIZ_ANALYSIS_READAHEAD", "sometimes")
    with pytest.raises(CaptureError, match="KVIZ_ANALYSIS_READAHEAD must be one of"):
        readahead.wanted([CaptureFile(large)])


def test_what_the_parent_closes_is_closed_while_it_reads_ahead(monkeypatch, forks):
    """A capture worker analyses in one of many threads: another thread's pipe or socket that
    it closes mid-analysis must close then, not when the reading process ends."""
    path = max(corpus_files(), key=lambda p: p.stat().st_size)
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    real_encode = readahead._encode
    encoded = []

    def encode_slowly(batch, message):  # in the child: hold it alive after its first batch
        encoded.append(1)
        if len(encoded) == readahead.BATCH + 1:
            time.sleep(3)
        return real_encode(batch, message)

    real_decode = readahead.wire.decode_batch
    seen = []

    def decode_and_close(texts, templates, values):  # in the analysing process, at its first batch
        if not seen:
            state = Path(f"/proc/{forks[0]}/stat").read_text().rsplit(")", 1)[1].split()[0]
            assert state in "RSD"  # the reader runs (not a zombie), forked with the pipe
            os.close(write_end)
            try:
                seen.append(os.read(read_end, 1))  # EOF at once: no copy of the write end
            except BlockingIOError:
                seen.append("a copy of the write end is still open")
        return real_decode(texts, templates, values)

    monkeypatch.setattr(readahead, "_encode", encode_slowly)
    monkeypatch.setattr(readahead.wire, "decode_batch", decode_and_close)
    monkeypatch.setenv("KVIZ_ANALYSIS_READAHEAD", "always")
    try:
        analyze_files([path])
    finally:
        os.close(read_end)
    assert seen == [b""]


def test_it_reads_ahead_from_a_worker_thread_as_from_the_main_one(monkeypatch, forks):
    """The capture worker analyses a capture that ended in the thread that recorded it."""
    path = max(corpus_files(), key=lambda p: p.stat().st_size)
    alone = _document([path], "never", monkeypatch)
    results = []
    worker = threading.Thread(target=lambda: results.append(
        _document([path], "always", monkeypatch)))
    worker.start()
    worker.join(timeout=120)
    assert results == [alone]
    assert len(forks) == 1 and _gone(forks[0])
