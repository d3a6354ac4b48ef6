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

MAX_HELD = 256 * 1024  # bytes held per direction while a lost segment is awaited
MAX_HELD_IN_ALL = 32 * 1024 * 1024  # and in all connections together


class Waiting:
    """One direction's segments held after a hole, until the hole is filled."""

    __slots__ = ("fed", "held", "segments")

    def __init__(self, fed: int) -> None:
        self.fed = fed  # the stream readers have every byte before this (relative) offset
        self.held = 0
        self.segments: dict[int, tuple] = {}  # relative offset → (payload, its record)

    def hold(self, rel: int, payload: bytes, record) -> None:
        kept = self.segments.get(rel)
        if kept is None or len(payload) > len(kept[0]):
            self.held += len(payload) - (len(kept[0]) if kept else 0)
            self.segments[rel] = (payload, record)

    def take(self) -> bytes:
        """The bytes that are now in order from `fed` on (b"" while the hole is open)."""
        parts = []
        segments = self.segments
        while True:
            start = next(
                (r for r, (data, _) in segments.items() if r <= self.fed < r + len(data)), None
            )
            if start is None:
                break
            data = segments.pop(start)[0]
            self.held -= len(data)
            parts.append(data[self.fed - start :])
            self.fed = start + len(data)
            for stale in [r for r, (d, _) in segments.items() if r + len(d) <= self.fed]:
                self.held -= len(segments.pop(stale)[0])
        return b"".join(parts)


class Reassembly:
    """The hole handling of tcp.TcpTracker, which it is mixed into: the tracker keeps
    `waiters` ((connection id, direction) → connection, for each direction with a hole open)
    and `held` (bytes held in all connections), and feeds the readers with `_payload`."""

    @staticmethod
    def _needs_order(conn, direction) -> bool:
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
        before = waiting.held
        waiting.hold(rel, payload, record)
        self.held += waiting.held - before
        if waiting.held > MAX_HELD:
            self.release(conn, direction)  # the hole is not filling
            return None, None
        before = waiting.held
        assembled = waiting.take()
        self.held += waiting.held - before
        if not waiting.segments:
            conn.waiting[direction] = None
            del self.waiters[(conn.id, direction)]
        while self.held > MAX_HELD_IN_ALL:
            # Many holes at once (a capture that dropped packets everywhere): memory stays
            # bounded by giving up the oldest first.
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
            conn.tls_dirs[direction].gap()
        if conn.h2:
            conn.h2[direction].gap()
