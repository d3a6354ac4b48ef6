"""The kinds of a capture's findings, kept on its row so the list can search by them ("every
capture with a lost packet": `?finding=lost`).

The analysis' annotations carry a `kind` each (`lost`, `refused`, `retransmission`, `rst`, ...:
captures/analysis/diagnosis, captures/analysis/engine.py). The row keeps the distinct kinds as
",lost,retransmission," in `Capture.finding_kinds`, so one `contains` finds a kind on
PostgreSQL and SQLite alike; "" means the analysis found nothing, NULL that it is not known.
The runner stores them when an analysis completes; rows analysed before that are filled in
from their stored analysis by `backfill` (`manage.py kviz_cleanup` runs it).
"""

from __future__ import annotations

import json
import logging
import re

from captures.models import Capture

logger = logging.getLogger(__name__)

KIND = re.compile(r"[a-z][a-z0-9_]{0,39}")
READ_CHUNK = 1024 * 1024
# The annotations come before the DNS exchanges and the messages in a stored analysis
# (SequenceModel.write_json), so they are found without reading a whole large file; a file
# whose annotations end beyond this is left unknown rather than read into memory.
MAX_SCAN = 256 * 1024 * 1024
MARKER = '"annotations":['


def encode(annotations) -> str:
    """",kind,kind," for the distinct, well-formed kinds of `annotations`, sorted."""
    kinds = {a.get("kind") for a in annotations or () if isinstance(a, dict)}
    kinds = sorted(k for k in kinds if isinstance(k, str) and KIND.fullmatch(k))
    return f",{','.join(kinds)}," if kinds else ""


def decode(stored: str | None) -> list[str] | None:
    if stored is None:
        return None
    return [kind for kind in stored.split(",") if kind]


def valid_kind(kind: str) -> bool:
    return bool(KIND.fullmatch(kind or ""))


def pattern(kind: str) -> str:
    """What `finding_kinds__contains` looks for to find `kind`."""
    return f",{kind},"


def read_annotations(path) -> list | None:
    """The `annotations` array of a stored analysis, read only as far as it goes; None when
    it cannot be found."""
    decoder = json.JSONDecoder()
    text, start = "", -1
    with open(path, encoding="utf-8") as fp:
        while start < 0:
            chunk = fp.read(READ_CHUNK)
            if not chunk:
                return None
            # Keep a marker's worth of the previous text: the marker may span two chunks.
            text = text[-len(MARKER):] + chunk
            found = text.find(MARKER)
            if found >= 0:
                start = found + len(MARKER) - 1
        text = text[start:]
        read = len(text)
        while True:
            try:
                value, _end = decoder.raw_decode(text)
                return value if isinstance(value, list) else None
            except ValueError:
                chunk = fp.read(READ_CHUNK)
                read += len(chunk)
                if not chunk or read > MAX_SCAN:
                    return None
                text += chunk


def backfill(limit: int = 500) -> int:
    """Fill in `finding_kinds` of up to `limit` analysed captures that lack it; returns how
    many were filled. A capture whose analysis cannot be read gets "" (searched as having no
    findings) so it is not read again on every run."""
    filled = 0
    rows = Capture.objects.filter(finding_kinds__isnull=True).exclude(analysis_path="")
    for capture in rows.only("id", "analysis_path")[:limit]:
        path = capture.analysis_file
        try:
            annotations = read_annotations(path) if path is not None and path.exists() else None
        except (OSError, UnicodeDecodeError):
            logger.warning("cannot read the analysis of capture %s", capture.id, exc_info=True)
            annotations = None
        if annotations is None and (path is None or not path.exists()):
            continue  # the file is missing (being written, or on another volume): later
        filled += Capture.objects.filter(id=capture.id, finding_kinds__isnull=True).update(
            finding_kinds=encode(annotations or []))
    return filled
