"""Notes on a capture's diagram: add, list, delete. Validation lives here, HTTP in the views.

A note targets one arrow (`message:<id>`) or one phase group (`phase:<group id>`); the ids are
the model's message ids and the layout's phase group ids, which stay stable for a stored
analysis. The text is kept as typed (bounded) and escaped by whoever writes it out; a note as
JSON is captures.web.redaction.note (a redacted share link shows no authors).
"""

from __future__ import annotations

import re

from django.db import transaction

from captures.jobs.actions import ActionError
from captures.models import NOTE_MAX_LENGTH, Capture, Note

TARGET = re.compile(r"(message|phase):(\d{1,9})")
MAX_NOTES = 1000  # per capture: a postmortem, not a chat


def list_notes(capture: Capture) -> list[Note]:
    return list(capture.notes.select_related("author"))


def add_note(user, capture: Capture, data) -> Note:
    if not isinstance(data, dict):
        raise ActionError("the body must be a JSON object with target and text")
    target, text = data.get("target"), data.get("text")
    if not isinstance(target, str) or not TARGET.fullmatch(target):
        raise ActionError('target must be "message:<id>" or "phase:<group id>"')
    if not isinstance(text, str) or not text.strip():
        raise ActionError("text must be a non-empty string")
    text = text.strip()
    if len(text) > NOTE_MAX_LENGTH:
        raise ActionError(f"text may be at most {NOTE_MAX_LENGTH} characters")
    with transaction.atomic():
        capture.lock()  # a count then an insert without it let 40 posts at 990 make 1,008
        if capture.notes.count() >= MAX_NOTES:
            raise ActionError(f"a capture keeps at most {MAX_NOTES} notes", 409)
        return Note.objects.create(capture=capture, target=target, author=user, text=text)


def delete_note(user, capture: Capture, note_id: int) -> None:
    note = capture.notes.filter(id=note_id).first()
    if note is None:
        raise ActionError("no such note", 404)
    # The capture's owner may see the note but not remove a colleague's words: author or staff.
    if not (user.is_staff or note.author_id == user.pk):
        raise ActionError("only the note's author (or staff) may delete it", 403)
    note.delete()
