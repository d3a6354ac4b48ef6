"""The DNS exchanges' JSON written by a second process while the analysis finishes
(captures/analysis/aside.py): the same bytes as written in one process, the same bytes when
that process fails, and no process left behind.

The suite runs once against each build (compiled and interpreted), so both are checked here.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import resource
import signal
from pathlib import Path

from captures.analysis import analyze_files, aside
from tests.support.corpus import corpus_files


def _with_dns() -> list[Path]:
    found = [p for p in corpus_files() if "dns" in p.name]
    assert found, "the corpus has DNS captures"
    return found


def _analyse(path: Path, how: str, monkeypatch):
    monkeypatch.setenv("KVIZ_ANALYSIS_READAHEAD", how)
    return analyze_files([path])


def _written(model) -> str:
    out = io.StringIO()
    model.write_json(out)
    return out.getvalue()


def _alone(path: Path, monkeypatch) -> str:
    model = _analyse(path, "never", monkeypatch)
    try:
        assert model.dns_aside is None
        return _written(model)
    finally:
        model.close()


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_the_dns_list_written_aside_is_the_bytes_one_process_writes(monkeypatch):
    for path in _with_dns():
        alone = _alone(path, monkeypatch)
        model = _analyse(path, "always", monkeypatch)
        try:
            written = model.dns_aside
            assert written is not None, path.name
            pid = written.pid
            first = _written(model)
            assert written.written, path.name  # the child's text, not the parent's
            assert _gone(pid)
            assert first == alone, path.name
            assert '"dns":[{' in first
            assert _written(model) == first  # written twice, the same twice
        finally:
            model.close()


def test_a_writer_that_dies_costs_time_not_output(monkeypatch, caplog):
    path = _with_dns()[0]
    alone = _alone(path, monkeypatch)

    def die(file, write_part):  # runs in the child only
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(aside, "_write", die)
    model = _analyse(path, "always", monkeypatch)
    try:
        pid = model.dns_aside.pid
        with caplog.at_level(logging.WARNING, logger="captures.analysis.aside"):
            document = _written(model)
    finally:
        model.close()
    assert document == alone
    assert f"killed by signal {int(signal.SIGKILL)}" in caplog.text
    assert "written in this one instead" in caplog.text
    assert _gone(pid)


def test_a_writer_the_disk_refuses_costs_time_not_output(monkeypatch, caplog):
    """The child's file may grow no more than a kilobyte (RLIMIT_FSIZE, set in the child
    only): its write fails with EFBIG, as on a full disk it would with ENOSPC."""
    path = max(_with_dns(), key=lambda p: p.stat().st_size)
    alone = _alone(path, monkeypatch)
    assert alone.count('"transport"') > 10  # more DNS text than the child may write
    real_write = aside._write

    def write_into_a_small_limit(file, write_part):  # runs in the child only
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails rather than kills
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))
        try:
            real_write(file, write_part)
        except OSError as exc:
            os._exit(3 if exc.errno == errno.EFBIG else 4)  # the status says which failure

    monkeypatch.setattr(aside, "_write", write_into_a_small_limit)
    model = _analyse(path, "always", monkeypatch)
    try:
        with caplog.at_level(logging.WARNING, logger="captures.analysis.aside"):
            document = _written(model)
    finally:
        model.close()
    assert "exit status 3" in caplog.text
    assert document == alone


def test_a_model_closed_or_dropped_unwritten_leaves_no_process(monkeypatch):
    path = _with_dns()[0]
    model = _analyse(path, "always", monkeypatch)
    pid = model.dns_aside.pid
    model.close()
    assert _gone(pid)
    model = _analyse(path, "always", monkeypatch)
    pid = model.dns_aside.pid
    del model
    assert _gone(pid)


def test_only_many_exchanges_are_written_aside_unless_always(monkeypatch):
    monkeypatch.delenv("KVIZ_ANALYSIS_READAHEAD", raising=False)
    assert not aside.wanted(aside.MIN_ITEMS - 1)
    assert aside.wanted(aside.MIN_ITEMS)
    monkeypatch.setenv("KVIZ_ANALYSIS_READAHEAD", "always")
    assert aside.wanted(1)
    assert not aside.wanted(0)
    monkeypatch.setenv("KVIZ_ANALYSIS_READAHEAD", "never")
    assert not aside.wanted(aside.MIN_ITEMS)  # asked only of a capture read ahead anyway
