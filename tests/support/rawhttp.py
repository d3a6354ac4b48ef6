"""Raw HTTP over a socket, for tests that must see what a server does before a body arrives."""

from __future__ import annotations

import socket
import time


def read_head(sock: socket.socket, timeout: float = 10) -> bytes:
    """What the server sent until the end of its response head (or it closed, or `timeout`)."""
    sock.settimeout(timeout)
    answer = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer
