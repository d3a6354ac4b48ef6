"""A DNS message that does not parse (here: a name whose compression pointer points at
itself, made from a real capture by changing two bytes) is said, never dropped in silence."""

from __future__ import annotations

import pytest

from tests.support.corpus import corpus_dir
from tests.support.mutants import analysed, first_frame

SOURCE = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"


def looped_copy(source, target) -> int:
    """Copy `source` with the first DNS response's question name pointing at itself; returns
    that frame's number."""
    data = bytearray(source.read_bytes())
    frame, record = first_frame(source, lambda r: bool(r.dns) and r.dns[0].is_response)
    at = data.find(frame.data) + len(frame.data) - len(record.payload) + 12
    data[at:at + 2] = b"\xc0\x0c"  # the name at offset 12 is "see offset 12"
    target.write_bytes(bytes(data))
    return frame.frame_number


def test_a_dns_name_whose_pointer_loops_is_named_and_warned(tmp_path):
    root = corpus_dir()
    if root is None:
        pytest.skip("no corpus")
    path = tmp_path / "looped.pcap"
    number = looped_copy(root / SOURCE, path)
    doc, message = analysed(path, number)
    assert message["label"].startswith("DNS (malformed)")
    assert any("1 message(s) on DNS ports are not well-formed DNS" in w
               for w in doc["capture"]["warnings"])
    assert not doc["capture"]["partial"]  # the file is whole; one message is not DNS
