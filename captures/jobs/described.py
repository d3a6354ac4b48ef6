"""What a capture's analysis says in sentences (captures.render.describe: "What happened" and
the analysis' sections), kept beside it, one file per view.

The capture's page shows it at every view. Made from the stored analysis it needs the whole
document but the messages: a few seconds and hundreds of MB at 1M packets, too much for every
page view (it used to be left out above 64 MB of analysis, so a big capture's page said nothing
of what broke). So it is made once per analysis: the owner's by the worker, from the model it
has just stored, before the capture is announced (`write_owner`); another view's (a share link)
on its first page view, from the stored document's head (`read`). Each file is stamped with the
analysis' time (captures.jobs.derived) and made again when the analysis changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from captures.jobs import derived
from captures.jobs.diagram_cache import read_head
from captures.jobs.owner_view import OWNER, unpath
from captures.models import Capture
from captures.render.describe import MAX_LINES, describe


def path(capture: Capture, view: str) -> Path:
    return capture.directory / f"described.{view}.json"


def read(capture: Capture, view: str = OWNER,
         prepare: Callable[[dict], dict] | None = None) -> dict | None:
    """The description `view` may read: `prepare` makes its model from the stored one without
    messages (a share link's whitelist); the owner's (no `prepare`) is the stored one's with
    the server's paths cut. None without an analysis."""
    analysis = capture.analysis_file
    if analysis is None or not analysis.exists():
        return None
    kept = path(capture, view)
    if derived.is_current(kept, analysis):
        try:
            return json.loads(kept.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # made again below
    made_from = derived.version(analysis)
    head = read_head(analysis)
    described = describe(prepare(head)) if prepare is not None else _owners(head)
    derived.write_text(kept, made_from, json.dumps(described, ensure_ascii=False))
    return described


def write_owner(capture: Capture, model) -> None:
    """The owner's description of the analysis just stored, from `model` (still open: a
    captures.analysis.model.SequenceModel), as `read` would make it from the stored document."""
    analysis = capture.analysis_file
    made_from = derived.version(analysis)
    head = {"capture": model.capture, "participants": model.participants,
            "connections": model.connections, "http": model.http,
            "annotations": model.annotations, "dns": _Listed(model)}
    derived.write_text(path(capture, OWNER), made_from,
                       json.dumps(_owners(head), ensure_ascii=False))


def _owners(head: dict) -> dict:
    # The sentences carry the model's strings as they are: cutting the server's paths out of
    # them is cutting them out of the model, at the cost of a page instead of the whole head
    # (seconds at 1M packets).
    return unpath(describe(head))


class _Listed:
    """The model's DNS exchanges as describe() reads a section: its length and its first
    MAX_LINES, made into dicts (at 1M packets there are ~300,000)."""

    def __init__(self, model) -> None:
        self.model = model

    def __len__(self) -> int:
        return len(self.model.dns_exchanges)

    def __getitem__(self, where: slice) -> list[dict]:
        start, stop, _ = where.indices(min(len(self), MAX_LINES))
        return [exchange.to_dict(self.model.t0)
                for exchange in self.model.dns_exchanges[start:stop]]
