"""The diagram of a path across two nodes, from the lab's `path` recording (captures/lab/path.py):
every hop in path order across both nodes, the VXLAN hop named with its nodes, port and VNI,
the DNAT on the client's node, the NodePort's DNAT and SNAT on the node it entered, both
backends reached, and lifelines grouped by node.

What is expected comes from outside the engine: the scenario's truth.json (which backend served
each request, on which node, with which sockets; the VXLAN devices as the kernel describes
them), the inventory, the capture files' meta and tshark's reading of each file. Nothing here
names the lab's addresses, interfaces or VNI. Node clocks that disagree (by less than the
copy window) are made by shifting one node's captures with editcap, as a real clock would.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from captures.analysis import CaptureFile, analyze_files
from captures.analysis.records import split_endpoint
from captures.render import build_layout, render_mermaid, render_plantuml, render_svg
from tests.support import tshark

SVG = "{http://www.w3.org/2000/svg}"


class Recording:
    """The path scenario's folder, read: truth, inventory, which file is which vantage."""

    def __init__(self, lab, folder: Path):
        self.lab, self.folder = lab, folder
        self.truth = json.loads((folder / "truth.json").read_text())
        self.inventory = json.loads((folder / "inventory.json").read_text())
        self.file_of = self.truth["captures"]  # vantage → file name
        self.nodes = [node["name"] for node in self.truth["lab"]["nodes"]]
        self.pods = {pod["name"]: pod for pod in self.inventory["pods"]}

    def request(self, kind: str, crossed: bool) -> dict:
        return next(r for r in self.truth["requests"]
                    if r["kind"] == kind and r["crossed_overlay"] is crossed)

    def pod_vantage(self, name: str) -> str:
        return f"pod/{self.pods[name]['namespace']}/{name}"

    def files(self, folder: Path | None = None) -> list[CaptureFile]:
        folder = folder or self.folder
        return [CaptureFile.from_path(folder / name) for name in sorted(self.file_of.values())]

    def vxlan_option(self) -> tuple[str, str]:
        ports = {device["port"] for device in self.truth["vxlan"].values()}
        return ("-d", ",".join(f"udp.port=={port}" for port in ports) + ",vxlan")

    def seen_at(self, vantage: str, display_filter: str) -> list[str]:
        """The interfaces (file order) where `vantage`'s file saw the frames tshark matches."""
        path = self.folder / self.file_of[vantage]
        names = json.loads(path.with_name(path.name + ".meta.json").read_text())["interfaces"]
        rows = tshark.fields(path, display_filter, "frame.interface_name", "sll.ifindex",
                             options=self.vxlan_option())
        return [names[index] if index else interface for interface, index, *_ in
                ([*row, ""] for row in rows)]


@pytest.fixture(scope="module")
def recording(path_recording) -> Recording:
    return Recording(*path_recording)


@pytest.fixture(scope="module")
def doc(recording) -> dict:
    return analyze_files(recording.files(), inventory=recording.inventory).to_dict()


def shifted(recording: Recording, node: str, seconds: float, into: Path) -> list[CaptureFile]:
    """The recording with `node`'s clock `seconds` off: its own capture and its pods'."""
    on_node = {f"node/{node}"} | {recording.pod_vantage(name) for name, pod in
                                  recording.pods.items() if pod.get("node") == node}
    for vantage, name in recording.file_of.items():
        source = recording.folder / name
        shutil.copy(source.with_name(name + ".meta.json"), into / (name + ".meta.json"))
        if vantage in on_node:
            subprocess.run(["editcap", "-t", str(seconds), str(source), str(into / name)],
                           check=True, capture_output=True, timeout=30)
        else:
            shutil.copy(source, into / name)
    return recording.files(into)


def syn_of(doc: dict, client: str) -> dict:
    found = [m for m in doc["messages"] if m["src"] == client and m["flags"] == "S"]
    assert len(found) == 1, client
    return found[0]


def answer_of(doc: dict, syn: dict) -> dict:
    return next(m for m in doc["messages"]
                if m["connection"] == syn["connection"] and m["flags"] == "SA")


