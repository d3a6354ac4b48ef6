"""A WebSocket client for tests: the real ASGI app, the real Redis channel layer."""

from __future__ import annotations

import asyncio

from channels.testing import WebsocketCommunicator
from django.conf import settings

# What a browser on kviz's own page sends with a handshake (captures/web/origins.py).
SAME_ORIGIN = [(b"host", b"localhost"), (b"origin", b"http://localhost")]


def session_headers(client) -> list[tuple[bytes, bytes]]:
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    return [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()), *SAME_ORIGIN]


async def connect(path: str, headers) -> WebsocketCommunicator:
    from kviz.asgi import application

    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=10)
    assert connected, f"{path} refused the connection"
    hello = await communicator.receive_json_from(timeout=10)
    assert hello["kind"] == "hello"
    return communicator


async def events_until(communicator, done, timeout: float) -> list[dict]:
    """Events received until done(event) is true for one of them (it is included)."""
    events = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"no final event within {timeout}s; got {summary(events)}")
        event = await communicator.receive_json_from(timeout=remaining)
        events.append(event)
        if done(event):
            return events


def summary(events) -> str:
    return ", ".join(f"{e['seq']}:{e['kind']}:{e.get('status', len(e.get('rows', [])))}"
                     for e in events[-20:])


def is_final(event) -> bool:
    return event["kind"] == "status" and event["status"] in ("completed", "failed",
                                                              "interrupted")


def assert_no_gaps(events, start: int = 1) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(start, start + len(seqs))), f"gap or repeat in {seqs}"
