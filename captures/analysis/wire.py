"""Logical messages as plain values and back: how readahead.py sends them down its pipe.

A batch crosses as a few large values rather than a tuple for each message, so that marshal
writes and reads a handful of objects per batch instead of a dozen per message:

- every message's numbers, packed one after another into one bytes object (None, for an IP
  ID or a window, is -1);
- its texts (interface label, direction, addresses) as numbers too: ids into a table of the
  texts already sent, which both processes keep. A batch carries the texts it added to the
  table; the reader's address and label texts are the same objects packet after packet, so
  the table is asked once per text with its hash already known, and the analysing process
  gets each address back as one object, hashed once, whatever the number of its packets;
- the payloads, in a list of their own, for the messages that have one;
- each message's time since the capture's start as the model writes it (model.seconds_text),
  all of a batch's in one string: the reading process had time to spare, the analysing
  process none;
- what fewer messages have (a tunnel, DNS messages, further hops), in another list;
- a DNS message alike in all but its ID to one sent before (dns.parse_dns gave both the same
  template number) as its ID and an id into a second table, of DNS templates, which both
  processes keep as they keep the texts: the analysing process gets the name, the answers
  and the label's words of a lookup asked again and again once, not once a message;
- what is not a message (a warning, the "partial" mark), with the number of messages before
  it, so that the analysing process sees everything in the order it was added.

Both tables are bounded (MAX_TEXTS, MAX_TEMPLATES): past its bound, a table is emptied on
both sides between two batches (a scan from spoofed sources names a new address in every
packet, a resolver's answers count their TTLs down).

This module is compiled with the per-packet path (build.MODULES): rebuilding a message was
a fifth of the analysing process' time when interpreted.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from .dns import DNS_PORTS, dns_words
from .hops import Hop, LogicalMessage
from .model import seconds_text
from .pcapfile import Warnings
from .records import DnsInfo, PacketRecord, Tunnel

WARNING, PARTIAL = 1, 2
# A message's numbers, the ids of its texts (0 is None) and what else it carries (CARRIES_*):
# file index, frame number, time, sequence and acknowledgement numbers, payload length, then
# the narrow fields packed into four words (fewer values to make and unmake on either side):
#   ports:  sport | dport << 16 | tcp_flags << 32 | proto << 40 | ip_version << 48
#           | carries << 52  (each as wide as its header field)
#   small:  ip_id + 1 | window + 1 << 17  (None is 0)
#   places: interface | direction << 20 | first hop's interface << 40  (text ids)
#   ends:   src | dst << 20  (text ids)
_NUMBERS: Final = struct.Struct("<qqdqqqqqqq")
# The bound method, called as a function: compiled, `_NUMBERS.pack(...)` looked the method up
# on every call.
_pack_numbers: Final = _NUMBERS.pack
CARRIES_PAYLOAD: Final = 1
CARRIES_EXTRAS: Final = 2
ID_BITS: Final = 20
ID_MASK: Final = (1 << ID_BITS) - 1
# Texts in the table before it is emptied, between two batches (so a batch may add a few
# hundred past it: an id stays far below 1 << ID_BITS).
MAX_TEXTS = 1 << 16  # not Final: the tests make it small
# DNS templates in the table before it is emptied. dns.parse_dns keeps 4096 contents at a
# time and numbers them anew once it is emptied: beyond twice that, most would be gone.
MAX_TEMPLATES = 8192  # not Final: the tests make it small
TEXTS_RESET: Final = 1  # what the first value of a batch says was emptied since the last one
TEMPLATES_RESET: Final = 2
# tuple.__new__ rather than Tunnel(...): a NamedTuple's own __new__ is a Python function,
# slower than the rest of the rebuilding.
_new_tuple: Final = tuple.__new__


class Batch:
    """The reading process' side: messages and other items added in order, taken as one
    batch's values (take()); the text table lives from batch to batch."""

    # One batch's items (_empty() starts each batch).
    texts: list[str]
    templates: list[tuple]
    numbers: list[bytes]
    payloads: list[bytes]
    extras: list[tuple]
    others: list[tuple]
    times: list[str]

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.template_ids: dict[int, int] = {}  # dns.parse_dns's template number -> id
        self.reset = 0  # which tables were emptied since the last batch (TEXTS_RESET, ...)
        self.t0 = 0.0  # the capture's start: the reader sets it before the first message
        self._empty()

    def _empty(self) -> None:
        self.texts = []
        self.templates = []
        self.numbers = []
        self.payloads = []
        self.extras = []
        self.others = []
        self.times = []

    def __len__(self) -> int:
        return len(self.numbers) + len(self.others)

    def _id(self, text: str | None) -> int:
        if text is None:
            return 0
        found = self.ids.get(text)
        if found is None:
            found = len(self.ids) + 1
            self.ids[text] = found
            self.texts.append(text)
        return found

    def add(self, message: LogicalMessage) -> None:
        r = message.record
        ip_id = r.ip_id
        window = r.window
        payload = r.payload
        underlay = r.underlay
        answers = r.dns
        hops = message.hops
        if payload and r.proto == 17 and (
                answers is not None or not (r.sport in DNS_PORTS or r.dport in DNS_PORTS)):
            # The analysis reads a datagram's payload only on a DNS port, when it was not
            # DNS (engine.py counts it malformed); DNS was read here, other UDP is labelled
            # by its length: the bytes need not be copied four times to be dropped.
            payload = b""
        carries = CARRIES_PAYLOAD if payload else 0
        extra: tuple | None = None
        if r.tunnel is not None or underlay is not None or answers is not None or len(hops) > 1:
            carries |= CARRIES_EXTRAS
            copies: list[tuple] | None = None
            if len(hops) > 1:
                copies = []
                for index in range(1, len(hops)):
                    hop = hops[index]
                    tunnel = hop.tunnel
                    copies.append((hop.interface, hop.direction, hop.src, hop.sport, hop.dst,
                                   hop.dport, hop.time, None if tunnel is None else tuple(tunnel),
                                   hop.file))
            extra = (r.tunnel, None if underlay is None else tuple(underlay),
                     None if answers is None else self._dns_items(answers), copies)
        sport, dport, flags, proto, version = r.sport, r.dport, r.tcp_flags, r.proto, r.ip_version
        if (sport | dport) >> 16 or (flags | proto) >> 8 or version >> 4:
            raise ValueError(f"a packet field out of its header's range: ports {sport} {dport}, "
                             f"flags {flags}, protocol {proto}, IP version {version}")
        numbers = _pack_numbers(
            r.file_index, r.frame_number, r.time, r.seq, r.ack, r.payload_len,
            sport | dport << 16 | flags << 32 | proto << 40 | version << 48 | carries << 52,
            (0 if ip_id is None else ip_id + 1) | (0 if window is None else window + 1) << 17,
            self._id(r.interface) | self._id(r.direction) << ID_BITS
            | self._id(hops[0].interface) << 2 * ID_BITS,
            self._id(r.src) | self._id(r.dst) << ID_BITS,
        )
        # Appended only once all is made: a batch taken after a failure here stays whole.
        if payload:
            self.payloads.append(payload)
        if extra is not None:
            self.extras.append(extra)
        self.numbers.append(numbers)
        self.times.append(seconds_text(r.time - self.t0))

    def _dns_items(self, answers: list[DnsInfo]) -> list:
        """A message's DNS messages: each an int (its template's id << 16 | its DNS ID) when
        it has a template, else all its values."""
        items: list = []
        ids = self.template_ids
        for d in answers:
            template = d.template
            if not template:
                items.append(_dns_values(d))
                continue
            found = ids.get(template)
            if found is None:
                found = ids[template] = len(ids)
                self.templates.append((d.is_response, d.rcode, d.name, d.qtype, d.answers,
                                       d.truncated, d.answers_cut))
            items.append(found << 16 | d.id)
        return items

    def add_other(self, item: tuple) -> None:
        """A warning or the partial mark, after the messages added so far."""
        self.others.append((len(self.numbers), item))

    def take(self) -> tuple:
        """This batch's values (for marshal), and an empty batch to go on with."""
        values = (self.reset, self.texts, b"".join(self.numbers), self.payloads, self.extras,
                  self.others, ",".join(self.times), self.templates)
        self.reset = 0
        if len(self.ids) >= MAX_TEXTS:
            self.ids.clear()
            self.reset |= TEXTS_RESET
        if len(self.template_ids) >= MAX_TEMPLATES:
            self.template_ids.clear()
            self.reset |= TEMPLATES_RESET
        self._empty()
        return values


