"""Folding copies of one packet seen at several vantage points into one logical message.

A node capture with `-i any` sees a pod's packet on its veth, on the bridge and on the uplink;
several captures taken together see it once in each. All copies share what no hop rewrites:
the IP ID, TCP flags, sequence and acknowledgement numbers, and the payload. NAT may rewrite
addresses and ports between copies, so those stay out of the key and become the hop list;
but it never changes a source port and leaves its address, so such a copy is another packet.

A packet that legitimately repeats (a retransmission, a keep-alive, a duplicate ACK) has the
same key too (IPv4 senders give it a new IP ID, but IPv6 has none and Linux SYN-ACKs carry
ID 0), and it repeats at a vantage point that already saw the original. So a copy joins
the newest pending message with its key only if that message has not yet been seen at the
copy's vantage point, and only within a short time window; otherwise it starts a new message.
Messages leave the folder in first-seen order once the window has passed them.
"""

from __future__ import annotations

from collections import deque
from typing import Final
from zlib import crc32 as _zlib_crc32

from .records import PacketRecord, Tunnel

DEFAULT_WINDOW = 0.5  # seconds; copies on one host are microseconds apart
SAME_PACKET_SECONDS: Final = 0.001
# What the window may hold: a flood (or a burst of 64 KB loopback segments) puts more than
# this in half a second, and the oldest then leave early (a later copy of one of them becomes
# a message of its own). About 50 MB at most.
MAX_PENDING = 30_000  # messages
MAX_PENDING_BYTES = 32 * 1024 * 1024  # of payload
MAX_HOPS = 64  # copies folded into one message; a further copy starts a message of its own


class Hop:
    """One copy of a message: where it was seen, and its addresses there. A class of its
    own rather than a NamedTuple: every packet makes one, and compiled, a NamedTuple was
    made by a Python call and each of its fields read through Python's attribute lookup."""

    __slots__ = ("direction", "dport", "dst", "file", "interface", "sport", "src", "time",
                 "tunnel")

    def __init__(
        self, interface: str | None, direction: str | None, src: str, sport: int, dst: str,
        dport: int, time: float, tunnel: Tunnel | None, file: int,
    ) -> None:
        # The vantage point: the interface label (with the file's vantage when there are
        # several files) and the direction, "in" or "out", when the file knows it.
        self.interface = interface
        self.direction = direction
        self.src = src
        self.sport = sport
        self.dst = dst
        self.dport = dport
        self.time = time
        self.tunnel = tunnel  # seen encapsulated there: the tunnel's outer header
        self.file = file  # the capture file it was seen in: its clock, its place on the path

    @property
    def source(self) -> tuple[str, int]:
        return (self.src, self.sport)

    @property
    def destination(self) -> tuple[str, int]:
        return (self.dst, self.dport)


class LogicalMessage:
    __slots__ = ("hops", "key", "record", "t_text")

    def __init__(self, record: PacketRecord, key: tuple, hop: Hop) -> None:
        self.record = record  # the first copy
        self.key = key
        self.hops = [hop]
        # Its time since the capture's start as the model writes it, when the reading process
        # wrote it (wire.py); else the analysis does.
        self.t_text: str | None = None


# Final: compiled, a module global is a dictionary lookup at each use (the bounds above stay
# plain globals: the tests change them).
_crc32: Final = _zlib_crc32


