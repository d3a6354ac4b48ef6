"""daphne, refusing an oversized request body before reading it.

Twisted (under daphne) reads a request's whole body into memory or a temporary file before the
application sees the request, so Django's own limits come too late: a 2 GB anonymous POST was
read in full (and kept in memory) before it was answered 405. Here each request learns its
limit as soon as its headers are in: a body declared larger than that is answered 413 at once
and never read; a body without a declared length (chunked) is cut off at the limit. Uploads
(`POST` to the capture list and the new-capture form) may be as large as an upload may be;
every other request gets a small limit.

Run it exactly as daphne: `python -m kviz.serve -b 127.0.0.1 -p 8000 kviz.asgi:application`.
A reverse proxy in front (deploy/) adds its own limit and absorbs slow clients.
"""

from __future__ import annotations

import json
import os
import sys

UPLOAD_PATHS = (b"/api/captures/", b"/captures/new/")
SMALL_BODY_LIMIT = 1024 * 1024  # JSON bodies: notes, shares, capture requests


def body_limit(method: bytes, path: bytes, upload_limit: int) -> int:
    """The most bytes a request's body may have."""
    if method == b"POST" and path.split(b"?", 1)[0] in UPLOAD_PATHS:
        return upload_limit + SMALL_BODY_LIMIT  # the multipart envelope around the file
    return SMALL_BODY_LIMIT


def _refusal(limit: int) -> bytes:
    body = json.dumps({"error": f"the request body is larger than {limit} bytes"}).encode()
    return (b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)


def bounded_request_class(upload_limit: int):
    from daphne.http_protocol import WebRequest

    class BoundedRequest(WebRequest):
        """A daphne request that knows its body limit before the body arrives."""

        refused = False

        def gotLength(self, length):
            channel = self.channel
            # The request line is parsed into the channel before the headers end.
            method = getattr(channel, "_command", b"")
            path = getattr(channel, "_path", b"")
            self.body_limit = body_limit(method, path, upload_limit)
            self.body_received = 0
            if length is not None and length > self.body_limit:
                self._refuse()
                return
            super().gotLength(length)

        def handleContentChunk(self, data):
            if self.refused:
                return
            self.body_received += len(data)
            if self.body_received > self.body_limit:
                self._refuse()
                return
            super().handleContentChunk(data)

        def requestReceived(self, command, path, version):
            if not self.refused:
                super().requestReceived(command, path, version)

        def _refuse(self) -> None:
            self.refused = True
            # No "100 Continue" for a body we will not read (Twisted sends it after gotLength).
            self.requestHeaders.removeHeader(b"Expect")
            transport = self.channel.transport
            transport.write(_refusal(self.body_limit))
            transport.pauseProducing()  # read no more of it
            transport.loseConnection()

    return BoundedRequest


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kviz.settings")
    import daphne.http_protocol
    from daphne.cli import CommandLineInterface
    from django.conf import settings

    # HTTPFactory.buildProtocol reads this module global for every connection.
    daphne.http_protocol.WebRequest = bounded_request_class(settings.KVIZ_MAX_UPLOAD_BYTES)
    CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
