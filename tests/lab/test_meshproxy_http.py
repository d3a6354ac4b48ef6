"""The sidecar's HTTP/1.1 framing: it must find each message's end to reuse a connection."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "meshproxy", Path(__file__).resolve().parents[2] / "deploy" / "lab" / "meshproxy.py")
meshproxy = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(meshproxy)


class Sink:
    """The writer half of a stream, collecting what is written."""

    def __init__(self):
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def stream(data: bytes, eof: bool = False) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def exchange(request: bytes, response: bytes, response_eof: bool = False):
    async def go():
        downstream = stream(request)
        head = await meshproxy.read_head(downstream)
        upstream = meshproxy.Upstream("10.0.0.1:15006", stream(response, response_eof), Sink(), 1)
        client = Sink()
        reusable = await meshproxy.exchange(head, downstream, client, upstream)
        return reusable, client.data, upstream.writer.data, upstream.reader

    return asyncio.run(go())


def test_it_reuses_a_connection_after_a_content_length_body():
    reusable, to_client, _, rest = exchange(
        b"GET / HTTP/1.1\r\nHost: nginx\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 204 No Content\r\n\r\n")
    assert reusable
    assert to_client.endswith(b"\r\n\r\nhello")
    assert rest._buffer.startswith(b"HTTP/1.1 204"), "the next response stays unread"


def test_it_reads_no_body_after_head_even_with_a_content_length():
    reusable, to_client, _, rest = exchange(
        b"HEAD / HTTP/1.1\r\nHost: nginx\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert reusable
    assert to_client.endswith(b"Content-Length: 19\r\n\r\n")
    assert bytes(rest._buffer) == b"HTTP/1.1 200 OK\r\n"


def test_it_relays_a_chunked_body_to_its_last_chunk():
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    reusable, to_client, _, rest = exchange(
        b"GET / HTTP/1.1\r\nHost: nginx\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"NEXT")
    assert reusable
    assert to_client.endswith(body)
    assert bytes(rest._buffer) == b"NEXT"


def test_it_gives_up_a_connection_whose_body_ends_at_close():
    reusable, to_client, _, _ = exchange(
        b"GET / HTTP/1.1\r\nHost: nginx\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nuntil close", response_eof=True)
    assert not reusable
    assert to_client.endswith(b"until close")


def test_it_keeps_the_upstream_alive_when_the_client_asks_to_close():
    reusable, to_client, to_upstream, _ = exchange(
        b"POST /x HTTP/1.1\r\nHost: nginx\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert reusable
    assert b"connection" not in to_upstream.lower()
    assert to_upstream.endswith(b"\r\n\r\nabc")
    assert b"Connection: close" in to_client


@pytest.mark.parametrize(("status", "method", "has_body"), [
    ("200", "GET", True), ("204", "GET", False), ("304", "GET", False), ("200", "HEAD", False)])
def test_it_knows_which_responses_carry_a_body(status, method, has_body):
    request = meshproxy.Head(f"{method} / HTTP/1.1".encode())
    response = meshproxy.Head(f"HTTP/1.1 {status} X".encode())
    assert meshproxy.response_has_body(request, response) is has_body
