"""Viewers on real WebSockets (daphne over TCP, as a browser connects), read in threads: for
tests that must see a socket break, or many viewers at once."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import websocket
from django.conf import settings


def session_cookie(client) -> str:
    """The Cookie header of a Django test client's session (cookies ignore the port)."""
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


class Viewer(threading.Thread):
    """One WebSocket connection to daphne, read in a thread: its events, and how it ended."""

    def __init__(self, url: str, cookie: str, origin: str, resume_after: int):
        super().__init__(daemon=True)
        self.socket = websocket.create_connection(url, timeout=10, cookie=cookie,
                                                  origin=origin)
        hello = json.loads(self.socket.recv())
        assert hello["kind"] == "hello", hello
        self.socket.send(json.dumps({"resume_after": resume_after}))
        self.events: list[dict] = []
        self.closed: tuple | None = None  # (code, when) once the server closed it
        self.socket.settimeout(60)

    def run(self) -> None:
        while True:
            try:
                opcode, data = self.socket.recv_data(control_frame=True)
            except (websocket.WebSocketException, OSError) as exc:
                self.closed = ("error", str(exc), time.monotonic())
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                self.closed = (code, data[2:].decode(errors="replace"), time.monotonic())
                return
            if opcode == websocket.ABNF.OPCODE_TEXT:
                self.events.append(json.loads(data))

    def last_seq(self, default: int = 0) -> int:
        return self.events[-1]["seq"] if self.events else default

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already gone
            self.socket.close()
        self.join(5)


def try_viewer(url: str, cookie: str, origin: str, resume_after: int) -> Viewer | None:
    """A connected viewer, or None while the server does not answer (to retry)."""
    try:
        return Viewer(url, cookie, origin, resume_after)
    except (websocket.WebSocketException, OSError, AssertionError):
        return None


def is_final(event: dict) -> bool:
    return event["kind"] == "status" and event["status"] in ("completed", "failed",
                                                              "interrupted")
