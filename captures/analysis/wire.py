"""Logical messages as plain values and back: how readahead.py sends them down its pipe.

A message crosses as (MESSAGE, record values, first hop's interface label, further hops):
the record's fields in their declared order, its tunnel and DNS answers as tuples; of its
hops, the first as its interface label only (CopyFolder.push makes it of the record), each
further one as a tuple. marshal carries these several times faster than pickle would carry the
objects. This module is compiled with the per-packet path (build.MODULES): rebuilding a
message was a fifth of the analysing process' time when interpreted.
"""

from __future__ import annotations

import struct
from typing import Final

from .hops import Hop, LogicalMessage
from .records import DnsInfo, PacketRecord, Tunnel

MESSAGE, WARNING, PARTIAL = 0, 1, 2
# A record's numbers, packed into one bytes object: marshal writes and reads one object
# rather than thirteen (None, for an IP ID or a window, is -1).
_NUMBERS: Final = struct.Struct("<qqdqqqqqqqqqq")
# tuple.__new__ rather than Tunnel(...): a NamedTuple's own __new__ is a Python function,
# slower than the rest of the rebuilding.
_new_tuple: Final = tuple.__new__


def encode(message: LogicalMessage) -> tuple:
    r = message.record
    underlay = r.underlay
    answers = r.dns
    ip_id = r.ip_id
    window = r.window
    numbers = _NUMBERS.pack(
        r.file_index, r.frame_number, r.time, r.ip_version, -1 if ip_id is None else ip_id,
        r.proto, r.sport, r.dport, r.tcp_flags, r.seq, r.ack, r.payload_len,
        -1 if window is None else window,
    )
    hops = message.hops
    copies: list[tuple] | None = None
    if len(hops) > 1:
        copies = []
        for index in range(1, len(hops)):
            hop = hops[index]
            tunnel = hop.tunnel
            copies.append((hop.interface, hop.direction, hop.src, hop.sport, hop.dst, hop.dport,
                           hop.time, None if tunnel is None else tuple(tunnel), hop.file))
    return (MESSAGE, numbers, r.interface, r.direction, r.src, r.dst, r.payload, r.tunnel,
            None if underlay is None else tuple(underlay),
            None if answers is None else [_dns_values(d) for d in answers],
            hops[0].interface, copies)


def _dns_values(d: DnsInfo) -> tuple:
    return (d.id, d.is_response, d.rcode, d.name, d.qtype, d.answers, d.truncated,
            d.answers_cut)


def decode(item: tuple) -> LogicalMessage:
    file_index: int
    frame_number: int
    time: float
    ip_version: int
    ip_id: int
    proto: int
    sport: int
    dport: int
    tcp_flags: int
    seq: int
    ack: int
    payload_len: int
    window: int
    (file_index, frame_number, time, ip_version, ip_id, proto, sport, dport, tcp_flags, seq,
     ack, payload_len, window) = _NUMBERS.unpack(item[1])
    direction: str | None = item[3]
    src: str = item[4]
    dst: str = item[5]
    underlay = item[8]
    answers = item[9]
    tunnel = None if underlay is None else _new_tuple(Tunnel, underlay)
    record = PacketRecord(
        file_index, frame_number, time, item[2], direction, ip_version, src, dst,
        None if ip_id < 0 else ip_id, proto, sport, dport, tcp_flags, seq, ack, item[6],
        payload_len, item[7], tunnel, None if answers is None else [_dns_info(d) for d in answers],
        None if window < 0 else window,
    )
    # No key: it is the folder's, and the folding happened before the pipe.
    message = LogicalMessage(
        record, (), Hop(item[10], direction, src, sport, dst, dport, time, tunnel, file_index))
    copies = item[11]
    if copies is not None:
        hops = message.hops
        for copy in copies:
            outer = copy[7]
            hops.append(Hop(copy[0], copy[1], copy[2], copy[3], copy[4], copy[5], copy[6],
                            None if outer is None else _new_tuple(Tunnel, outer), copy[8]))
    return message


def _dns_info(d: tuple) -> DnsInfo:
    return DnsInfo(d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7])


def decode_batch(items: list) -> tuple[list, bool]:
    """The batch's items with each message rebuilt (other items as they came), and whether
    all of them were messages."""
    decoded: list = []
    only_messages = True
    for item in items:
        if item[0] == MESSAGE:
            decoded.append(decode(item))
        else:
            decoded.append(item)
            only_messages = False
    return decoded, only_messages