def runs(hops: list[dict]) -> list[tuple[str, list[dict]]]:
    """The hops cut into each file's consecutive run: (vantage, its hops)."""
    found: list[tuple[str, list[dict]]] = []
    for hop in hops:
        vantage = hop["interface"].partition(":")[0]
        if found and found[-1][0] == vantage:
            found[-1][1].append(hop)
        else:
            found.append((vantage, [hop]))
    return found


def interfaces(run_hops: list[dict]) -> list[str]:
    return [hop["interface"].partition(":")[2] for hop in run_hops]


def assert_crosses_the_overlay(recording, hops, sender_node: str, receiver_node: str):
    """The hops' last on the sender's node and first on the receiver's are the VXLAN copy,
    named as the kernel's VXLAN devices (truth) and the inventory say."""
    by_vantage = dict(runs(hops))
    out, into = by_vantage[f"node/{sender_node}"][-1], by_vantage[f"node/{receiver_node}"][0]
    sender, receiver = (recording.truth["vxlan"][node] for node in (sender_node, receiver_node))
    for hop in (out, into):
        assert hop["tunnel"] == sender["kind"] == "vxlan"
        underlay = hop["underlay"]
        assert (underlay["src"], underlay["dst"]) == (sender["local"], receiver["local"])
        assert (underlay["src_node"], underlay["dst_node"]) == (sender_node, receiver_node)
        assert (underlay["port"], underlay["vni"]) == (sender["port"], sender["vni"])
        assert underlay["name"] == (f"VXLAN {sender['port']} {sender_node} → {receiver_node}, "
                                    f"vni {sender['vni']}")
    assert (out["direction"], into["direction"]) == ("out", "in")
    assert not [h for h in hops if h.get("tunnel") and h not in (out, into)]


# -- every hop, in path order ---------------------------------------------------------------


def test_it_lists_every_hop_of_a_request_to_node_2_in_path_order(recording, doc):
    request = recording.request("cluster-ip", crossed=True)
    client_node, backend_node = request["from"]["node"], request["served_by_node"]
    client_port = split_endpoint(request["from"]["socket"])[1]
    syn = syn_of(doc, request["from"]["socket"])
    path = [f"pod/{request['from']['pod']}", f"node/{client_node}", f"node/{backend_node}",
            recording.pod_vantage(request["served_by"])]
    assert [vantage for vantage, _ in runs(syn["hops"])] == path
    # Each file's run is every interface tshark finds the SYN on in that file, in its order.
    syn_filter = f"tcp.srcport == {client_port} && tcp.flags.syn == 1 && tcp.flags.ack == 0"
    for vantage, run_hops in runs(syn["hops"]):
        assert interfaces(run_hops) == recording.seen_at(vantage, syn_filter), vantage
    assert_crosses_the_overlay(recording, syn["hops"], client_node, backend_node)
    # Addressed to the Service until the client's node rewrote it, to the backend after.
    vip, backend = request["service"]["vip"], request["backend_endpoint"]
    destinations = [hop["dst"] for hop in syn["hops"]]
    rewritten = destinations.index(backend)
    assert set(destinations[:rewritten]) == {vip} and set(destinations[rewritten:]) == {backend}
    assert syn["hops"][rewritten]["interface"].startswith(f"node/{client_node}:")
    # The answer takes the same path back, and the client's node undoes the DNAT.
    answer = answer_of(doc, syn)
    assert [vantage for vantage, _ in runs(answer["hops"])] == path[::-1]
    assert_crosses_the_overlay(recording, answer["hops"], backend_node, client_node)
    assert answer["hops"][-1]["src"] == vip


