"""What a capture's owner reads: the stored documents with no path of the server's data directory.

No answer, for any view, carries such a path: `unpath` turns one into the file's base name
(`capture.pcapng`). It lives here, below the web, because the worker writes the owner's diagram
layout (captures.jobs.diagram_cache) before a capture is announced completed; the share links'
whitelists, which the web alone needs, stay in captures.web.redaction, which builds on this.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from django.conf import settings

OWNER = "owner"  # the view's name, also the first part of its layout variants' directories


def unpath(value):
    """`value` with every path below the data directory cut to its file's name."""
    pattern = _data_paths(str(settings.DATA_DIR))
    return _strings(value, lambda text: pattern.sub(r"\1", text) if "/" in text else text)


def may_name_paths(text: str, start: int = 0, end: int | None = None) -> bool:
    """Whether the JSON text text[start:end] may hold a string `unpath` changes: without one
    of its roots (as JSON writes them, escaped or not) or a `.copies` directory, it holds none.
    Searching the text is much quicker than walking the document it encodes."""
    end = len(text) if end is None else end
    return any(text.find(literal, start, end) >= 0
               for literal in _literals(str(settings.DATA_DIR)))


@functools.lru_cache(maxsize=4)
def _literals(data_dir: str) -> tuple[str, ...]:
    roots = {data_dir, str(Path(data_dir).resolve())}
    return tuple({json.dumps(root, ensure_ascii=ascii)[1:-1] for root in roots
                  for ascii in (True, False)} | {"/.copies"})


@functools.lru_cache(maxsize=4)
def _data_paths(data_dir: str) -> re.Pattern:
    roots = sorted({data_dir, str(Path(data_dir).resolve())}, key=len, reverse=True)
    # With a remote storage a worker analyses copies in its own data directory's `.copies/`
    # (captures.adapters.storage), which need not be this process' data directory.
    copies = r"(?:/[^\s/\"']+)*/\.copies"
    return re.compile("(?:" + "|".join([*(re.escape(root) for root in roots), copies]) + ")"
                      + r"(?:/[^\s/\"']+)*/([^\s/\"']+)")


def _strings(value, change):
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {key: _strings(item, change) for key, item in value.items()}
    if isinstance(value, list):
        return [_strings(item, change) for item in value]
    return value