class WarningsSent:
    """What the reading process' Warnings (the parent's, as it was at the fork) gained since
    last asked, added to the batch as items. The parent's add() keeps its own bound and drops
    repeats, as the child's did: whatever the child kept, the parent keeps too."""

    def __init__(self, warnings: Warnings) -> None:
        self.warnings = warnings
        self.sent = len(warnings.messages)
        self.partial = warnings.partial

    def new_items(self, batch: Batch) -> None:
        kept = self.warnings.messages
        if len(kept) != self.sent:
            for text in kept[self.sent:]:
                batch.add_other((WARNING, text))
            self.sent = len(kept)
        if self.warnings.partial != self.partial:
            self.partial = True
            batch.add_other((PARTIAL,))


def fill(
    batch: Batch, messages: list[LogicalMessage], start: int, size: int,
    warnings: WarningsSent, encode: Callable[[Batch, LogicalMessage], None],
) -> int:
    """Add messages[start:] to the batch until it holds `size` items, each after the warnings
    added while reading up to it (as in one process); returns where it stopped. Compiled, so
    that the reading process' loop over messages is not interpreted (`encode` is Batch.add,
    or what a test puts in its place)."""
    at = start
    while at < len(messages) and len(batch) < size:
        warnings.new_items(batch)
        encode(batch, messages[at])
        at += 1
    return at


