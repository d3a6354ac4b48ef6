"""HTTP/2 frames, read from TCP segments (HTTP/1.x message starts are http1.py's).

Frames are walked through the in-order byte stream; DATA is never buffered (only gRPC's 5-byte
message prefixes are read as it goes by, to count messages), header blocks are held until
complete and decoded with the direction's HPACK table (hpack.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from urllib.parse import unquote

from .hpack import Decoder, HpackError

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


# -- HTTP/2 frames (RFC 9113) and gRPC inside them ---------------------------------------------

H2_DATA, H2_HEADERS, H2_RST_STREAM, H2_SETTINGS, H2_PUSH_PROMISE = 0, 1, 3, 4, 5
H2_PING, H2_GOAWAY, H2_WINDOW_UPDATE, H2_CONTINUATION = 6, 7, 8, 9
H2_PREFACE_EVENT = -1  # not a frame: the client's connection preface ended in this chunk
END_STREAM, ACK_FLAG, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
MAX_HEADER_BLOCK = 64 * 1024  # a header block (HEADERS + CONTINUATIONs) held to decode it
SMALL_PAYLOAD = 256  # bytes kept of any other frame (SETTINGS, PING, GOAWAY, ...)

H2_ERRORS = {
    0: "NO_ERROR",
    1: "PROTOCOL_ERROR",
    2: "INTERNAL_ERROR",
    3: "FLOW_CONTROL_ERROR",
    4: "SETTINGS_TIMEOUT",
    5: "STREAM_CLOSED",
    6: "FRAME_SIZE_ERROR",
    7: "REFUSED_STREAM",
    8: "CANCEL",
    9: "COMPRESSION_ERROR",
    10: "CONNECT_ERROR",
    11: "ENHANCE_YOUR_CALM",
    12: "INADEQUATE_SECURITY",
    13: "HTTP_1_1_REQUIRED",
}
GRPC_STATUS = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


def h2_error_name(code: int) -> str:
    return H2_ERRORS.get(code, f"error 0x{code:x}")


def grpc_status_name(code: str | None) -> str | None:
    """"OK", "UNAVAILABLE"... for a grpc-status value; the value itself when not a known code."""
    if code is None:
        return None
    code = code.strip()
    return GRPC_STATUS.get(int(code), code) if code.isdigit() else code


def is_grpc(content_type: str | None) -> bool:
    """application/grpc, application/grpc+proto, application/grpc-web... (gRPC over HTTP/2)."""
    return bool(content_type) and content_type.lower().startswith("application/grpc")


def grpc_percent_decode(message: str) -> str:
    """grpc-message is percent-encoded UTF-8 (PROTOCOL-HTTP2.md)."""
    return unquote(message, errors="replace")


class H2Frame:
    """One frame read from a direction: `payload` is the whole header block for HEADERS and
    PUSH_PROMISE (CONTINUATIONs joined, padding and priority removed), else the first
    SMALL_PAYLOAD bytes. `headers` is the decoded block; `known` False when some of it is
    unknown (the capture began mid-connection, or the block did not decode)."""

    __slots__ = ("flags", "headers", "known", "length", "payload", "stream", "type")

    def __init__(self, frame_type, flags, stream, length, payload=b"") -> None:
        self.type = frame_type
        self.flags = flags
        self.stream = stream
        self.length = length
        self.payload = payload
        self.headers: list[tuple[str | None, str | None]] | None = None
        self.known = True

    def header(self, name: str) -> str | None:
        for key, value in self.headers or ():
            if key == name:
                return value
        return None


class GrpcMessages:
    """Counts the length-prefixed messages of one side of a gRPC stream as its DATA bytes go
    by (a flag byte and a 4-byte length before each message); only the prefix is held. A
    message counts once its last byte went by, as tshark counts them."""

    __slots__ = ("counts", "key", "left", "prefix", "resync")

    def __init__(self, counts: dict, key: str) -> None:
        self.counts = counts  # the request's "grpc" dict: counts[key] += 1 per message
        self.key = key
        self.prefix = b""
        self.left = 0
        self.resync = False  # bytes were lost: wait for the next DATA frame to start again

    def frame_start(self) -> None:
        if self.resync:
            # Where a message starts is unknown after lost bytes; gRPC implementations start
            # a message at the start of a DATA frame, so resume there (as tshark does).
            self.resync = False
            self.prefix, self.left = b"", 0

    def feed(self, data: bytes) -> None:
        if self.resync:
            return
        offset = 0
        while offset < len(data):
            if self.left:
                step = min(self.left, len(data) - offset)
                self.left -= step
                offset += step
                if not self.left:
                    self.counts[self.key] += 1
                continue
            need = 5 - len(self.prefix)
            self.prefix += data[offset : offset + need]
            offset += need
            if len(self.prefix) == 5:
                self.left = int.from_bytes(self.prefix[1:], "big")
                self.prefix = b""
                if not self.left:
                    self.counts[self.key] += 1

    def gap(self) -> None:
        self.resync = True
        self.counts["gaps"] = True


class H2Direction:
    """Walks HTTP/2 frames through one direction's in-order bytes.

    DATA is never buffered: its bytes only go by the gRPC counter of its stream, if any.
    Header blocks are held until their END_HEADERS (up to MAX_HEADER_BLOCK) and decoded with
    this direction's HPACK table. After lost bytes the walk stops, and starts again at a
    segment that is a run of whole frames (the HPACK table is then unknown)."""

    __slots__ = (
        "block",
        "block_frame",
        "current",
        "decoder",
        "grpc",
        "header",
        "lost",
        "preface_left",
    )

    def __init__(self, expect_preface: bool, midstream: bool = False) -> None:
        self.preface_left = len(H2_PREFACE) if expect_preface else 0
        self.header = b""
        # The frame being read: [frame, bytes left, kept payload (bytearray), limit,
        # DATA bytes left for the gRPC counter (None until a padded DATA's pad length is read)]
        self.current: list | None = None
        self.block: bytearray | None = None  # a header block waiting for its CONTINUATIONs
        self.block_frame: H2Frame | None = None
        self.decoder = Decoder(complete=not midstream)
        self.grpc: dict[int, GrpcMessages] = {}  # stream → the counter of its gRPC messages
        self.lost = False

    def feed(self, data: bytes) -> Iterator[H2Frame]:
        """The frames that end in this chunk, DATA frames when they begin (their bytes are
        not kept), and an H2_PREFACE_EVENT when the client's preface ends here. A generator:
        the caller sees each frame before the bytes after it are read, so a request's HEADERS
        can set up the gRPC counters of the DATA that follows it in the same segment."""
        if self.lost:
            if not plausible_h2_frames(data):
                return
            self._resync()
        ready: list[H2Frame] = []
        offset = 0
        if self.preface_left:
            done = len(H2_PREFACE) - self.preface_left
            take = min(self.preface_left, len(data))
            if data[:take] != H2_PREFACE[done : done + take]:
                self.preface_left = 0  # frames without a preface (an upgrade's server side)
            else:
                offset = take
                self.preface_left -= take
                if not self.preface_left:
                    yield H2Frame(H2_PREFACE_EVENT, 0, 0, len(H2_PREFACE))
        while offset < len(data):
            if ready:
                yield from ready
                ready.clear()
            current = self.current
            if current is not None:
                frame, left, kept, limit, _data_left = current
                step = min(left, len(data) - offset)
                chunk = data[offset : offset + step]
                offset += step
                current[1] = left - step
                if frame.type == H2_DATA:
                    self._data(frame, current, chunk)
                elif len(kept) < limit:
                    kept += chunk[: limit - len(kept)]
                if not current[1]:
                    self.current = None
                    if frame.type != H2_DATA:
                        self._frame_done(frame, bytes(kept), ready)
                continue
            need = 9 - len(self.header)
            self.header += data[offset : offset + need]
            offset += need
            if len(self.header) < 9:
                break
            length = int.from_bytes(self.header[:3], "big")
            frame_type, flags = self.header[3], self.header[4]
            stream = int.from_bytes(self.header[5:9], "big") & 0x7FFFFFFF
            self.header = b""
            if frame_type > 9 and frame_type not in (0xA, 0x10):
                self.gap()  # not HTTP/2 (or lost alignment): stop until a clean segment
                break
            frame = H2Frame(frame_type, flags, stream, length)
            if frame_type == H2_DATA:
                counter = self.grpc.get(stream)
                if counter is not None:
                    counter.frame_start()
                data_left = None if flags & PADDED else length
                self.current = [frame, length, None, 0, data_left] if length else None
                ready.append(frame)
                continue
            limit = MAX_HEADER_BLOCK if frame_type in (1, 5, 9) else SMALL_PAYLOAD
            if length:
                self.current = [frame, length, bytearray(), limit, None]
            else:
                self._frame_done(frame, b"", ready)
        yield from ready

    def _data(self, frame, current, chunk) -> None:
        counter = self.grpc.get(frame.stream)
        if counter is None or not chunk:
            return
        if current[4] is None:  # PADDED: the first byte is the pad length
            current[4] = max(frame.length - 1 - chunk[0], 0)
            chunk = chunk[1:]
        take = min(current[4], len(chunk))
        current[4] -= take
        counter.feed(chunk[:take])

    def _frame_done(self, frame: H2Frame, payload: bytes, frames: list) -> None:
        if frame.type in (H2_HEADERS, H2_PUSH_PROMISE):
            cut = frame.length > MAX_HEADER_BLOCK or len(payload) < frame.length
            payload = None if cut else _header_fragment(frame, payload)  # not all held
            if frame.flags & END_HEADERS:
                self._decode(frame, payload)
                frames.append(frame)
            else:
                self.block_frame = frame
                self.block = None if payload is None else bytearray(payload)
            return
        if frame.type == H2_CONTINUATION and self.block_frame is not None:
            if self.block is not None and frame.length <= MAX_HEADER_BLOCK - len(self.block):
                self.block += payload
            else:
                self.block = None
            if frame.flags & END_HEADERS:
                first, block = self.block_frame, self.block
                self.block_frame = self.block = None
                self._decode(first, None if block is None else bytes(block))
                frames.append(first)
            return
        frame.payload = payload
        frames.append(frame)

    def _decode(self, frame: H2Frame, block: bytes | None) -> None:
        if block is None:
            # Not held, so not read: the table may have changed in ways not seen.
            self.decoder = Decoder(complete=False)
            frame.headers, frame.known = [], False
            return
        frame.payload = block
        try:
            frame.headers, frame.known = self.decoder.decode(block)
        except HpackError:
            frame.headers, frame.known = [], False

    def _resync(self) -> None:
        self.lost = False
        self.header = b""
        self.current = None
        self.block = self.block_frame = None
        self.preface_left = 0
        if self.decoder.entries or self.decoder.complete:
            self.decoder = Decoder(complete=False)

    def held(self) -> int:
        """Bytes of header blocks held until their end (the tracker bounds them in all)."""
        current = self.current
        kept = len(current[2]) if current is not None and current[2] is not None else 0
        return kept + len(self.block or b"")

    def drop_blocks(self) -> None:
        """Stop holding the header block being read: it will not be decoded, and the HPACK
        table is unknown after it."""
        if self.current is not None and self.current[2] is not None:
            self.current[2] = bytearray()
            self.current[3] = 0
        if self.block_frame is not None:
            self.block = None

    def gap(self) -> None:
        self.lost = True
        for counter in self.grpc.values():
            counter.gap()


def _header_fragment(frame: H2Frame, payload: bytes) -> bytes:
    """The header block fragment of a HEADERS or PUSH_PROMISE frame: without its padding,
    priority fields or promised stream id."""
    start, end = 0, len(payload)
    if frame.flags & PADDED and payload:
        start = 1
        end = max(len(payload) - payload[0], start)
    if frame.type == H2_HEADERS and frame.flags & PRIORITY_FLAG:
        start += 5
    if frame.type == H2_PUSH_PROMISE:
        start += 4
    return payload[start:end]
