"""Folding copies of one packet seen at several vantage points into one logical message.

A node capture with `-i any` sees a pod's packet on its veth, on the bridge and on the uplink;
several captures taken together see it once in each. All copies share what no hop rewrites:
the IP ID, TCP flags, sequence and acknowledgement numbers, and the payload. NAT may rewrite
addresses and ports between copies, so those stay out of the key and become the hop list.

A packet that legitimately repeats (a retransmission, a keep-alive, a duplicate ACK) has the
same key too (IPv4 senders give it a new IP ID, but IPv6 has none and Linux SYN-ACKs carry
ID 0), and it repeats at a vantage point that already saw the original. So a copy joins
the newest pending message with its key only if that message has not yet been seen at the
copy's vantage point, and only within a short time window; otherwise it starts a new message.
Messages leave the folder in first-seen order once the window has passed them.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterator

from .records import PacketRecord

DEFAULT_WINDOW = 0.5  # seconds; copies on one host are microseconds apart
SAME_PACKET_SECONDS = 0.001


class LogicalMessage:
    __slots__ = ("hops", "key", "record", "vantages")

    def __init__(self, record: PacketRecord, key: tuple, vantage: tuple, hop: tuple) -> None:
        self.record = record  # the first copy
        self.key = key
        self.vantages = {vantage}
        # hop: (interface label, direction, src ip, sport, dst ip, dport, time)
        self.hops = [hop]


def copy_key(record: PacketRecord) -> tuple:
    if record.proto == 6:
        return (
            6,
            record.ip_id,
            record.seq,
            record.ack,
            record.tcp_flags,
            record.payload_len,
            zlib.crc32(record.payload),
        )
    return (record.proto, record.ip_id, record.payload_len, zlib.crc32(record.payload))


class CopyFolder:
    def __init__(self, window: float = DEFAULT_WINDOW) -> None:
        self.window = window
        self.pending: deque[LogicalMessage] = deque()
        self.newest: dict[tuple, LogicalMessage] = {}

    def push(self, record: PacketRecord, interface: str) -> Iterator[LogicalMessage]:
        """Add one decoded packet; yields the messages whose window has closed."""
        now = record.time
        pending = self.pending
        while pending and now - pending[0].record.time > self.window:
            yield self._release()
        key = copy_key(record)
        vantage = (record.file_index, interface, record.direction)
        hop = (interface, record.direction, record.src, record.sport, record.dst, record.dport, now)
        message = self.newest.get(key)
        if message is not None:
            if vantage not in message.vantages:
                message.vantages.add(vantage)
                message.hops.append(hop)
                return
            # The same nonzero IPv4 ID at the same vantage point within a millisecond is one
            # packet recorded twice (an NFLOG rule in two chains, an interface captured
            # twice): no sender retransmits that fast, and senders give a retransmission a
            # new ID. Zero IDs (Linux SYN-ACKs) and IPv6 prove nothing.
            if record.ip_id and now - message.hops[-1][6] <= SAME_PACKET_SECONDS:
                return
        message = LogicalMessage(record, key, vantage, hop)
        self.newest[key] = message
        pending.append(message)

    def flush(self) -> Iterator[LogicalMessage]:
        while self.pending:
            yield self._release()

    def _release(self) -> LogicalMessage:
        message = self.pending.popleft()
        if self.newest.get(message.key) is message:
            del self.newest[message.key]
        return message


def rewrites(hops: list[tuple]) -> list[tuple[tuple, tuple, bool, bool]]:
    """Each change of addresses between consecutive hops: (before hop, after hop, src changed,
    dst changed)."""
    changes = []
    previous = hops[0]
    for hop in hops[1:]:
        src_changed = hop[2] != previous[2] or hop[3] != previous[3]
        dst_changed = hop[4] != previous[4] or hop[5] != previous[5]
        if src_changed or dst_changed:
            changes.append((previous, hop, src_changed, dst_changed))
        previous = hop
    return changes