@pytest.mark.parametrize("seconds", [-0.3, 0.3], ids=["behind", "ahead"])
def test_it_keeps_path_order_when_the_backend_node_s_clock_is_off(recording, seconds,
                                                                   tmp_path):
    request = recording.request("cluster-ip", crossed=True)
    client_node, backend_node = request["from"]["node"], request["served_by_node"]
    files = shifted(recording, backend_node, seconds, tmp_path)
    skewed = analyze_files(files, inventory=recording.inventory).to_dict()
    syn = syn_of(skewed, request["from"]["socket"])
    path = [f"pod/{request['from']['pod']}", f"node/{client_node}", f"node/{backend_node}",
            recording.pod_vantage(request["served_by"])]
    assert [vantage for vantage, _ in runs(syn["hops"])] == path
    assert [vantage for vantage, _ in runs(answer_of(skewed, syn)["hops"])] == path[::-1]
    assert_crosses_the_overlay(recording, syn["hops"], client_node, backend_node)
    # Time order would have put the backend node's copies first one way or the other;
    # the hops' clocks disagree, the path does not.
    times = [hop["t"] for hop in syn["hops"]]
    assert times != sorted(times) or [h["t"] for h in answer_of(skewed, syn)["hops"]] != \
        sorted(h["t"] for h in answer_of(skewed, syn)["hops"])
    connection = next(c for c in skewed["connections"] if c["id"] == syn["connection"])
    assert connection["server"] == request["service"]["vip"]
    assert connection["server_after_nat"] == request["backend_endpoint"]
    dnat = [a for a in skewed["annotations"]
            if a["kind"] == "dnat" and a["connection"] == syn["connection"]]
    assert [(a["before"], a["after"], a["node"]) for a in dnat] == [
        (request["service"]["vip"], request["backend_endpoint"], client_node)]


# -- NAT, where it happened -------------------------------------------------------------------


def test_it_states_each_service_dnat_on_the_client_s_node(recording, doc):
    cluster = [r for r in recording.truth["requests"] if r["kind"] == "cluster-ip"]
    for request in cluster:
        syn = syn_of(doc, request["from"]["socket"])
        found = [a for a in doc["annotations"] if a["connection"] == syn["connection"]
                 and a["kind"] in ("dnat", "snat")]
        assert [(a["kind"], a["before"], a["after"], a["node"]) for a in found] == [
            ("dnat", request["service"]["vip"], request["backend_endpoint"],
             request["dnat_on"])]
        assert request["dnat_on"] == request["from"]["node"]
        for hop in (found[0]["from_hop"], found[0]["to_hop"]):
            assert hop["interface"].startswith(f"node/{request['dnat_on']}:")


def test_it_states_the_node_port_s_dnat_and_snat_on_the_node_it_entered(recording, doc):
    request = recording.request("node-port", crossed=True)
    entry, backend_node = request["entry_node"], request["served_by_node"]
    syn = syn_of(doc, request["from"]["socket"])
    found = {a["kind"]: a for a in doc["annotations"] if a["connection"] == syn["connection"]
             and a["kind"] in ("dnat", "snat")}
    assert (found["dnat"]["before"], found["dnat"]["after"], found["dnat"]["node"]) == (
        request["entry"], request["backend_endpoint"], request["dnat_on"])
    assert (found["snat"]["before"], found["snat"]["after"], found["snat"]["node"]) == (
        request["from"]["socket"], request["backend_saw_client"], request["snat_on"])
    assert request["dnat_on"] == request["snat_on"] == entry
    vantages = [vantage for vantage, _ in runs(syn["hops"])]
    outside = next(v for v in recording.file_of if not v.startswith(("pod/", "node/")))
    assert vantages == [outside, f"node/{entry}", f"node/{backend_node}",
                        recording.pod_vantage(request["served_by"])]
    assert_crosses_the_overlay(recording, syn["hops"], entry, backend_node)
    assert syn["hops"][-1]["src"] == request["backend_saw_client"]


def test_it_reaches_both_backends(recording, doc):
    served = {r["backend_endpoint"] for r in recording.truth["requests"] if r["served_by"]}
    assert all(recording.truth["reached"].values()) and len(recording.truth["reached"]) == 2
    reached = {c["server_after_nat"] for c in doc["connections"]
               if c["handshake"] == "complete"}
    assert reached == served
    backends = {r["served_by"] for r in recording.truth["requests"]}
    assert {recording.pods[name]["node"] for name in backends} == set(recording.nodes)


# -- the drawing ------------------------------------------------------------------------------


