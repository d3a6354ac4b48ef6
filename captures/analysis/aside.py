"""A part of the model's JSON written by a forked child while the analysis finishes.

Theory of operation. After the last packet one process is left (readahead.py's reader has
ended): it finishes the analysis (summaries, findings, the diagnosis), then writes the model
part after part, while the second core idles. A part that is final once the last packet is
processed need not wait for that: the process forks, the child writes the part's JSON text
into an unlinked temporary file and exits, and the parent finishes meanwhile. When the model
is written, the parent waits for the child and copies its text where the part goes. The text
is what the parent would have written: the same code, on the objects as they were at the fork,
which nothing changes after the last packet (the DNS exchanges: engine.py).

A child that fails (a full disk, killed) costs time, not output: the parent writes the part
itself, and the log says why. A model closed or dropped first stops its child: none is left
running or unwaited-for.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from typing import IO

from . import children, readahead

log = logging.getLogger(__name__)

# Below this many items the fork costs more than writing them costs the parent (DNS
# exchanges: about 2 microseconds each); KVIZ_ANALYSIS_READAHEAD=always writes any aside, so
# that the test suite's run of that mode writes every capture's DNS exchanges here.
MIN_ITEMS = 20_000
COPY_BLOCK = 1 << 20

Write = Callable[[str], object]


def wanted(items: int) -> bool:
    """Whether to write a part of this many items aside (when the capture was read ahead: a
    second core, and fork)."""
    how = readahead.choice()
    return items > 0 and how != "never" and (items >= MIN_ITEMS or how == "always")


class Aside:
    """A part's text, being written by a child into a temporary file."""

    def __init__(self, what: str, pid: int, file: IO[bytes]) -> None:
        self.what = what
        self.pid: int | None = pid
        self.file: IO[bytes] | None = file
        self.written = False

    def copy_into(self, write: Callable[[bytes], object]) -> bool:
        """The child's text passed to write(), once it has ended well; False, with nothing
        written, if it failed (the caller writes the part itself)."""
        if self.pid is not None:
            pid, self.pid = self.pid, None
            words = children.exit_words(pid)
            self.written = words == "exit status 0"
            if not self.written:
                log.warning("writing %s in a second process failed (%s): written in this "
                            "one instead", self.what, words)
        if not self.written or self.file is None:
            return False
        self.file.seek(0)
        while block := self.file.read(COPY_BLOCK):
            write(block)
        return True

    def close(self) -> None:
        if self.pid is not None:
            children.stop(self.pid)
            self.pid = None
        if self.file is not None:
            self.file.close()
            self.file = None

    def __del__(self) -> None:
        self.close()


def start(what: str, write_part: Callable[[Write], None]) -> Aside | None:
    """write_part(write) run in a forked child, its text kept for Aside.copy_into; None if no
    temporary file can be made (the part is then written as any other)."""
    try:
        file = tempfile.TemporaryFile("w+b")  # noqa: SIM115  (closed by Aside.close)
    except OSError as exc:
        log.warning("no temporary file for %s (%s): written after the analysis", what, exc)
        return None
    pid = children.fork(file.fileno(), lambda: _write(file, write_part))
    return Aside(what, pid, file)


def _write(file: IO[bytes], write_part: Callable[[Write], None]) -> None:
    """The child's work (a module global: the tests replace it to act inside the child)."""
    write_part(lambda text: file.write(text.encode()))
    file.flush()
