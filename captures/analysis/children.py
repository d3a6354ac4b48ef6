"""Forked children of an analysis (readahead.py's reader, aside.py's writer): how they start
clean and how their end is told."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable


def fork(keep_fd: int, body: Callable[[], None]) -> int:
    """Fork a child that runs body() and exits, 0 if it returned; the parent gets its pid.

    The child keeps no file descriptor of the parent's but keep_fd: a copy of the parent's
    sockets and pipes (another capture's stream, a database connection, a worker thread's
    subprocess) held there would keep each open after the parent closed it, until the child
    ends. It never returns into the parent's stack, and never flushes what the parent
    buffered: that is flushed before the fork, or it would be written twice."""
    for output in (sys.stdout, sys.stderr):  # an output already closed has nothing
        with contextlib.suppress(OSError, ValueError, AttributeError):
            output.flush()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.closerange(3, keep_fd)
            os.closerange(keep_fd + 1, _max_fd())
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            body()
            status = 0
        finally:
            os._exit(status)
    return pid


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 1 << 20


def exit_words(pid: int) -> str:
    """How the child ended, waited for: "exit status 1", "killed by signal 9"."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return "its exit status is unknown"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


def stop(pid: int) -> None:
    """Kill the child if it still runs, and wait for it (no zombie is left)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
