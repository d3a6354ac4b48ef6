"""The live table's rows, decoded from a capture file while it is still being written."""

from __future__ import annotations

import time

import pytest

from captures.adapters.decode import LiveDecoder
from tests.support.corpus import corpus_dir
from tests.support.tshark import fields

CORPUS = corpus_dir()
pytestmark = pytest.mark.skipif(CORPUS is None, reason="the shared corpus is not beside us")


def grow(path, data: bytes, cuts: list[int]) -> list[dict]:
    """Write `data` to `path` in pieces ending at `cuts` (anywhere, even inside a record)
    while a LiveDecoder follows it; all the rows it produced. Rows come while the file grows,
    not only once the writer is done."""
    path.write_bytes(b"")
    decoder = LiveDecoder(path)
    decoder.start()
    rows: list[dict] = []
    written = 0
    with open(path, "ab") as fp:
        for cut in [*cuts, len(data)]:
            fp.write(data[written:cut])
            fp.flush()
            written = cut
            time.sleep(0.2)  # the decoder waits at the end for more
            rows += decoder.take()
    assert rows, "no row before the writer finished"
    decoder.finish()
    assert not decoder.is_alive()
    assert not decoder.error
    return rows + decoder.take()


@pytest.mark.timeout(60)
def test_a_growing_file_gives_every_frame_once_in_order(tmp_path):
    source = CORPUS / "keepalive" / "zeek_http11-pipelined-5-requests-one-conn.pcap"
    data = source.read_bytes()
    rows = grow(tmp_path / "growing.pcap", data, [10, 24, 40, len(data) // 3, len(data) // 2])
    frames = fields(source, None, "frame.number", "frame.time_epoch")
    assert [row["n"] for row in rows] == [int(n) for n, _t in frames]
    assert all(abs(row["t"] - float(t)) < 1e-5 for row, (_n, t) in zip(rows, frames, strict=True))


@pytest.mark.timeout(60)
def test_icmp_rows_say_what_the_message_is(tmp_path):
    source = CORPUS / "linktype" / "zeek_sll2-arp-icmp-icmpv6.pcap"
    data = source.read_bytes()
    rows = {row["n"]: row for row in grow(tmp_path / "icmp.pcap", data, [len(data) // 2])}
    echoes = fields(source, "icmp.type == 8 or icmp.type == 0", "frame.number", "icmp.type",
                    "icmp.ident", "icmp.seq")
    echoes6 = fields(source, "icmpv6.type == 128 or icmpv6.type == 129", "frame.number",
                     "icmpv6.type", "icmpv6.echo.identifier", "icmpv6.echo.sequence_number")
    assert echoes and echoes6
    for protocol, found in (("ICMP", echoes), ("ICMPv6", echoes6)):
        for number, kind, ident, seq in found:
            what = "request" if kind in ("8", "128") else "reply"
            label = f"{protocol} echo {what} id={int(ident, 0)} seq={int(seq, 0)}"
            assert label in rows[int(number)]["info"]  # tshark writes the v6 id in hex
