"""Logical messages as plain values and back: how readahead.py sends them down its pipe.

A message crosses as (MESSAGE, record values, first hop's interface label, further hops):
the record's fields in their declared order, its tunnel and DNS answers as tuples; of its
hops, the first as its interface label only (CopyFolder.push makes it of the record), each
further one as a tuple. marshal carries these several times faster than pickle would carry the
objects. This module is compiled with the per-packet path (build.MODULES): rebuilding a
message was a fifth of the analysing process' time when interpreted.
"""

from __future__ import annotations

from .hops import Hop, LogicalMessage
from .records import DnsInfo, PacketRecord, Tunnel

MESSAGE, WARNING, PARTIAL = 0, 1, 2
# tuple.__new__ rather than Hop(...) or Tunnel(...): a NamedTuple's own __new__ is a Python
# function, slower than the rest of the rebuilding (as in hops.py).
_new_tuple = tuple.__new__


def encode(message: LogicalMessage) -> tuple:
    r = message.record
    underlay = r.underlay
    answers = r.dns
    values = (
        r.file_index, r.frame_number, r.time, r.interface, r.direction, r.ip_version, r.src,
        r.dst, r.ip_id, r.proto, r.sport, r.dport, r.tcp_flags, r.seq, r.ack, r.payload,
        r.payload_len, r.tunnel, None if underlay is None else tuple(underlay),
        None if answers is None else [_dns_values(d) for d in answers], r.window,
    )
    hops = message.hops
    copies: list[tuple] = []
    for index in range(1, len(hops)):
        hop = hops[index]
        tunnel = hop.tunnel
        copies.append((hop.interface, hop.direction, hop.src, hop.sport, hop.dst, hop.dport,
                       hop.time, None if tunnel is None else tuple(tunnel), hop.file))
    return (MESSAGE, values, hops[0].interface, copies)


def _dns_values(d: DnsInfo) -> tuple:
    return (d.id, d.is_response, d.rcode, d.name, d.qtype, d.answers, d.truncated,
            d.answers_cut)


def decode(values: tuple, label: str | None, copies: list) -> LogicalMessage:
    underlay = values[18]
    answers = values[19]
    tunnel = None if underlay is None else _new_tuple(Tunnel, underlay)
    file_index: int = values[0]
    time: float = values[2]
    src: str = values[6]
    dst: str = values[7]
    sport: int = values[10]
    dport: int = values[11]
    record = PacketRecord(
        file_index, values[1], time, values[3], values[4], values[5], src, dst, values[8],
        values[9], sport, dport, values[12], values[13], values[14], values[15], values[16],
        values[17], tunnel, None if answers is None else [_dns_info(d) for d in answers],
        values[20],
    )
    # No key: it is the folder's, and the folding happened before the pipe.
    message = LogicalMessage(record, (), _new_tuple(
        Hop, (label, values[4], src, sport, dst, dport, time, tunnel, file_index)))
    hops = message.hops
    for copy in copies:
        outer = copy[7]
        if outer is None:
            hops.append(_new_tuple(Hop, copy))
        else:
            hops.append(_new_tuple(Hop, (copy[0], copy[1], copy[2], copy[3], copy[4], copy[5],
                                         copy[6], _new_tuple(Tunnel, outer), copy[8])))
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
            decoded.append(decode(item[1], item[2], item[3]))
        else:
            decoded.append(item)
            only_messages = False
    return decoded, only_messages
