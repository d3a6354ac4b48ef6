"""One packet seen at several vantage points is one message with its hops, and a DNAT
between them is named with where it happened.

The traffic is real: a client namespace reaches a "Service VIP" through a router namespace
that DNATs it (as kube-proxy does) to a server namespace, recorded on both sides and on the
router with `-i any`.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from captures.analysis import CaptureFile, analyze_files
from tests.support.netns import capture, interface_indexes, namespaces, require_netns, run

VIP, SERVER, PORT = "10.96.7.10", "10.2.0.2", 8080


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    require_netns()
    out = tmp_path_factory.mktemp("vantage")
    tag = f"kvt{os.getpid() % 100000}"
    client, router, server = f"{tag}c", f"{tag}r", f"{tag}s"
    with namespaces(client, router, server):
        run("ip", "-n", router, "link", "add", "r0", "type", "veth", "peer", "name", "eth0",
            "netns", client)
        run("ip", "-n", router, "link", "add", "r1", "type", "veth", "peer", "name", "eth0",
            "netns", server)
        for ns, dev, addr in ((client, "eth0", "10.1.0.2/24"), (router, "r0", "10.1.0.1/24"),
                              (router, "r1", "10.2.0.1/24"), (server, "eth0", "10.2.0.2/24")):
            run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", client, "route", "add", "default", "via", "10.1.0.1")
        run("ip", "-n", server, "route", "add", "default", "via", "10.2.0.1")
        run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", ns=router)
        run("iptables", "-t", "nat", "-A", "PREROUTING", "-d", VIP, "-p", "tcp", "--dport", "80",
            "-j", "DNAT", "--to-destination", f"{SERVER}:{PORT}", ns=router)
        server_process = subprocess.Popen(
            ["ip", "netns", "exec", server, "python3", "-m", "http.server", str(PORT),
             "--bind", SERVER],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(50):  # until the server listens, at most 5 s
                if f":{PORT}" in run("ss", "-ltn", ns=server):
                    break
                time.sleep(0.1)
            router_interfaces = interface_indexes(router)
            with capture(client, "eth0", out / "client.pcapng"), \
                    capture(server, "eth0", out / "server.pcapng"), \
                    capture(router, "any", out / "router.pcapng", linktype="LINUX_SLL2"):
                run("curl", "-sS", "-o", "/dev/null", "-m", "5", f"http://{VIP}/", ns=client)
        finally:
            server_process.kill()
            server_process.wait(timeout=5)
    return out, router_interfaces


def _syn(doc):
    return next(m for m in doc["messages"] if m["flags"] == "S")


def test_it_folds_the_copies_seen_on_both_sides_into_one_message_with_two_hops(recorded):
    out, _ = recorded
    doc = analyze_files([CaptureFile(out / "client.pcapng", "client"),
                         CaptureFile(out / "server.pcapng", "server")]).to_dict()
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
    out, _ = recorded
    doc = analyze_files([CaptureFile(out / "client.pcapng", "client"),
                         CaptureFile(out / "server.pcapng", "server")]).to_dict()
    dnats = [a for a in doc["annotations"] if a["kind"] == "dnat"]
    assert len(dnats) == 1
    assert dnats[0]["before"] == f"{VIP}:80"
    assert dnats[0]["after"] == f"{SERVER}:{PORT}"
    assert dnats[0]["where"] == "client:eth0 → server:eth0"
    assert not [a for a in doc["annotations"] if a["kind"] == "snat"]
    # The badge sits on the arrows whose hops show the rewrite, starting with the SYN.
    assert doc["annotations"].index(dnats[0]) in _syn(doc)["annotations"]


def test_it_finds_the_dnat_at_the_router_interfaces_in_an_any_capture(recorded):
    out, names = recorded
    doc = analyze_files([CaptureFile(out / "router.pcapng", "router",
                                     {int(k): v for k, v in names.items()})]).to_dict()
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
    out, _ = recorded
    doc = analyze_files([out / "client.pcapng"]).to_dict()
    assert not [a for a in doc["annotations"] if a["kind"] in ("dnat", "snat")]
    assert doc["connections"][0]["server"] == f"{VIP}:80"
    assert all(len(m["hops"]) == 1 for m in doc["messages"])
