"""TCP reassembly around holes: what a direction's readers get when segments go missing.

Theory of operation: a segment beyond the highest byte seen in its direction opens a hole:
something was lost before the capture point (or by the capture). While the direction's reader
needs its bytes in order (HTTP messages, a TLS handshake in the clear, a first payload not yet
seen), what follows the hole is held, up to MAX_HELD bytes (MAX_HELD_IN_ALL in all
connections), and the retransmission that fills it releases everything in order, as the
receiver's TCP would. A hole that never fills (the capture missed those bytes for good, or
ended) is given up: the reader skips it, as after any lost bytes, and reads what was held. The
other side's ACKs tell the two apart at once: a receiver that acknowledges bytes of the hole
got them, so only the capture lost them (TcpTracker.update watches for those ACKs).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import Any

from .records import PacketRecord

MAX_HELD = 256 * 1024  # bytes held per direction while a lost segment is awaited
MAX_HELD_IN_ALL = 32 * 1024 * 1024  # and in all connections together
# Segments, too: each held one keeps its record (a few hundred bytes), so 256 KB of one-byte
# segments would cost far more than 256 KB.
MAX_HELD_SEGMENTS = 4096  # per direction
MAX_HELD_SEGMENTS_IN_ALL = 65_536  # in all connections together


class Waiting:
    """One direction's segments held after a hole, until the hole is filled.

    Segments are kept by offset, and their offsets in a heap: each segment costs O(log n) to
    hold and to take, however the segments arrive (200,000 of them in reverse order used to
    rescan every held segment for each new one)."""

    __slots__ = ("fed", "held", "segments", "starts")

    def __init__(self, fed: int) -> None:
        self.fed = fed  # the stream readers have every byte before this (relative) offset
        self.held = 0
        self.segments: dict[int, tuple] = {}  # relative offset → (payload, its record)
        self.starts: list[int] = []  # a heap of the held offsets

    def hold(self, rel: int, payload: bytes, record) -> None:
        kept = self.segments.get(rel)
        if kept is None or len(payload) > len(kept[0]):
            self.held += len(payload) - (len(kept[0]) if kept else 0)
            self.segments[rel] = (payload, record)
            if kept is None:
                heapq.heappush(self.starts, rel)

    def take(self) -> bytes:
        """The bytes that are now in order from `fed` on (b"" while the hole is open)."""
        parts = []
        segments, starts = self.segments, self.starts
        while starts and starts[0] <= self.fed:
            start = heapq.heappop(starts)
            data = segments.pop(start)[0]
            self.held -= len(data)
            if start + len(data) > self.fed:  # else wholly before `fed`: a stale copy
                parts.append(data[self.fed - start :])
                self.fed = start + len(data)
        return b"".join(parts)


class Reassembly:
    """The hole handling of tcp.TcpTracker, which it is mixed into: the tracker keeps
    `waiters` ((connection id, direction) → connection, for each direction with a hole open),
    `held` and `held_segments` (bytes and segments held in all connections) and `warnings`,
    and feeds the readers with `_payload`."""

    waiters: OrderedDict[tuple[int, int], Any]
    held: int
    held_segments: int
    tls_buffered: int
    warnings: Any

    def _payload(
        self, conn: Any, direction: int, record: PacketRecord, data: bytes, now: float
    ) -> tuple[str, str]:  # conn: a tcp.Connection (tcp imports this module)
        raise NotImplementedError

    def _needs_order(self, conn, direction) -> bool:
        """Whether this direction's reader needs its bytes in order, so that a gap is worth
        waiting out: HTTP/1.x and HTTP/2 messages, a TLS handshake still in the clear, a first
        payload not yet seen (a lost ClientHello or request line)."""
        if conn.app == "tls":
            return not conn.tls_dirs[direction].done
        if conn.app in ("http/1.1", "h2"):
            return True
        return conn.app is None and conn.sniff_left[direction] > 0

    def _reassemble(self, conn, direction, record, rel, now):
        """Reorder a direction around a hole the capture shows (a segment lost before the
        capture point): hold what comes after the hole until the retransmission fills it,
        then feed the stream readers everything in order, as the receiver's TCP does."""
        waiting = conn.waiting[direction]
        payload = record.payload
        if rel + len(payload) <= waiting.fed:
            return None, None  # bytes the readers already have: a plain retransmission
        segments = waiting.segments
        before, count = waiting.held, len(segments)
        waiting.hold(rel, payload, record)
        self.held += waiting.held - before
        self.held_segments += len(segments) - count
        if waiting.held > MAX_HELD or len(segments) > MAX_HELD_SEGMENTS:
            self.warnings.add(
                f"a hole in a TCP stream was not filled within {MAX_HELD // 1024} KB or "
                f"{MAX_HELD_SEGMENTS} segments after it: the stream is read past it"
            )
            self.release(conn, direction)  # the hole is not filling
            return None, None
        before, count = waiting.held, len(segments)
        assembled = waiting.take()
        self.held += waiting.held - before
        self.held_segments += len(segments) - count
        if not segments:
            conn.waiting[direction] = None
            del self.waiters[(conn.id, direction)]
        while self.held > MAX_HELD_IN_ALL or self.held_segments > MAX_HELD_SEGMENTS_IN_ALL:
            # Many holes at once (a capture that dropped packets everywhere): memory stays
            # bounded by giving up the oldest first.
            self.warnings.add(
                f"more than {MAX_HELD_IN_ALL // (1 << 20)} MB or {MAX_HELD_SEGMENTS_IN_ALL} "
                "segments held behind holes in TCP streams at once: the oldest holes are "
                "read past"
            )
            key = next(iter(self.waiters))
            self.release(self.waiters[key], key[1])
        if assembled:
            return self._payload(conn, direction, record, assembled, now)
        if conn.app == "tls":
            return "TLS (out of order)", "tls"
        return f"data {record.payload_len} B (out of order)", ("request", "response")[direction]

    def _wait(self, conn, direction) -> None:
        if conn.waiting is None:
            conn.waiting = [None, None]
        conn.waiting[direction] = Waiting(conn.max_end[direction])
        self.waiters[(conn.id, direction)] = conn

    def release(self, conn, direction) -> None:
        """Stop waiting for a hole that will not fill (the capture missed those bytes for
        good, or it ended): the readers lose the hole's bytes, as after any gap, and read
        what was held after it, in order."""
        waiting = conn.waiting[direction]
        conn.waiting[direction] = None
        del self.waiters[(conn.id, direction)]
        self.held -= waiting.held
        self.held_segments -= len(waiting.segments)
        self._gap(conn, direction)
        for _rel, (payload, record) in sorted(waiting.segments.items()):
            self._payload(conn, direction, record, payload, record.time)

    def finish(self) -> None:
        """The capture ended: read what is still held behind holes."""
        for (_id, direction), conn in list(self.waiters.items()):
            self.release(conn, direction)

    def _gap(self, conn, direction):
        conn.lost[direction] = True
        if conn.tls_dirs:
            reader = conn.tls_dirs[direction]
            self.tls_buffered -= len(reader.buffer) + len(reader.handshake)
            reader.gap()
        if conn.h2:
            conn.h2[direction].gap()
