"""Downloads of stored capture files: streamed a chunk at a time from the storage (local or
S3), with HTTP range requests (RFC 9110 §14): one range answers 206 with Content-Range, a range
that starts beyond the end answers 416 with `Content-Range: bytes */<size>`, and what cannot be
parsed (or several ranges at once, or an If-Range that no longer matches) gets the whole file,
as the RFC allows. A resumed download of a big capture fetches only what is missing."""

from __future__ import annotations

import re

from django.http import HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header, http_date, quote_etag

from captures.adapters import storage

RANGE = re.compile(r"^bytes=\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_range(header: str, size: int):
    """(first, last) byte positions, inclusive, for one satisfiable range; "unsatisfiable"; or
    None to send the whole file."""
    match = RANGE.match(header or "")
    if not match or "," in header:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = int(last)
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None  # invalid: ignored (the whole file)
    if start >= size:
        return "unsatisfiable"
    return start, end


def stored_file(request, name: str, filename: str,
                content_type: str = "application/vnd.tcpdump.pcap"):
    """The stored file `name` as an attachment, honouring Range; None when it is not stored."""
    facts = storage.stat(name)
    if facts is None:
        return None
    size, modified = facts
    etag = quote_etag(f"{size:x}-{int(modified * 1000):x}")
    wanted = parse_range(request.headers.get("Range", ""), size) if request else None
    if_range = request.headers.get("If-Range") if request else None
    if if_range and if_range.strip() not in (etag, http_date(int(modified))):
        wanted = None  # the file changed since the client's first part: all of it again
    if wanted == "unsatisfiable":
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        response["Accept-Ranges"] = "bytes"
        return response
    if wanted is None:
        response = StreamingHttpResponse(storage.chunks(name), content_type=content_type)
        length = size
    else:
        first, last = wanted
        response = StreamingHttpResponse(storage.chunks(name, first, last),
                                         content_type=content_type, status=206)
        response["Content-Range"] = f"bytes {first}-{last}/{size}"
        length = last - first + 1
    response["Content-Length"] = str(length)
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = etag
    response["Last-Modified"] = http_date(int(modified))
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response