def _dns_values(d: DnsInfo) -> tuple:
    return (d.id, d.is_response, d.rcode, d.name, d.qtype, d.answers, d.truncated,
            d.answers_cut)


def decode_batch(table: list, templates: list[DnsInfo], values: tuple) -> tuple[list, bool]:
    """The analysing process' side: a batch's items in the order they were added, each
    message rebuilt (other items as they came), and whether all of them were messages.
    `table` is the text table and `templates` the DNS templates' (each with its words), kept
    by the caller from batch to batch (empty at first)."""
    texts: list = table
    reset: int = values[0]
    if reset & TEXTS_RESET or not texts:
        texts.clear()
        texts.append(None)
    texts.extend(values[1])
    if reset & TEMPLATES_RESET:
        templates.clear()
    for t in values[7]:
        template = DnsInfo(0, t[0], t[1], t[2], t[3], t[4], t[5], t[6])
        template.words = dns_words(template)
        templates.append(template)
    payloads: list = values[3]
    extras: list = values[4]
    others: list = values[5]
    times: list[str] = values[6].split(",")
    decoded: list = []
    payload_at = 0
    extra_at = 0
    other_at = 0
    file_index: int
    frame_number: int
    time: float
    seq: int
    ack: int
    payload_len: int
    ports: int
    small: int
    places: int
    ends: int
    for numbers in _NUMBERS.iter_unpack(values[2]):
        while other_at < len(others) and others[other_at][0] == len(decoded) - other_at:
            decoded.append(others[other_at][1])
            other_at += 1
        file_index, frame_number, time, seq, ack, payload_len, ports, small, places, ends = (
            numbers)
        sport = ports & 0xFFFF
        dport = ports >> 16 & 0xFFFF
        tcp_flags = ports >> 32 & 0xFF
        proto = ports >> 40 & 0xFF
        ip_version = ports >> 48 & 0xF
        carries = ports >> 52
        ip_id = (small & 0x1FFFF) - 1
        window = (small >> 17) - 1
        interface_id = places & ID_MASK
        direction_id = places >> ID_BITS & ID_MASK
        hop_interface_id = places >> 2 * ID_BITS
        src_id = ends & ID_MASK
        dst_id = ends >> ID_BITS
        payload = b""
        if carries & CARRIES_PAYLOAD:
            payload = payloads[payload_at]
            payload_at += 1
        kind: str | None = None
        tunnel: Tunnel | None = None
        answers: list[DnsInfo] | None = None
        copies: list | None = None
        if carries & CARRIES_EXTRAS:
            extra = extras[extra_at]
            extra_at += 1
            kind = extra[0]
            underlay = extra[1]
            if underlay is not None:
                tunnel = _new_tuple(Tunnel, underlay)
            dns = extra[2]
            if dns is not None:
                answers = [_dns_info(d, templates) for d in dns]
            copies = extra[3]
        direction: str | None = texts[direction_id]
        src: str = texts[src_id]
        dst: str = texts[dst_id]
        record = PacketRecord(
            file_index, frame_number, time, texts[interface_id], direction, ip_version, src,
            dst, None if ip_id < 0 else ip_id, proto, sport, dport, tcp_flags, seq, ack,
            payload, payload_len, kind, tunnel, answers, None if window < 0 else window,
        )
        # No key: it is the folder's, and the folding happened before the pipe.
        message = LogicalMessage(record, (), Hop(texts[hop_interface_id], direction, src, sport,
                                                 dst, dport, time, tunnel, file_index))
        message.t_text = times[len(decoded) - other_at]
        if copies is not None:
            hops = message.hops
            for copy in copies:
                outer = copy[7]
                hops.append(Hop(copy[0], copy[1], copy[2], copy[3], copy[4], copy[5], copy[6],
                                None if outer is None else _new_tuple(Tunnel, outer), copy[8]))
        decoded.append(message)
    while other_at < len(others):
        decoded.append(others[other_at][1])
        other_at += 1
    return decoded, not others


def _dns_info(d: int | tuple, templates: list[DnsInfo]) -> DnsInfo:
    if isinstance(d, int):
        t = templates[d >> 16]
        return DnsInfo(d & 0xFFFF, t.is_response, t.rcode, t.name, t.qtype, list(t.answers),
                       t.truncated, t.answers_cut, 0, t.words)
    return DnsInfo(d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7])
