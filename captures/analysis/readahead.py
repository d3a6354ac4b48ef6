"""Reading ahead in a second process: decode and fold on one core, analyse on the other.

Theory of operation. An analysis is a pipeline: read frames, decode them to PacketRecords, fold
copies into logical messages (engine.logical_messages), then process each message in order
(TCP, DNS, labels, the message's JSON). The first half needs nothing from the second, so on a
machine with more than one core a large capture is split there: the process forks, the child
runs the first half and writes the logical messages down a pipe in batches, the parent reads
them and runs the second half. Both run at once; the output is the same as in one process,
byte for byte (tests/analysis/test_readahead.py), because the parent sees the same messages in
the same order, and everything else the first half produces is sent too:

- t0 (the first frame's time), with every batch: it is final before the first message;
- the warnings the reading adds, in the stream before the first message after them, so that
  they interleave with the parent's own warnings exactly as they would in one process;
- at the end, the files' facts and what the copy folder's bounds did.

The child keeps no file descriptor of the parent's but its end of the pipe (a capture worker
analyses in one of many threads, whose sockets and pipes must close when they close them).

A CaptureError in the child (a file that is not a capture, a link type not supported) is
raised in the parent with the same words, after the messages before it, as in one process.
Any other failure of the child, or its death, is an error in the parent naming it; the parent
that stops early (an error of its own, an interrupt) closes the pipe and kills the child, so a
child never outlives its analysis.

Messages cross the pipe in batches, marshal'd, as wire.py makes them a few plain values.
"""

from __future__ import annotations

import contextlib
import fcntl
import marshal
import os
import signal
import struct
import sys
import traceback
from pathlib import Path

from . import wire
from .records import CaptureError

# Captures smaller than this are analysed in one process: forking and the pipe cost a few
# milliseconds, and the tests' many small captures would pay that for nothing.
MIN_BYTES = 4 * 1024 * 1024
# KVIZ_ANALYSIS_READAHEAD: "auto" (the default: large captures, more than one core, fork
# available), "always" or "never". The test suite runs both ways.
CHOICES = ("auto", "always", "never")
# Messages per write, about 35 KB: measured at a million packets, batches of 1024 (280 KB)
# took both processes 5-10% more CPU time, and smaller ones gain nothing more.
BATCH = 128
# In Linux's default 64 KB pipe, the reader could stay only two batches ahead, and each
# process stopped for the other whenever one was briefly slower (a million packets: 5.6 s ->
# 4.8 s with the pipe made this large; larger, on the machine measured, was slower again).
# Unprivileged, Linux allows 1 MB (/proc/sys/fs/pipe-max-size); where it refuses, the default
# pipe works, only slower.
PIPE_BYTES = 1 << 20
_LENGTH = struct.Struct("<I")
_encode = wire.Batch.add  # a module global: the tests replace it to act inside the child


class ReadaheadError(CaptureError):
    """The reading process failed other than with a CaptureError, or died: said where a
    capture's errors are (the CLI, the capture's page), with what happened to it."""


def choice() -> str:
    value = os.environ.get("KVIZ_ANALYSIS_READAHEAD", "auto") or "auto"
    if value not in CHOICES:
        raise CaptureError(f"KVIZ_ANALYSIS_READAHEAD must be one of {', '.join(CHOICES)}, "
                           f"not {value!r}")
    return value


def wanted(files) -> bool:
    """Whether to read ahead in a second process for these capture files."""
    how = choice()
    if how == "never" or not hasattr(os, "fork"):
        return False
    if how == "always":
        return True
    if (os.cpu_count() or 1) < 2:
        return False
    size = 0
    for capture_file in files:
        try:
            size += Path(capture_file.path).stat().st_size
        except OSError:
            return False  # said as the capture's own error, by the reading in one process
    return size >= MIN_BYTES


# -- the child: read, decode, fold, send ----------------------------------------------------------


