"""Held segments cost O(log n) each however they arrive: 200,000 segments in reverse order with
200 holes are put back in order in well under the 10 s of CPU the whole analysis may take
(the held queue used to be rescanned for every segment: minutes)."""

from __future__ import annotations

import random
import time

from captures.analysis.reassembly import Waiting

SEGMENTS = 200_000
SIZE = 10


def test_reverse_order_with_holes_is_reassembled_in_order_quickly():
    holes = set(random.Random(3).sample(range(1, SEGMENTS), 200))
    waiting = Waiting(fed=0)
    stream = []
    started = time.process_time()
    for index in reversed(range(SEGMENTS)):  # the first segment arrives last
        if index not in holes:
            waiting.hold(index * SIZE, bytes([index % 251]) * SIZE, None)
            stream.append(waiting.take())
    assert b"".join(stream) == b"".join(bytes([i % 251]) * SIZE for i in range(min(holes)))
    for index in sorted(holes):  # the retransmissions fill the holes, first to last
        waiting.hold(index * SIZE, bytes([index % 251]) * SIZE, None)
        stream.append(waiting.take())
    took = time.process_time() - started
    assert b"".join(stream) == b"".join(bytes([i % 251]) * SIZE for i in range(SEGMENTS))
    assert waiting.fed == SEGMENTS * SIZE and waiting.held == 0 and not waiting.segments
    assert took < 5.0, f"{took:.1f} s of CPU"


def test_a_longer_copy_of_a_held_segment_replaces_it_and_stale_copies_are_dropped():
    waiting = Waiting(fed=0)
    waiting.hold(10, b"b" * 5, None)
    waiting.hold(10, b"b" * 10, None)  # the retransmission carried more
    waiting.hold(5, b"a" * 5, None)
    assert waiting.take() == b""  # bytes 0-4 are still missing
    waiting.hold(0, b"x" * 12, None)  # covers 0-11: the copy at 5 is stale, 10's tail is new
    assert waiting.take() == b"x" * 12 + b"b" * 8
    assert waiting.fed == 20 and waiting.held == 0
