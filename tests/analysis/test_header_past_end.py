"""An IPv4 packet whose total length ends inside its TCP header (here: a real capture's SYN,
its options included, with the IP length cut to 40 bytes) decodes to a segment with no
payload, in both builds: compiled, a slice whose start is past its end asked for a negative
length and failed, where Python gives empty bytes."""

from __future__ import annotations

import pytest

from tests.support.corpus import corpus_dir
from tests.support.mutants import analysed, first_frame

SOURCE = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"
ETHERNET, IPV4, TCP = 14, 20, 20


def cut_length_copy(source, target) -> int:
    """Copy `source` with its first TCP SYN's IPv4 total length set to 40 (a TCP header
    without options), below what its header with options takes; returns its frame number."""
    data = bytearray(source.read_bytes())
    frame, _record = first_frame(source, lambda r: r.proto == 6 and bool(r.tcp_flags & 0x02))
    raw = frame.data
    assert raw[ETHERNET] == 0x45, "an IPv4 header without options, after Ethernet"
    assert raw[ETHERNET + IPV4 + 12] >> 4 > 5, "a TCP header with options"
    at = data.find(raw) + ETHERNET + 2
    data[at:at + 2] = (IPV4 + TCP).to_bytes(2, "big")
    target.write_bytes(bytes(data))
    return frame.frame_number


def test_an_ip_length_that_ends_inside_the_tcp_header_leaves_no_payload(tmp_path):
    root = corpus_dir()
    if root is None:
        pytest.skip("no corpus")
    path = tmp_path / "cut-length.pcap"
    number = cut_length_copy(root / SOURCE, path)
    _doc, message = analysed(path, number)
    assert message["label"] == "SYN"
    assert message["len"] == 0
