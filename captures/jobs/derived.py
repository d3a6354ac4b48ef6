"""Files made from a capture's stored analysis (each view's analysis, the layout variants).

Each is stamped with the analysis' modification time as it was read before the analysis was,
and is current only while the two are equal. Comparing "made after the analysis" instead let a
file made from the old analysis pass for current when it was written after a re-analysis had
stored the new one (a page read while the worker re-analysed: the old document for good).
"""

from __future__ import annotations

import os
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