class CopyFolder:
    """push() packets in time order; released messages collect in `ready` for the caller."""

    def __init__(self, window: float = DEFAULT_WINDOW) -> None:
        self.window = window
        self.pending: deque[LogicalMessage] = deque()
        self.newest: dict[tuple, LogicalMessage] = {}
        self.ready: list[LogicalMessage] = []
        self.deadline = float("inf")  # when the oldest pending message leaves the window
        self.pending_bytes = 0  # payload bytes of the pending messages' records
        # What the bounds did, for the caller to say: messages released before their window
        # passed (MAX_PENDING, MAX_PENDING_BYTES), copies not folded (MAX_HOPS).
        self.released_early = 0
        self.unfolded = 0

    def push(self, record: PacketRecord, interface: str | None) -> None:
        now = record.time
        if now > self.deadline:
            self._release_until(now)
        # What no hop rewrites (see the module docstring).
        key: tuple
        payload = record.payload
        # crc32(b"") is 0: a pure ACK need not call it (compiled, a Python call).
        checksum = _crc32(payload) if payload else 0
        if record.proto == 6:
            key = (
                record.ip_id,
                record.seq,
                record.ack,
                record.tcp_flags,
                record.payload_len,
                checksum,
            )
        else:
            key = (record.proto, record.ip_id, record.payload_len, checksum)
        direction = record.direction
        hop = Hop(interface, direction, record.src, record.sport, record.dst, record.dport, now,
                  record.underlay, record.file_index)
        message = self.newest.get(key)
        if message is not None and _rewrite_impossible(message.hops[0], hop):
            message = None  # two packets alike in all that NAT keeps: a message each
        if message is not None:
            hops = message.hops
            for seen in hops:
                if seen.interface == interface and seen.direction == direction:
                    break
            else:
                if len(hops) < MAX_HOPS:
                    hops.append(hop)
                    return
                self.unfolded += 1
                seen = None  # no room for another hop: a message of its own
            # The same nonzero IPv4 ID at the same vantage point within a millisecond is one
            # packet recorded twice (an NFLOG rule in two chains, an interface captured
            # twice): no sender retransmits that fast, and senders give a retransmission a
            # new ID. Zero IDs (Linux SYN-ACKs) and IPv6 prove nothing. To another
            # destination it is the same packet back after a DNAT (a hairpin: a pod whose
            # Service sent it to itself): a hop of its own. With only the source changed it
            # is two senders whose IDs collided: two messages.
            if seen is not None and record.ip_id and now - hops[-1].time <= SAME_PACKET_SECONDS:
                if (seen.dst, seen.dport) != (record.dst, record.dport):
                    if len(hops) < MAX_HOPS:
                        hops.append(hop)
                        return
                    self.unfolded += 1
                elif (seen.src, seen.sport) == (record.src, record.sport):
                    return
        message = LogicalMessage(record, key, hop)
        self.newest[key] = message
        pending = self.pending
        if not pending:
            self.deadline = now + self.window
        pending.append(message)
        self.pending_bytes = size = self.pending_bytes + len(payload)
        if size > MAX_PENDING_BYTES or len(pending) > MAX_PENDING:
            self._release_early()

    def flush(self) -> list[LogicalMessage]:
        self._release_until(float("inf"))
        return self.ready

    def _release_until(self, now: float) -> None:
        pending, newest, ready, window = self.pending, self.newest, self.ready, self.window
        released = 0
        while pending and now - pending[0].record.time > window:
            message = pending.popleft()
            released += len(message.record.payload)
            if newest.get(message.key) is message:
                del newest[message.key]
            ready.append(message)
        self.pending_bytes -= released
        self.deadline = pending[0].record.time + window if pending else float("inf")

    def _release_early(self) -> None:
        """Past MAX_PENDING or MAX_PENDING_BYTES: the oldest leave before their window has
        passed, until the window holds a tenth less than the bound (so this runs once per
        thousands of packets, not for every one)."""
        pending, newest, ready = self.pending, self.newest, self.ready
        count = MAX_PENDING * 9 // 10
        size = MAX_PENDING_BYTES * 9 // 10
        while pending and (len(pending) > count or self.pending_bytes > size):
            message = pending.popleft()
            self.pending_bytes -= len(message.record.payload)
            if newest.get(message.key) is message:
                del newest[message.key]
            ready.append(message)
            self.released_early += 1
        self.deadline = pending[0].record.time + self.window if pending else float("inf")


def _rewrite_impossible(first: Hop, copy: Hop) -> bool:
    """Whether no NAT makes `copy` of `first`. NAT rewrites an address, and the port with it
    (SNAT, masquerade, a DNAT to a backend); one that leaves the source address as it was
    leaves its port too. So a copy from the same source address with another source port
    is another packet: unconnected UDP senders give every datagram IPv4 ID 0, and two of them
    sending the same query at once look alike in all else (bench/hostile_bench.py)."""
    return first.src == copy.src and first.sport != copy.sport


def rewrites(hops: list[Hop]) -> list[tuple[Hop, Hop, bool, bool]]:
    """Each change of addresses between consecutive hops: (before hop, after hop, src changed,
    dst changed)."""
    changes = []
    previous = hops[0]
    for hop in hops[1:]:
        src_changed = hop.src != previous.src or hop.sport != previous.sport
        dst_changed = hop.dst != previous.dst or hop.dport != previous.dport
        if src_changed or dst_changed:
            changes.append((previous, hop, src_changed, dst_changed))
        previous = hop
    return changes
