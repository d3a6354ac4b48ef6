"""No failure where tshark sees none: every cause the diagnosis names in a public capture must
be backed by tshark's own reading of that capture (a SYN answered by nothing, a reset answering
a SYN, a DNS query tshark flags as a retransmission, NXDOMAINs for the names tried, a SYN-ACK
tshark flags as retransmitted after the client's data: deepflow's accept-queue capture)."""

from __future__ import annotations

import pytest

from captures.analysis import CaptureFile, analyze_files
from tests.support import tshark
from tests.support.corpus import corpus_files

FILES = corpus_files()


def _stream_of(path, client: str, server: str) -> str | None:
    port, sport = client.rpartition(":")[2], server.rpartition(":")[2]
    rows = tshark.fields(
        path, f"tcp.srcport=={port} && tcp.dstport=={sport} && tcp.flags.syn==1",
        "tcp.stream")
    return rows[0][0] if rows else None


def _backed(path, doc: dict, cause: dict) -> bool:
    kind = cause["kind"]
    conn = doc["connections"][cause["connection"]] if cause.get("connection") is not None \
        else None
    if kind in ("lost", "refused", "port_reuse", "no_endpoints"):
        stream = _stream_of(path, conn["client"], conn["server"])
        if stream is None:
            return False
        synacks = tshark.fields(path, f"tcp.stream=={stream} && tcp.flags.syn==1 && "
                                      f"tcp.flags.ack==1", "frame.number")
        if synacks:
            return False  # tshark saw the handshake answered
        if kind == "lost":
            return not tshark.fields(path, f"tcp.stream=={stream} && tcp.srcport=="
                                           f"{conn['server'].rpartition(':')[2]}",
                                     "frame.number")
        if kind == "refused":
            return bool(tshark.fields(path, f"tcp.stream=={stream} && tcp.flags.reset==1",
                                      "frame.number"))
        return True  # port_reuse: answered, but not by a SYN-ACK
    if kind == "dns_retry":
        return bool(tshark.fields(path, f'dns.retransmission && dns.qry.name=="{cause["name"]}"',
                                  "frame.number"))
    if kind == "dns_search_expansion":
        tried = [f'dns.qry.name=="{cause["name"]}.{suffix}"' for suffix in cause["search"]]
        return bool(tshark.fields(path, f"dns.flags.rcode==3 && ({' || '.join(tried)})",
                                  "frame.number"))
    if kind == "listen_overflow":
        # tshark: the server's SYN-ACK flagged a retransmission after the client sent data.
        stream = _stream_of(path, conn["client"], conn["server"])
        if stream is None:
            return False
        client_port = conn["client"].rpartition(":")[2]
        sent = tshark.fields(path, f"tcp.stream=={stream} && tcp.srcport=={client_port} && "
                                   f"tcp.len>0", "frame.time_relative")
        resent = tshark.fields(path, f"tcp.stream=={stream} && tcp.flags.syn==1 && "
                                     f"tcp.flags.ack==1 && tcp.analysis.retransmission",
                               "frame.time_relative")
        return bool(sent and resent) and float(resent[-1][0]) > float(sent[0][0])
    if kind == "capture_gap":
        stream = _stream_of(path, conn["client"], conn["server"])
        return bool(tshark.fields(path, "tcp.analysis.ack_lost_segment"
                                  + (f" && tcp.stream=={stream}" if stream else ""),
                                  "frame.number"))
    # nat_unseen is a note about the vantage point, not a failure; no public capture here has
    # the other kinds (injected_reset, hairpin, idle_reset, server_first_stall among them), so
    # naming one would be a false claim.
    return kind == "nat_unseen"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_cause_named_in_a_public_capture_is_one_tshark_sees(path):
    doc = analyze_files([CaptureFile(path)]).to_dict()
    causes = [a for a in doc["annotations"] if a.get("severity")]
    unbacked = [c["text"] for c in causes if not _backed(path, doc, c)]
    assert unbacked == []
    for conn in doc["connections"]:
        assert conn["outcome"] in ("answered", "rejected", "unanswered", "reset_by_client",
                                   "reset_by_server", "half_open", "midstream")


def _causes_in(name: str) -> list[dict]:
    found = [p for p in FILES if p.name == name]
    if not found:
        pytest.skip(f"{name} is not in the corpus here")
    doc = analyze_files([CaptureFile(found[0])]).to_dict()
    return [a for a in doc["annotations"] if a.get("severity")]


def test_it_calls_deepflows_full_accept_queue_a_listen_overflow_and_says_what_it_cannot_see():
    causes = _causes_in("deepflow_server-accept-queue-full-retransmissions.pcap")
    assert [c["kind"] for c in causes] == ["listen_overflow"]
    overflow = causes[0]
    assert overflow["synack_resent"] == 2 and overflow["served"] is False
    assert overflow["delivered"] is None  # one capture, nothing says where it was taken
    assert "cannot be ruled out" in overflow["text"]


def test_a_syn_ack_the_client_never_acknowledged_is_no_listen_overflow():
    assert not [c for c in _causes_in("deepflow_synack-retransmissions-then-rst.pcap")
                if c["kind"] == "listen_overflow"]


def test_resets_in_one_capture_are_never_called_forged():
    # zeek's rst-injection trace: one capture point, so a forged reset looks like any other.
    assert not [c for c in _causes_in("zeek_rst-injection.pcap")
                if c["kind"] == "injected_reset"]
