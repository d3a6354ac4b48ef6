"""Copies of one packet agree on what NAT cannot change. Four datagrams alike in all but their
source port (IPv6 has no IP ID; here four sockets send the same DNS query at once), each
recorded on its own interface, are four messages: no NAT rewrites a source port and keeps
the address, so they are never folded into one message with three invented SNATs.

The datagrams are real: sent over loopback in a namespace this test creates and recorded by
dumpcap; the query is one from the corpus. Only the interface each was seen on is changed
afterwards (each packet gets an interface block of its own, as a node's `-i any` capture has
one per interface), as bench/hostile_bench.py does for its interface-block capture."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from captures.analysis import CaptureFile, analyze_files
from captures.analysis.packets import decode_frame
from captures.analysis.pcapfile import Warnings, read_frames
from captures.analysis.pcapmerge import interface_block, packet_block, section_header
from tests.support import netns
from tests.support.corpus import corpus_dir

SOURCE = "dns-http/skydive_dns-a-aaaa-then-http11-get-syn-fin.pcap"
SENDERS = 4
INTERFACES = ("eth0", "veth7", "cbr0", "flannel.1")

SEND = """
import socket, sys
payload = bytes.fromhex(sys.argv[1])
server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
server.bind(("::1", 53))  # bound, never read: no port unreachable comes back
socks = [socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) for _ in range({n})]
for s in socks:
    s.bind(("::1", 0))
for s in socks:
    s.sendto(payload, ("::1", 53))
"""


def corpus_query() -> bytes:
    root = corpus_dir()
    if root is None:
        pytest.skip("no corpus")
    with open(root / SOURCE, "rb") as fp:
        _linktypes, frames = read_frames(fp, 0, Warnings())
        for frame in frames:
            record = decode_frame(frame, {})
            if record is not None and record.dns and not record.dns[0].is_response:
                return bytes(record.payload)
    raise AssertionError("the corpus file has no DNS query")


def spread_over_interfaces(recorded, out) -> int:
    """`recorded`'s frames, each on an interface of its own; returns how many."""
    with open(recorded, "rb") as fp:
        _linktypes, frames = read_frames(fp, 0, Warnings())
        frames = list(frames)
    linktype = frames[0].linktype
    blocks = [section_header()]
    for name in INTERFACES[:len(frames)]:
        blocks.append(interface_block(linktype, name, resolution=9))
    for index, frame in enumerate(frames[:len(INTERFACES)]):
        blocks.append(packet_block(index, frame.time, frame.data, resolution=9))
    out.write_bytes(b"".join(blocks))
    return min(len(frames), len(INTERFACES))


def test_datagrams_alike_but_for_their_source_port_are_not_one_message(tmp_path):
    netns.require_netns()
    query = corpus_query()
    ns = f"kvizagree{os.getpid()}"
    recorded = tmp_path / "lo.pcapng"
    with netns.namespaces(ns):
        with netns.capture(ns, "lo", recorded):
            subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                            SEND.format(n=SENDERS), query.hex()],
                           check=True, timeout=20, capture_output=True)
        filtered = tmp_path / "queries.pcapng"
        subprocess.run(["tshark", "-r", str(recorded), "-Y", "udp.dstport == 53 && !icmp", "-w",
                        str(filtered)], check=True, timeout=60, capture_output=True)
    spread = tmp_path / "spread.pcapng"
    assert spread_over_interfaces(filtered, spread) == SENDERS
    model = analyze_files([CaptureFile(spread)])
    try:
        doc = model.to_dict()
    finally:
        model.close()
    queries = [m for m in doc["messages"] if m["label"].startswith("DNS")]
    ports = {m["src"] for m in queries}
    assert len(queries) == SENDERS, [(m["src"], len(m["hops"])) for m in queries]
    assert len(ports) == SENDERS
    assert all(len(m["hops"]) == 1 for m in queries)
    assert not [a for a in doc["annotations"] if a["kind"] in ("snat", "dnat")]
    # The fault is real: IPv6 (no IP ID), and the same query bytes from each sender.
    fields = subprocess.run(["tshark", "-r", str(spread), "-T", "fields", "-e", "ipv6.src",
                             "-e", "udp.srcport", "-e", "dns.id", "-e", "udp.payload"],
                            check=True, timeout=60, capture_output=True, text=True).stdout
    rows = [line.split("\t") for line in fields.splitlines()]
    assert {row[0] for row in rows} == {"::1"}
    assert len({row[1] for row in rows}) == SENDERS
    assert len({(row[2], row[3]) for row in rows}) == 1
