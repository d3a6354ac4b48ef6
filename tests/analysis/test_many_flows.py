"""A capture with 100k flows finishes, and past the flow limit it says it is partial.

The flows are real: 100k UDP datagrams from distinct source addresses and ports, sent on the
loopback of a namespace this test creates, recorded by dumpcap.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from captures.analysis import analyze_files
from tests.support.netns import capture, namespaces, require_netns, run

FLOWS = 100_000
SENDER = """
import itertools, socket, sys
count = int(sys.argv[1])
addresses = itertools.product(range(1, 255), range(1, 255), range(2))  # two ports per address
# Something listens on the port: 100k flows, not 100k ICMP port unreachables (a bound of its own).
sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sink.bind(("127.0.0.1", 9))
for a, b, _ in itertools.islice(addresses, count):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((f"127.1.{a}.{b}", 0))
        s.sendto(b"kviz", ("127.0.0.1", 9))
"""


@pytest.fixture(scope="module")
def many_flows(tmp_path_factory):
    require_netns()
    path = tmp_path_factory.mktemp("flows") / "flows.pcapng"
    ns = f"kvf{os.getpid() % 100000}"
    # 127.0.0.0/8 is all local on lo, so any 127.1.x.y can be a source address.
    with namespaces(ns), capture(ns, "lo", path):
        run(sys.executable, "-c", SENDER, str(FLOWS), ns=ns, timeout=240)
    return path


@pytest.mark.timeout(240)
def test_it_analyses_a_hundred_thousand_flows(many_flows):
    started = time.monotonic()
    model = analyze_files([many_flows])
    doc_capture = model.capture
    model.close()
    # dumpcap may miss a few of 100k datagrams sent back to back: that is the capture's loss.
    assert doc_capture["packets"] >= FLOWS * 0.99
    assert doc_capture["messages"] == doc_capture["packets"]
    assert not doc_capture["partial"], doc_capture["warnings"]
    assert time.monotonic() - started < 120


@pytest.mark.timeout(240)
def test_it_flags_the_result_partial_past_the_flow_limit(many_flows):
    model = analyze_files([many_flows], max_flows=10_000)
    capture_facts = model.capture
    model.close()
    assert capture_facts["partial"]
    assert any("more than 10000 UDP flows" in w for w in capture_facts["warnings"])
    # Every packet is still a message: only flow tracking stopped.
    assert capture_facts["messages"] == capture_facts["packets"] >= FLOWS * 0.99
