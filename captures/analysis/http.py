"""HTTP/1.x message starts and HTTP/2 frames, read from TCP segments.

HTTP/1.x: a request or status line is recognised at the start of a segment or right after the
end of a previous header block in the same segment (pipelining). HTTP/2: frames are walked
through the in-order byte stream with a skip counter, so DATA is never buffered.
"""

from __future__ import annotations

import re
import struct

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_FRAME_NAMES = {
    0: "DATA",
    1: "HEADERS",
    2: "PRIORITY",
    3: "RST_STREAM",
    4: "SETTINGS",
    5: "PUSH_PROMISE",
    6: "PING",
    7: "GOAWAY",
    8: "WINDOW_UPDATE",
    9: "CONTINUATION",
}
_REQUEST_LINE = re.compile(
    rb"(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH|CONNECT|TRACE|PROPFIND|MKCOL|COPY|MOVE|LOCK|"
    rb"UNLOCK|PROPPATCH|SEARCH|REPORT) (\S{1,8000}) HTTP/(1\.[01])\r?\n"
)
_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) (\d{3})(?: ([^\r\n]{0,200}))?\r?\n")
_HOST = re.compile(rb"\r\nhost:[ \t]*([^\r\n]{1,255})", re.IGNORECASE)
_HEADER_END = b"\r\n\r\n"


def _message_starts(payload: bytes, pattern: re.Pattern) -> list[re.Match]:
    found = []
    offset = 0
    while len(found) < 64:
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
    requests = []
    for match in _message_starts(payload, _REQUEST_LINE):
        host = _HOST.search(payload, match.end() - 2, match.end() + 8192)
        requests.append(
            (
                match.group(1).decode(),
                match.group(2).decode("latin-1"),
                host.group(1).decode("latin-1").strip() if host else None,
            )
        )
    return requests


def http_responses(payload: bytes) -> list[tuple[int, str]]:
    """(status, reason) for each status line starting in this segment."""
    if not payload.startswith(b"HTTP/1."):
        return []
    return [
        (int(m.group(2)), (m.group(3) or b"").decode("latin-1").strip())
        for m in _message_starts(payload, _STATUS_LINE)
    ]


def upgrade_to_h2c(payload: bytes) -> int | None:
    """Offset where HTTP/2 frames begin in a '101 Switching Protocols' to h2c, else None."""
    if not payload.startswith(b"HTTP/1.1 101") or b"h2c" not in payload[:2048].lower():
        return None
    end = payload.find(_HEADER_END)
    return None if end < 0 else end + 4


def plausible_h2_frames(payload: bytes) -> bool:
    """True when the segment is exactly a run of well-formed HTTP/2 frames (a mid-stream start)."""
    offset, frames = 0, 0
    while offset + 9 <= len(payload):
        length = int.from_bytes(payload[offset : offset + 3], "big")
        frame_type = payload[offset + 3]
        stream = struct.unpack_from("!I", payload, offset + 5)[0]
        if frame_type > 9 or stream & 0x80000000 or length > 1 << 20:
            return False
        if frame_type in (1, 0, 3, 5, 9) and stream == 0:
            return False
        if frame_type in (4, 6, 7) and stream != 0:
            return False
        offset += 9 + length
        frames += 1
    return frames > 0 and offset == len(payload)


# HPACK's static table (RFC 7541, Appendix A): the pseudo-headers that carry a value there.
HPACK_STATIC = {
    2: (":method", "GET"),
    3: (":method", "POST"),
    4: (":path", "/"),
    5: (":path", "/index.html"),
    8: (":status", "200"),
    9: (":status", "204"),
    10: (":status", "206"),
    11: (":status", "304"),
    12: (":status", "400"),
    13: (":status", "404"),
    14: (":status", "500"),
}
HPACK_NAMES = {
    1: ":authority",
    2: ":method",
    3: ":method",
    4: ":path",
    5: ":path",
    8: ":status",
    9: ":status",
    10: ":status",
    11: ":status",
    12: ":status",
    13: ":status",
    14: ":status",
}
PSEUDO_HEADERS_READ = 8  # a header block starts with its pseudo-headers


