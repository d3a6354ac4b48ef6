"""HPACK, the header compression of HTTP/2 (RFC 7541), read as an observer.

Theory of operation: each direction of an HTTP/2 connection has its own encoder, so the
analysis keeps one Decoder per direction. A header block is a run of representations:

    first bits   representation                      dynamic table
    1xxxxxxx     indexed field (7-bit index)          unchanged
    01xxxxxx     literal, incremental indexing        the field is added at the front
    001xxxxx     dynamic table size update            entries evicted down to the new size
    0000xxxx     literal without indexing             unchanged
    0001xxxx     literal never indexed                unchanged

Index 1-61 is the static table (Appendix A), 62 and up the dynamic table, newest first. An
entry costs len(name) + len(value) + 32 octets; adding one evicts the oldest until the table
fits its maximum size (4096 until a size update says otherwise). String literals may be
Huffman-coded with the canonical code of Appendix B.

A capture that starts mid-connection lacks the entries added before it began. The decoder then
starts `complete=False`: it knows only what it saw added, and an index beyond those is unknown
(None). Known entries are the newest, so evictions take the unknown ones first; the known ones
go when their own sizes no longer fit. A malformed block leaves the table unknowable from then
on: the decoder drops what it knew and carries on as if the connection began there.
"""

from __future__ import annotations

DEFAULT_TABLE_SIZE = 4096
ENTRY_OVERHEAD = 32  # RFC 7541 §4.1
# A size update beyond this is taken as garbage, not a table (peers' SETTINGS_HEADER_TABLE_SIZE
# stay far below: 4096 is the default and the common choice); it bounds each table's memory.
MAX_TABLE_SIZE = 64 * 1024
MAX_STRING = 64 * 1024  # a literal longer than this is not decoded (a header block's bound)

STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
)

# Appendix B's code is canonical: codes of one length are consecutive in symbol order, and
# each length starts where the shorter ones ended (shifted left). So the bit length of each
# symbol (0-255, then EOS = 256) is the whole table; the codes are rebuilt from it below.
HUFFMAN_LENGTHS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30,
)  # fmt: skip
EOS = 256


def _canonical_codes(lengths) -> list[tuple[int, int]]:
    """(code, length) per symbol, assigned in (length, symbol) order."""
    codes: list[tuple[int, int]] = [(0, 0)] * len(lengths)
    code, previous = 0, 0
    for length, symbol in sorted((n, s) for s, n in enumerate(lengths)):
        code <<= length - previous
        codes[symbol] = (code, length)
        code += 1
        previous = length
    return codes


HUFFMAN_CODES = _canonical_codes(HUFFMAN_LENGTHS)


def _huffman_machine():
    """Decoding four bits at a time: a state is a node of the code's tree (0: its root), and
    for each state and nibble the table gives the next state, the symbols completed on the
    way and whether one of them was EOS (an error in a string, §5.2). `accept[state]` says
    whether a string may end there: at the root, or within 7 one-bits of it (the padding,
    which is the start of EOS)."""
    children: list[list[int]] = [[0, 0]]  # internal nodes; a leaf is ~symbol (negative)
    for symbol, (code, length) in enumerate(HUFFMAN_CODES):
        node = 0
        for at in range(length - 1, -1, -1):
            bit = (code >> at) & 1
            if at == 0:
                children[node][bit] = ~symbol
            else:
                if not children[node][bit] or children[node][bit] < 0:
                    children.append([0, 0])
                    children[node][bit] = len(children) - 1
                node = children[node][bit]
    table = []
    for state in range(len(children)):
        for nibble in range(16):
            node, emitted, eos = state, bytearray(), False
            for at in (3, 2, 1, 0):
                step = children[node][(nibble >> at) & 1]
                if step < 0:
                    eos = eos or ~step == EOS
                    if ~step != EOS:
                        emitted.append(~step)
                    node = 0
                else:
                    node = step
            table.append((node, bytes(emitted), eos))
    accept = [False] * len(children)
    node = 0
    for _ in range(8):
        accept[node] = True
        node = children[node][1]
    return table, accept


_MACHINE, _ACCEPT = _huffman_machine()


class HpackError(ValueError):
    """A header block that does not decode: cut off, an index beyond both tables, bad
    Huffman padding."""


