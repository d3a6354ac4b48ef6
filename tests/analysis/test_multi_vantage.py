"""One packet seen at several vantage points is one message with its hops, and a DNAT
between them is named with where it happened.

The traffic is real: a client namespace reaches a "Service VIP" through a router namespace
that DNATs it (as kube-proxy does) to a server namespace, recorded on both sides and on the
router with `-i any`.
"""

from __future__ import annotations

import pytest

from captures.analysis import CaptureFile, analyze_files
from tests.support.dnat import PORT, SERVER, VIP, record_dnat


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    return record_dnat(tmp_path_factory.mktemp("vantage"), "kvt")


def _syn(doc):
    return next(m for m in doc["messages"] if m["flags"] == "S")


def test_it_folds_the_copies_seen_on_both_sides_into_one_message_with_two_hops(recorded):
    doc = analyze_files([CaptureFile(recorded.client, "client"),
                         CaptureFile(recorded.server, "server")]).to_dict()
    syn = _syn(doc)
    assert [h["interface"] for h in syn["hops"]] == ["client:eth0", "server:eth0"]
    assert syn["hops"][0]["dst"] == f"{VIP}:80"
    assert syn["hops"][1]["dst"] == f"{SERVER}:{PORT}"
    # Every packet crossed both sides: one message each, never one per copy.
    assert all(len(m["hops"]) == 2 for m in doc["messages"] if m["proto"] == "tcp")
    assert len(doc["connections"]) == 1
    assert doc["connections"][0]["server_after_nat"] == f"{SERVER}:{PORT}"
    assert doc["connections"][0]["closed"] == "fin"


def test_it_names_the_dnat_and_the_vantage_points_between_which_it_happened(recorded):
    doc = analyze_files([CaptureFile(recorded.client, "client"),
                         CaptureFile(recorded.server, "server")]).to_dict()
    dnats = [a for a in doc["annotations"] if a["kind"] == "dnat"]
    assert len(dnats) == 1
    assert dnats[0]["before"] == f"{VIP}:80"
    assert dnats[0]["after"] == f"{SERVER}:{PORT}"
    assert dnats[0]["where"] == "client:eth0 → server:eth0"
    assert not [a for a in doc["annotations"] if a["kind"] == "snat"]
    # The badge sits on the arrows whose hops show the rewrite, starting with the SYN.
    assert doc["annotations"].index(dnats[0]) in _syn(doc)["annotations"]


def test_it_finds_the_dnat_at_the_router_interfaces_in_an_any_capture(recorded):
    doc = analyze_files([recorded.router_file()]).to_dict()
    syn = _syn(doc)
    assert [(h["interface"], h["direction"]) for h in syn["hops"]] == [("r0", "in"),
                                                                      ("r1", "out")]
    dnat = next(a for a in doc["annotations"] if a["kind"] == "dnat")
    assert (dnat["before"], dnat["after"], dnat["where"]) == (
        f"{VIP}:80", f"{SERVER}:{PORT}", "r0 → r1")
    # The replies are un-NATed on the way back: the same DNAT, not a second finding.
    assert len([a for a in doc["annotations"] if a["kind"] in ("dnat", "snat")]) == 1
    http = doc["http"]
    assert [(r["method"], r["status"]) for r in http] == [("GET", 200)]


def test_it_sees_no_dnat_from_the_client_side_alone(recorded):
    doc = analyze_files([recorded.client]).to_dict()
    assert not [a for a in doc["annotations"] if a["kind"] in ("dnat", "snat")]
    assert doc["connections"][0]["server"] == f"{VIP}:80"
    assert all(len(m["hops"]) == 1 for m in doc["messages"])


def test_it_folds_copies_from_hosts_with_skewed_clocks_when_told_how_far_apart(
        recorded, tmp_path):
    import subprocess

    skewed = tmp_path / "server-skewed.pcapng"  # the server's clock 2 s ahead
    subprocess.run(["editcap", "-t", "2", str(recorded.server), str(skewed)], check=True,
                   capture_output=True, timeout=30)
    files = [CaptureFile(recorded.client, "client"), CaptureFile(skewed, "server")]
    apart = analyze_files(files).to_dict()
    assert all(len(m["hops"]) == 1 for m in apart["messages"])  # too far apart by default
    together = analyze_files(files, window=3.0).to_dict()
    assert len(_syn(together)["hops"]) == 2
    assert [a["where"] for a in together["annotations"] if a["kind"] == "dnat"] == [
        "client:eth0 → server:eth0"]