def _hpack_int(block: bytes, offset: int, prefix_bits: int) -> tuple[int, int]:
    mask = (1 << prefix_bits) - 1
    value = block[offset] & mask
    offset += 1
    if value < mask:
        return value, offset
    shift = 0
    while offset < len(block) and shift < 28:
        byte = block[offset]
        offset += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset
    raise IndexError("cut-off HPACK integer")


def h2_pseudo_headers(block: bytes, flags: int) -> dict[str, str]:
    """The pseudo-headers readable without the connection's HPACK state: those indexed in the
    static table, and literal values not Huffman-coded. A capture that starts mid-connection
    lacks the dynamic table, and Huffman-coded values need a decoder; both are left out."""
    found: dict[str, str] = {}
    offset = 0
    try:
        if flags & 0x08:  # PADDED: pad length first
            offset += 1
        if flags & 0x20:  # PRIORITY: stream dependency and weight
            offset += 5
        for _ in range(PSEUDO_HEADERS_READ):
            if offset >= len(block):
                break
            first = block[offset]
            if first & 0x80:  # indexed header field
                index, offset = _hpack_int(block, offset, 7)
                if index in HPACK_STATIC:
                    name, value = HPACK_STATIC[index]
                    found.setdefault(name, value)
                continue
            if first & 0xE0 == 0x20:  # dynamic table size update
                _size, offset = _hpack_int(block, offset, 5)
                continue
            prefix = 6 if first & 0x40 else 4  # literal (incremental indexing, or not)
            index, offset = _hpack_int(block, offset, prefix)
            if index == 0:  # a literal name: not a pseudo-header we know by index
                huffman = block[offset] & 0x80
                length, offset = _hpack_int(block, offset, 7)
                name = None if huffman else block[offset : offset + length].decode("latin-1")
                offset += length
            else:
                name = HPACK_NAMES.get(index)
            huffman = block[offset] & 0x80
            length, offset = _hpack_int(block, offset, 7)
            value = block[offset : offset + length]
            offset += length
            if name and name.startswith(":") and not huffman and len(value) == length:
                found.setdefault(name, value.decode("latin-1"))
            if name and not name.startswith(":"):
                break  # regular headers follow the pseudo-headers
    except IndexError:
        pass
    return found


class H2Direction:
    """Walks HTTP/2 frames through one direction's in-order bytes."""

    __slots__ = ("header", "lost", "preface_left", "skip")

    def __init__(self, expect_preface: bool) -> None:
        self.preface_left = len(H2_PREFACE) if expect_preface else 0
        self.header = b""
        self.skip = 0
        self.lost = False

    def feed(self, data: bytes) -> list[tuple[int, int, int, bytes]]:
        """Returns (type, flags, stream id, the start of its payload found in this chunk) of
        each frame whose header is in this chunk."""
        if self.lost:
            return []
        frames = []
        offset = 0
        if self.preface_left:
            take = min(self.preface_left, len(data))
            offset = take
            self.preface_left -= take
        while offset < len(data):
            if self.skip:
                step = min(self.skip, len(data) - offset)
                self.skip -= step
                offset += step
                continue
            need = 9 - len(self.header)
            self.header += data[offset : offset + need]
            offset += need
            if len(self.header) < 9:
                break
            length = int.from_bytes(self.header[:3], "big")
            frame_type, flags = self.header[3], self.header[4]
            stream = struct.unpack_from("!I", self.header, 5)[0] & 0x7FFFFFFF
            self.header = b""
            if frame_type > 9 and frame_type != 0xA and frame_type != 0x10:
                self.lost = True
                break
            frames.append((frame_type, flags, stream, data[offset : offset + min(length, 256)]))
            self.skip = length
        return frames

    def gap(self) -> None:
        self.lost = True