def huffman_decode(data: bytes) -> bytes:
    machine = _MACHINE
    out = bytearray()
    state = 0
    for byte in data:
        state, emitted, eos = machine[state * 16 + (byte >> 4)]
        if emitted:
            out += emitted
        state, emitted2, eos2 = machine[state * 16 + (byte & 15)]
        if emitted2:
            out += emitted2
        if eos or eos2:
            raise HpackError("EOS inside a Huffman-coded string")
    if not _ACCEPT[state]:
        raise HpackError("bad Huffman padding")
    return bytes(out)


def decode_int(block: bytes, offset: int, prefix_bits: int) -> tuple[int, int]:
    """An integer with an N-bit prefix (§5.1): (value, offset after it)."""
    if offset >= len(block):
        raise HpackError("cut-off header block")
    mask = (1 << prefix_bits) - 1
    value = block[offset] & mask
    offset += 1
    if value < mask:
        return value, offset
    shift = 0
    while offset < len(block):
        byte = block[offset]
        offset += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset
        if shift > 28:
            raise HpackError("HPACK integer too large")
    raise HpackError("cut-off HPACK integer")


def decode_string(block: bytes, offset: int) -> tuple[str, int]:
    """A string literal (§5.2), Huffman-coded or not: (text, offset after it). Header bytes
    are read as Latin-1, so any octet survives."""
    if offset >= len(block):
        raise HpackError("cut-off header block")
    huffman = block[offset] & 0x80
    length, offset = decode_int(block, offset, 7)
    if length > MAX_STRING or offset + length > len(block):
        raise HpackError("cut-off string literal")
    raw = block[offset : offset + length]
    offset += length
    return (huffman_decode(raw) if huffman else raw).decode("latin-1"), offset


class Decoder:
    """One direction's HPACK state: its dynamic table, newest entry first."""

    __slots__ = ("complete", "entries", "max_size", "size")

    def __init__(self, complete: bool = True) -> None:
        # complete: the decoder has seen the connection from its start, so its table is
        # the encoder's; else an index past what it saw added is unknown (module docstring).
        self.complete = complete
        self.entries: list[tuple[str, str]] = []
        self.size = 0
        self.max_size = DEFAULT_TABLE_SIZE

    def decode(self, block: bytes) -> tuple[list[tuple[str | None, str | None]], bool]:
        """The header fields of one complete header block, in order, and whether all of
        them are known. An unknown field (a dynamic-table entry added before the capture
        began) is (None, None); a literal with an unknown name is (None, value). Raises
        HpackError for a malformed block, after which the table is unknown."""
        try:
            return self._decode(block)
        except HpackError:
            self.entries.clear()
            self.size = 0
            self.complete = False
            raise

    def _decode(self, block: bytes):
        fields: list[tuple[str | None, str | None]] = []
        known = True
        offset = 0
        while offset < len(block):
            first = block[offset]
            if first & 0x80:  # indexed field
                index, offset = decode_int(block, offset, 7)
                field = self._lookup(index)
                known = known and field is not None
                fields.append(field or (None, None))
            elif first & 0xE0 == 0x20:  # dynamic table size update
                size, offset = decode_int(block, offset, 5)
                if size > MAX_TABLE_SIZE:
                    raise HpackError("dynamic table size update too large")
                self.max_size = size
                self._evict(0)
            else:
                indexing = bool(first & 0x40)
                index, offset = decode_int(block, offset, 6 if indexing else 4)
                if index:
                    named = self._lookup(index)
                    name = named[0] if named else None
                else:
                    name, offset = decode_string(block, offset)
                value, offset = decode_string(block, offset)
                known = known and name is not None
                fields.append((name, value))
                if indexing:
                    self._add(name, value)
        return fields, known

    def _lookup(self, index: int) -> tuple[str, str] | None:
        if index == 0:
            raise HpackError("index 0")
        if index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        at = index - len(STATIC_TABLE) - 1
        if at < len(self.entries):
            return self.entries[at]
        if self.complete:
            raise HpackError(f"index {index} beyond the dynamic table")
        return None  # added before the capture began

    def _add(self, name: str | None, value: str) -> None:
        if name is None:
            # Its name came from an unknown entry: this entry's size is unknown too, so the
            # accounting of what is known would be wrong from here on. Forget what is known.
            self.entries.clear()
            self.size = 0
            return
        cost = len(name) + len(value) + ENTRY_OVERHEAD
        self._evict(cost)
        if cost <= self.max_size:
            self.entries.insert(0, (name, value))
            self.size += cost
        # else: an entry larger than the table empties it and is not added (§4.4)

    def _evict(self, room: int) -> None:
        while self.entries and self.size + room > self.max_size:
            name, value = self.entries.pop()
            self.size -= len(name) + len(value) + ENTRY_OVERHEAD
