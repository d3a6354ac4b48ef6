"""Files made from a capture's stored analysis (each view's analysis, the layout variants).

Each is stamped with the analysis' modification time as it was read before the analysis was,
and is current only while the two are equal. Comparing "made after the analysis" instead let a
file made from the old analysis pass for current when it was written after a re-analysis had
stored the new one (a page read while the worker re-analysed: the old document for good).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def version(source: Path) -> int:
    """What to stamp on a file about to be made from `source` (read it after this)."""
    return source.stat().st_mtime_ns


def stamp(path: Path, made_from: int) -> None:
    os.utime(path, ns=(made_from, made_from))


def is_current(path: Path, source: Path) -> bool:
    try:
        return path.stat().st_mtime_ns == source.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def write_text(path: Path, made_from: int, text: str) -> None:
    """`text` as `path`, stamped `made_from`; readers see a whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)  # a remote storage's web has no directory yet
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fp:
            fp.write(text)
        stamp(Path(temporary), made_from)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