def test_the_layout_groups_lifelines_by_node(recording, doc):
    layout = build_layout(doc)
    request = recording.request("cluster-ip", crossed=True)
    client_node = request["from"]["node"]
    assert layout.nodes[0].node == client_node
    assert {group.node for group in layout.nodes} == set(recording.nodes)
    lanes = layout.lanes
    assert [lane.index for lane in lanes] == list(range(len(lanes)))
    assert [lane.x for lane in lanes] == sorted(lane.x for lane in lanes)
    for group in layout.nodes:
        members = lanes[group.first_lane:group.last_lane + 1]
        assert {lane.node for lane in members} == {group.node}
        assert not [lane for lane in lanes if lane.node == group.node and lane not in members]
        for lane in members:  # every head inside its node's box
            assert group.left < lane.x - lane.head_width / 2 < lane.x + lane.head_width / 2 \
                < group.right
    boxes = sorted((group.left, group.right) for group in layout.nodes)
    assert all(one[1] < other[0] for one, other in itertools.pairwise(boxes))
    # The client pod opens its node's group; each backend sits in its own node's group.
    ip_of = {name: pod["ips"][0] for name, pod in recording.pods.items()}
    client_name = request["from"]["pod"].split("/")[-1]
    first = layout.nodes[0]
    assert lanes[first.first_lane].ip == ip_of[client_name]
    for r in recording.truth["requests"]:
        lane = next(lane for lane in lanes if lane.ip == ip_of[r["served_by"]])
        assert lane.node == r["served_by_node"]
    # The cross-node SYN: from the client to the Service, on to the backend on the other node.
    syn = next(row for row in layout.rows if row.flags == "S"
               and row.src == request["from"]["socket"])
    assert lanes[syn.src_lane].ip == ip_of[client_name]
    assert lanes[syn.dst_lane].ip == split_endpoint(request["service"]["vip"])[0]
    assert lanes[syn.nat_lane].ip == ip_of[request["served_by"]]
    texts = {found["kind"]: found["text"] for found in syn.badges}
    vxlan = recording.truth["vxlan"][client_node]
    overlay = (f"VXLAN {vxlan['port']} {client_node} → {request['served_by_node']}, "
               f"vni {vxlan['vni']}")
    assert f"node/{client_node}: " in texts["hops"]
    assert f" ⇒ {overlay} ⇒ node/{request['served_by_node']}: " in texts["hops"]
    assert texts["dnat"].startswith(f"DNAT {request['service']['vip']} → "
                                    f"{request['backend_endpoint']} at ")
    assert texts["dnat"].endswith(f" on {client_node}")


def test_the_svg_and_the_text_diagrams_draw_the_node_groups(recording, doc, tmp_path):
    layout = build_layout(doc)
    svg = ET.fromstring(render_svg(layout))
    texts = ["".join(t.itertext()) for t in svg.iter(f"{SVG}text")]
    for node in recording.nodes:
        assert f"node {node}" in texts
    # The lane heads sit below the node headers.
    heads = [float(rect.get("y")) for g in svg.iter(f"{SVG}g") for rect in g.findall(f"{SVG}rect")
             if g.find(f"{SVG}title") is not None and rect.get("rx") == "6"]
    assert heads and min(heads) >= layout.node_head_height > 0
    mermaid = render_mermaid(layout)
    plantuml = render_plantuml(layout)
    for node in recording.nodes:
        assert f"    box transparent node {node}" in mermaid
        assert f'box "node {node}"' in plantuml
    assert mermaid.count("    end\n") >= len(recording.nodes)
    from tests.render.conftest import mermaid_errors

    assert not mermaid_errors({"path": mermaid}, tmp_path)


def test_a_capture_of_one_node_s_pods_alone_is_not_grouped(recording):
    """The client pod's own capture, with no inventory: nothing says which node anything
    runs on, so the lanes keep their plain order."""
    vantage = next(v for v in recording.file_of if v.startswith("pod/"))
    model = analyze_files([CaptureFile.from_path(recording.folder / recording.file_of[vantage])])
    layout = build_layout(model.to_dict())
    model.close()
    assert layout.nodes == [] and layout.node_head_height == 0
    assert all(lane.node is None for lane in layout.lanes)
