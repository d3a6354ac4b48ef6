"""The one refusal every action raises (captures.jobs.actions re-exports it). A module of its own
so that helpers the actions use (captures.jobs.local_copy) raise it without importing them."""

from __future__ import annotations


class ActionError(Exception):
    """A refusal for the user; views translate it into a 4xx (or 5xx) answer. `retry_after`
    (seconds) goes with a refusal that passes by itself (a limit that frees up, a capture that
    ends): the answer's Retry-After header."""

    def __init__(self, message: str, status: int = 400, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
