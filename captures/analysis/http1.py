"""HTTP/1.x message starts, read from TCP segments.

A request or status line is recognised at the start of a segment or right after the end of a
previous header block in the same segment (pipelining); a '101 Switching Protocols' to h2c says
where the connection's HTTP/2 frames begin. Compiled with the per-packet path (build.MODULES):
every segment of an HTTP/1.x connection is read here, and interpreted these calls were an
eighth of the analysing process' time on the benchmark capture.
"""

from __future__ import annotations

import re
from typing import Any, Final

_REQUEST_LINE: Final = re.compile(
    rb"(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH|CONNECT|TRACE|PROPFIND|MKCOL|COPY|MOVE|LOCK|"
    rb"UNLOCK|PROPPATCH|SEARCH|REPORT) (\S{1,8000}) HTTP/(1\.[01])\r?\n"
)
_STATUS_LINE: Final = re.compile(rb"HTTP/(1\.[01]) (\d{3})(?: ([^\r\n]{0,200}))?\r?\n")
_HOST: Final = re.compile(rb"\r\nhost:[ \t]*([^\r\n]{1,255})", re.IGNORECASE)
_HEADER_END: Final = b"\r\n\r\n"
MAX_STARTS: Final = 64  # message starts read in one segment


def _message_starts(payload: bytes, pattern: Any) -> list[Any]:
    found: list[Any] = []
    offset = 0
    # Most segments hold one message: past its headers' end there is nothing to match (a
    # match is a Python call compiled, and the most a segment's reading costs).
    while len(found) < MAX_STARTS and offset < len(payload):
        match = pattern.match(payload, offset)
        if match is None:
            break
        found.append(match)
        end = payload.find(_HEADER_END, match.end() - 2)
        if end < 0:
            break
        offset = end + 4
    return found


def http_requests(payload: bytes) -> list[tuple[str, str, str | None]]:
    """(method, target, host) for each request line starting in this segment."""
    if not payload or payload[0] < 0x41 or payload[0] > 0x5A:
        return []
    requests: list[tuple[str, str, str | None]] = []
    for match in _message_starts(payload, _REQUEST_LINE):
        line_end: int = match.end()
        host = _HOST.search(payload, line_end - 2, line_end + 8192)
        method: bytes = match.group(1)
        target: bytes = match.group(2)
        host_text: str | None = None
        if host is not None:
            value: bytes = host.group(1)
            host_text = value.decode("latin-1").strip()
        requests.append((method.decode(), target.decode("latin-1"), host_text))
    return requests


def http_responses(payload: bytes) -> list[tuple[int, str]]:
    """(status, reason) for each status line starting in this segment."""
    if not payload.startswith(b"HTTP/1."):
        return []
    responses: list[tuple[int, str]] = []
    for match in _message_starts(payload, _STATUS_LINE):
        status: bytes = match.group(2)
        reason: bytes | None = match.group(3)
        responses.append((int(status), (reason or b"").decode("latin-1").strip()))
    return responses


def upgrade_to_h2c(payload: bytes) -> int | None:
    """Offset where HTTP/2 frames begin in a '101 Switching Protocols' to h2c, else None."""
    if not payload.startswith(b"HTTP/1.1 101") or b"h2c" not in payload[:2048].lower():
        return None
    end = payload.find(_HEADER_END)
    return None if end < 0 else end + 4