def _send(fd: int, item) -> None:
    data = marshal.dumps(item)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _child(analysis, fd: int) -> None:
    batch = wire.Batch()
    warnings = wire.WarningsSent(analysis.warnings)
    file_facts: list[dict] = []
    try:
        for ready in analysis.logical_messages(file_facts):
            batch.t0 = analysis.t0 or 0.0  # final before the first message (engine.py)
            at = 0
            while at < len(ready):
                at = wire.fill(batch, ready, at, BATCH, warnings, _encode)
                if len(batch) >= BATCH:
                    _send(fd, ("batch", analysis.t0, batch.take()))
        warnings.new_items(batch)
        folder = analysis.folder
        _send(fd, ("end", analysis.t0, batch.take(), file_facts, folder.released_early,
                   folder.unfolded))
    except CaptureError as exc:
        warnings.new_items(batch)
        _send(fd, ("capture_error", analysis.t0, batch.take(), str(exc)))
    except BrokenPipeError:
        pass  # the parent stopped reading: it has its answer, or an error of its own
    except BaseException:  # said to the parent, whatever it was
        _send(fd, ("failed", analysis.t0, batch.take(), traceback.format_exc(limit=20)))


# -- the parent: receive, and hand the messages over in order ----------------------------------


def _read_exactly(stream, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def batches(analysis, file_facts: list[dict]):
    """analysis.logical_messages(file_facts), read ahead in a forked child process: lists of
    messages, each to be processed before the next is asked for."""
    read_fd, write_fd = os.pipe()
    _enlarge(write_fd)
    # Whatever the parent has buffered for its own output must not be written twice (the
    # child never flushes: it ends with os._exit); an output already closed has nothing.
    for output in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            output.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the parent's stack
        status = 1
        try:
            # Only the pipe stays open: a copy of the parent's sockets and pipes (another
            # capture's stream, a database connection, a worker thread's subprocess) held
            # here would keep each open after the parent closed it, until this child ends.
            os.closerange(3, write_fd)
            os.closerange(write_fd + 1, _max_fd())
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _child(analysis, write_fd)
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    ended = False
    texts: list = []  # the text table (wire.py), as the child's batches build it
    templates: list = []  # and the DNS templates' table
    try:
        with os.fdopen(read_fd, "rb", buffering=1 << 20) as stream:
            while True:
                head = _read_exactly(stream, _LENGTH.size)
                body = head and _read_exactly(stream, _LENGTH.unpack(head)[0])
                if body is None:
                    raise ReadaheadError(
                        f"the process reading the capture (pid {pid}) ended without "
                        f"finishing ({_exit_words(pid)})")
                kind, analysis.t0, values, *rest = marshal.loads(body)
                decoded, only_messages = wire.decode_batch(texts, templates, values)
                if only_messages:
                    yield decoded
                else:
                    run: list = []  # the messages since the last warning
                    for item in decoded:
                        if type(item) is not tuple:
                            run.append(item)
                            continue
                        if run:
                            yield run
                            run = []
                        if item[0] == wire.WARNING:
                            analysis.warnings.add(item[1], partial=False)
                        else:
                            analysis.warnings.partial = True
                    if run:
                        yield run
                if kind == "batch":
                    continue
                ended = True
                if kind == "end":
                    facts, folder = rest[0], analysis.folder
                    file_facts.extend(facts)
                    folder.released_early, folder.unfolded = rest[1], rest[2]
                    return
                if kind == "capture_error":
                    raise CaptureError(rest[0])
                raise ReadaheadError(f"the process reading the capture failed:\n{rest[0]}")
    finally:
        if not ended:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # already waited for by _exit_words
            os.waitpid(pid, 0)


def _enlarge(fd: int) -> None:
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, set_size, PIPE_BYTES)


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 1 << 20


def _exit_words(pid: int) -> str:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return "its exit status is unknown"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"
