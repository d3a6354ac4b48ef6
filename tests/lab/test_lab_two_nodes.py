"""Two lab nodes joined by a VXLAN overlay, and the `path` scenario recorded at every hop.

One two-node lab serves the module and `path` runs once. What really happened is read outside
the captures: which backend served each request from the nginx access logs, the DNAT, NodePort
and MASQUERADE rules' counters from iptables-save in each node, the VXLAN devices from the
kernel. The captures are read with tshark, then the analysis engine's view of them is checked
against that truth: every hop in path order across both nodes, the VXLAN hop, the DNAT on the
client's node, the SNAT on node-2 for the NodePort path, each backend reached. The last test
takes the lab down and checks the host's own namespace is as it was.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from captures.analysis import CaptureFile, analyze_files
from captures.lab import Lab, kubeproxy, netns, path
from captures.lab.plan import OUTSIDE_ADDRESS, LabPlan
from tests.lab.conftest import lab_unavailable_reason, test_prefix
from tests.support import tshark

VXLAN = ("-d", "udp.port==8472,vxlan")  # tshark decodes only IANA's 4789 as VXLAN by itself


def host_state() -> dict:
    """The host's own network namespace, as far as a lab could have changed it."""
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout

    return {
        "iptables": [line for line in out("iptables-save").splitlines()
                     if not line.startswith("#")],
        "links": sorted((link["ifname"], link.get("address")) for link in
                        json.loads(out("ip", "-j", "link", "show"))),
        "addresses": out("ip", "-br", "addr"),
        "routes": out("ip", "route", "show", "table", "all"),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
        "resolv_conf": hashlib.sha256(Path("/etc/resolv.conf").read_bytes()).hexdigest(),
    }


class PathRun:
    """The lab, the path scenario's files, and the truth read outside the captures."""

    def __init__(self, lab: Lab, out_dir: Path, host_before: dict):
        self.lab, self.plan, self.out_dir, self.host_before = lab, lab.plan, out_dir, host_before
        self.paths = path.run(lab, out_dir)
        self.truth = json.loads((out_dir / "truth.json").read_text())
        self.inventory = json.loads((out_dir / "inventory.json").read_text())
        # The access logs themselves: the lab is fresh, so every line is this run's.
        self.access = {pod.name: self._access(pod.name) for pod in self.plan.backends}
        self.rules = {node.name: netns.ns_run(node.ns, ["iptables-save", "-c", "-t", "nat"])
                      .stdout for node in self.plan.nodes}

    def _access(self, pod_name: str) -> list[dict]:
        lines = self.lab.access_log(pod_name).read_text().splitlines()
        found = [re.search(r"client=(\S+):(\d+) \"GET / HTTP/1.1\" (\d+)", line) for line in lines]
        return [{"ip": m[1], "port": int(m[2]), "status": int(m[3])} for m in found if m]

    def served_by(self, ip: str, port: int | None = None) -> list[tuple[str, dict]]:
        return [(pod, entry) for pod, entries in self.access.items() for entry in entries
                if entry["ip"] == ip and (port is None or entry["port"] == port)]

    def counted(self, node, chain: str, *needles: str) -> int:
        """Packets of `chain`'s rules containing every needle, read with iptables-save -c."""
        total = 0
        for line in self.rules[node.name].splitlines():
            match = re.match(r"^\[(\d+):\d+\] -A (\S+) (.*)$", line)
            if match and match[2] == chain and all(n in match[3] for n in needles):
                total += int(match[1])
        return total

    def file(self, name: str) -> Path:
        return self.out_dir / name

    def interfaces(self, file_name: str) -> dict[str, str]:
        return json.loads((self.out_dir / f"{file_name}.meta.json").read_text())["interfaces"]

    def analysis(self) -> dict:
        files = [CaptureFile.from_path(p) for p in self.paths if p.suffix == ".pcapng"]
        return analyze_files(files, inventory=self.inventory).to_dict()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> PathRun:
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    host_before = host_state()
    lab = Lab(test_prefix("p"), tmp_path_factory.mktemp("twonodes") / "lab", nodes=2)
    try:
        lab.up()
        yield PathRun(lab, tmp_path_factory.mktemp("path"), host_before)
    finally:
        lab.down()


@pytest.fixture(scope="module")
def doc(run) -> dict:
    return run.analysis()


def cluster_requests(run) -> list[tuple[int, str]]:
    """(client port, backend) for each request from the client pod, per the access logs."""
    client = run.plan.client.ip
    return sorted((entry["port"], pod) for pod, entry in run.served_by(client))


def node_port_request(run) -> tuple[str, int]:
    """The masqueraded source the backend saw for the NodePort request (its access log)."""
    entry = run.plan.node(2)
    served = run.served_by(entry.vxlan_address)
    assert [pod for pod, _ in served] == ["nginx-a"], run.access
    return served[0][1]["ip"], served[0][1]["port"]


def syn_from(doc: dict, source: str) -> dict:
    found = [m for m in doc["messages"] if m["src"] == source and m["flags"] == "S"]
    assert len(found) == 1, (source, [m["src"] for m in doc["messages"] if m["flags"] == "S"])
    return found[0]


def assert_in_path_order(hops: list[dict], expected: list[tuple]) -> None:
    """`expected` (interface, tunnel) pairs appear among the hops in this order (a bridge
    hop may sit between them), and the hops' times never go backwards."""
    seen = [(hop["interface"], hop.get("tunnel")) for hop in hops]
    position = 0
    for wanted in expected:
        assert wanted in seen[position:], (wanted, seen)
        position = seen.index(wanted, position) + 1
    times = [hop["t"] for hop in hops]
    assert times == sorted(times), seen


# -- the plan (no root needed) ------------------------------------------------------------------


def test_it_plans_two_nodes_with_their_own_pod_cidrs_and_a_node_port():
    plan = LabPlan("kvz", 2)
    assert plan.namespaces[:4] == ["kvz-node-1", "kvz-node-2", "kvz-uplink", "kvz-outside"]
    assert [node.pod_cidr for node in plan.nodes] == ["10.244.1.0/24", "10.244.2.0/24"]
    assert all(plan.pod(p.name).ip.startswith(f"10.244.{p.node}.") for p in plan.pods)
    rules = kubeproxy.nat_rules(plan).splitlines()
    nodeport = plan.service("nginx-nodeport")
    port = nodeport.ports[0]
    svc, ext = kubeproxy.svc_chain(nodeport, port), kubeproxy.ext_chain(nodeport, port)
    assert ext == "KUBE-EXT-" + svc.removeprefix("KUBE-SVC-")
    # kube-proxy's NodePort path: KUBE-NODEPORTS → KUBE-EXT (mark for masquerade, then the
    # Service's chain); KUBE-POSTROUTING masquerades what carries the 0x4000 mark.
    expected = [
        '-A KUBE-NODEPORTS -p tcp -m comment --comment "default/nginx-nodeport:http" -m tcp '
        f"--dport 30080 -j {ext}",
        f'-A {ext} -m comment --comment "masquerade traffic for default/nginx-nodeport:http '
        'external destinations" -j KUBE-MARK-MASQ',
        f"-A {ext} -j {svc}",
    ]
    assert [line for line in rules if line.startswith(("-A KUBE-NODEPORTS", f"-A {ext}"))] \
        == expected
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000" in rules
    assert "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN" in rules
    services = [line for line in rules if line.startswith("-A KUBE-SERVICES ")]
    assert services[-1].endswith("--dst-type LOCAL -j KUBE-NODEPORTS"), "kube-proxy keeps it last"
    assert nodeport.backends == ("nginx-a",) and plan.pod("nginx-a").node == 1


def test_it_keeps_the_one_node_plan_as_it_was():
    plan = LabPlan("kvz")
    assert plan.namespaces[:2] == ["kvz-node", "kvz-uplink"] and "kvz-outside" not in \
        plan.namespaces
    assert [node.pod_cidr for node in plan.nodes] == ["10.244.10.0/24"]
    assert "KUBE-EXT-" not in kubeproxy.nat_rules(plan)
    assert [s.type for s in plan.services] == ["ClusterIP"] * 3
    assert set(plan.any_layout_namespaces) == set(plan.namespaces) | set(
        LabPlan("kvz", 2).namespaces)


# -- the topology, read from the kernel ---------------------------------------------------------


def test_it_builds_two_nodes_with_their_own_pods_joined_by_vxlan(run):
    plan = run.plan
    assert set(plan.namespaces) <= netns.list_namespaces()
    for node in plan.nodes:
        links = {link["ifname"]: link for link in json.loads(
            netns.ip(node.ns, "-d", "-j", "addr", "show").stdout)}
        addresses = {name: [a["local"] for a in link["addr_info"]] for name, link in links.items()}
        assert addresses["eth0"] == [node.address]
        assert addresses["cbr0"] == [node.bridge_address]
        vxlan = links["flannel.1"]["linkinfo"]
        assert vxlan["info_kind"] == "vxlan"
        assert (vxlan["info_data"]["id"], vxlan["info_data"]["port"],
                vxlan["info_data"]["local"]) == (1, 8472, node.address)
        for pod in plan.pods_on(node):
            pod_addr = json.loads(netns.ip(plan.pod_ns(pod), "-j", "addr", "show", "eth0").stdout)
            assert pod_addr[0]["addr_info"][0]["local"] == pod.ip
            assert pod.ip.startswith(node.pod_cidr.rsplit(".", 2)[0] + ".")
    assert {plan.node_of(plan.pod(name)).index for name in plan.service("nginx").backends} == {1, 2}


def test_it_writes_the_files_the_inventory_and_the_truth(run):
    names = [p.name for p in run.paths]
    for vantage in path.VANTAGES:
        assert vantage.file_name in names and f"{vantage.file_name}.meta.json" in names
        assert len(tshark.fields(run.file(vantage.file_name), None, "frame.number")) > 0
    assert names[-2:] == ["inventory.json", "truth.json"]
    inventory = run.inventory
    assert [n["name"] for n in inventory["nodes"]] == [n.name for n in run.plan.nodes]
    assert all(n["interfaces"] for n in inventory["nodes"])
    pods = {p["name"]: p["node"] for p in inventory["pods"]}
    assert pods["ubuntu"] == pods["nginx-a"] == run.plan.node(1).name
    assert pods["nginx-b"] == run.plan.node(2).name
    nodeport = next(s for s in inventory["services"] if s["type"] == "NodePort")
    assert nodeport["ports"][0]["node_port"] == 30080
    assert run.truth["schema"] == "kviz.lab-path-truth/1"
    assert run.truth["captures"]["external/outside"] == "path-outside.pcapng"


def test_its_truth_agrees_with_the_access_logs_and_the_rule_counters(run):
    truth = run.truth
    by_port = dict(cluster_requests(run))
    cluster = [r for r in truth["requests"] if r["kind"] == "cluster-ip"]
    assert len(cluster) == len(by_port) <= path.MAX_CLUSTER_REQUESTS
    for request in cluster:
        port = int(request["from"]["socket"].rsplit(":", 1)[1])
        assert request["served_by"] == by_port[port] and request["http_code"] == 200
    assert set(by_port.values()) == {"nginx-a", "nginx-b"}, "each backend reached once at least"
    assert truth["reached"] == {"nginx-a": True, "nginx-b": True}

    node1, node2 = run.plan.nodes
    nginx, port = run.plan.service("nginx"), run.plan.service("nginx").ports[0]
    for name in ("nginx-a", "nginx-b"):
        sep = kubeproxy.sep_chain(nginx, port, f"{run.plan.pod(name).ip}:80")
        expected = sum(1 for pod in by_port.values() if pod == name)
        # Every Service connection from the client was DNATed on node-1, none on node-2.
        assert run.counted(node1, sep, "DNAT") == expected
        assert run.counted(node2, sep, "DNAT") == 0
        assert truth["counters"]["during"][node1.name]["dnat"][
            f"nginx:http -> {run.plan.pod(name).ip}:80"] == expected
    nodeport = next(s for s in run.plan.services if s.type == "NodePort")
    np_port = nodeport.ports[0]
    assert run.counted(node2, "KUBE-NODEPORTS", "--dport 30080") == 1
    assert run.counted(node2, kubeproxy.ext_chain(nodeport, np_port), "KUBE-MARK-MASQ") == 1
    assert run.counted(node2, "KUBE-POSTROUTING", "MASQUERADE") == 1
    assert run.counted(node1, "KUBE-NODEPORTS", "--dport 30080") == 0
    assert run.counted(node1, "KUBE-POSTROUTING", "MASQUERADE") == 0
    assert truth["counters"]["during"][node2.name]["nodeport"] == 1
    assert truth["counters"]["during"][node2.name]["masquerade"] == 1

    masqueraded = node_port_request(run)
    node_port = next(r for r in truth["requests"] if r["kind"] == "node-port")
    assert node_port["backend_saw_client"] == f"{masqueraded[0]}:{masqueraded[1]}"
    entries = node_port["conntrack"][node2.name]
    assert entries[0]["original"] == (f"{node_port['from']['socket']} -> "
                                      f"{node2.address}:30080")
    assert entries[0]["reply"] == (f"{run.plan.pod('nginx-a').ip}:80 -> "
                                   f"{masqueraded[0]}:{masqueraded[1]}")
    for node in (node1, node2):
        vxlan = truth["vxlan"][node.name]
        assert (vxlan["device"], vxlan["vni"], vxlan["port"], vxlan["local"]) == (
            "flannel.1", 1, 8472, node.address)
        assert vxlan["tx_packets_during"] > 0 and vxlan["rx_packets_during"] > 0


# -- the captures, read with tshark -----------------------------------------------------------


def test_it_carries_the_cross_node_request_in_vxlan_vni_1_on_udp_8472(run):
    node1, node2 = run.plan.nodes
    nginx_b = run.plan.pod("nginx-b")
    port = next(port for port, pod in cluster_requests(run) if pod == "nginx-b")
    rows = tshark.fields(run.file("path-node-1.pcapng"),
                         f"vxlan && tcp.srcport == {port} && tcp.flags.syn == 1",
                         "ip.src", "ip.dst", "udp.dstport", "vxlan.vni", options=VXLAN)
    assert rows == [[node1.address, node2.address, "8472", "1"]]
    # The inner packet is the DNATed one: the client pod to nginx-b's own address.
    inner = tshark.fields(run.file("path-node-1.pcapng"),
                          f"vxlan && tcp.srcport == {port} && tcp.flags.syn == 1 && "
                          f"ip.dst == {nginx_b.ip} && ip.src == {run.plan.client.ip}",
                          "frame.number", options=VXLAN)
    assert len(inner) == 1
    rows = tshark.fields(run.file("path-node-2.pcapng"),
                         f"vxlan && tcp.srcport == {port} && tcp.flags.syn == 1",
                         "ip.src", "ip.dst", "udp.dstport", "vxlan.vni", options=VXLAN)
    assert rows == [[node1.address, node2.address, "8472", "1"]]
    # A request nginx-a served never touched the overlay.
    local = next(port for port, pod in cluster_requests(run) if pod == "nginx-a")
    assert tshark.fields(run.file("path-node-1.pcapng"), f"vxlan && tcp.port == {local}",
                         "frame.number", options=VXLAN) == []


def test_it_dnats_on_the_client_node_between_its_veth_and_flannel(run):
    port = next(port for port, pod in cluster_requests(run) if pod == "nginx-b")
    names = run.interfaces("path-node-1.pcapng")
    rows = tshark.fields(run.file("path-node-1.pcapng"),
                         f"tcp.srcport == {port} && tcp.flags.syn == 1 && !vxlan",
                         "sll.ifindex", "ip.dst", options=VXLAN)
    seen = {(names[index], dst) for index, dst in rows}
    vip = run.plan.service("nginx").cluster_ip
    assert (run.plan.client.veth, vip) in seen
    assert ("flannel.1", run.plan.pod("nginx-b").ip) in seen
    assert not [dst for _, dst in seen if dst == vip and _ == "flannel.1"]


def test_it_masquerades_the_node_port_request_on_node_2(run):
    node2 = run.plan.node(2)
    snat_ip, snat_port = node_port_request(run)
    names = run.interfaces("path-node-2.pcapng")
    rows = tshark.fields(run.file("path-node-2.pcapng"), "tcp.flags.syn == 1 && "
                         "tcp.flags.ack == 0 && !vxlan", "sll.ifindex", "ip.src", "tcp.srcport",
                         "ip.dst", "tcp.dstport", options=VXLAN)
    seen = {(names[index], *rest) for index, *rest in rows}
    outside = tshark.fields(run.file("path-outside.pcapng"), "tcp.flags.syn == 1 && "
                            "tcp.flags.ack == 0", "tcp.srcport")
    client_port = outside[0][0]
    assert ("eth0", OUTSIDE_ADDRESS, client_port, node2.address, "30080") in seen
    assert ("flannel.1", snat_ip, str(snat_port), run.plan.pod("nginx-a").ip, "80") in seen
    # The outside client only ever talks to node-2's address.
    peers = tshark.fields(run.file("path-outside.pcapng"), "tcp", "ip.src", "ip.dst")
    assert {tuple(row) for row in peers} == {(OUTSIDE_ADDRESS, node2.address),
                                             (node2.address, OUTSIDE_ADDRESS)}


# -- the analysis engine, judged by that truth --------------------------------------------------


def test_the_dashboard_offers_both_nodes_and_names_their_interfaces(run, settings):
    from captures.sources import lab as source

    settings.DATA_DIR = run.lab.state_dir.parent.parent  # <data>/lab/<prefix>
    settings.KVIZ_LAB_PREFIX = run.lab.prefix
    targets = {t.id: t for t in source.list_targets()}
    for node in run.lab.plan.nodes:
        assert targets[f"node/{node.name}"].netns == node.ns
    inventory = source.inventory()
    named = {n["name"]: n["interfaces"] for n in inventory["nodes"]}
    for node in run.lab.plan.nodes:
        assert "flannel.1" in named[node.name].values()


def test_it_shows_every_hop_of_each_service_request_in_path_order(run, doc):
    plan = run.plan
    n1, n2 = (f"node/{node.name}" for node in plan.nodes)
    client = plan.client
    for port, backend_name in cluster_requests(run):
        backend = plan.pod(backend_name)
        syn = syn_from(doc, f"{client.ip}:{port}")
        if backend_name == "nginx-a":  # same node: veth to veth, no overlay
            expected = [("pod/default/ubuntu:eth0", None), (f"{n1}:{client.veth}", None),
                        (f"{n1}:{backend.veth}", None), ("pod/default/nginx-a:eth0", None)]
            assert not [h for h in syn["hops"] if h.get("tunnel")]
        else:
            expected = [("pod/default/ubuntu:eth0", None), (f"{n1}:{client.veth}", None),
                        (f"{n1}:flannel.1", None), (f"{n1}:eth0", "vxlan"),
                        (f"{n2}:eth0", "vxlan"), (f"{n2}:flannel.1", None),
                        (f"{n2}:{backend.veth}", None), ("pod/default/nginx-b:eth0", None)]
        assert_in_path_order(syn["hops"], expected)
        assert syn["hops"][0]["interface"] == "pod/default/ubuntu:eth0"
        assert syn["hops"][-1]["interface"] == f"pod/default/{backend_name}:eth0"
        assert syn["hops"][-1]["dst"] == f"{backend.ip}:80"


def test_it_shows_the_dnat_on_the_client_node_to_the_backend_that_served(run, doc):
    vip = run.plan.service("nginx").cluster_ip
    n1 = f"node/{run.plan.node(1).name}:"
    connections = {c["client"]: c for c in doc["connections"]}
    for port, backend_name in cluster_requests(run):
        connection = connections[f"{run.plan.client.ip}:{port}"]
        backend_ip = run.plan.pod(backend_name).ip
        assert connection["server"] == f"{vip}:80"
        assert connection["server_after_nat"] == f"{backend_ip}:80"
        dnat = [a for a in doc["annotations"]
                if a["kind"] == "dnat" and a["connection"] == connection["id"]]
        assert [(a["before"], a["after"]) for a in dnat] == [(f"{vip}:80", f"{backend_ip}:80")]
        assert dnat[0]["from_hop"]["interface"] == f"{n1}{run.plan.client.veth}"
        assert dnat[0]["to_hop"]["interface"].startswith(n1)


def test_it_shows_the_node_port_path_with_the_snat_on_node_2(run, doc):
    plan = run.plan
    n1, n2 = (f"node/{node.name}" for node in plan.nodes)
    nginx_a = plan.pod("nginx-a")
    snat_ip, snat_port = node_port_request(run)
    node2 = plan.node(2)
    connection = next(c for c in doc["connections"]
                      if c["server"] == f"{node2.address}:30080")
    outside_socket = connection["client"]
    assert outside_socket.startswith(f"{OUTSIDE_ADDRESS}:")
    assert connection["server_after_nat"] == f"{nginx_a.ip}:80"
    found = {a["kind"]: a for a in doc["annotations"] if a["connection"] == connection["id"]}
    assert (found["dnat"]["before"], found["dnat"]["after"]) == (
        f"{node2.address}:30080", f"{nginx_a.ip}:80")
    assert (found["snat"]["before"], found["snat"]["after"]) == (
        outside_socket, f"{snat_ip}:{snat_port}")
    for kind in ("dnat", "snat"):
        assert found[kind]["from_hop"]["interface"] == f"{n2}:eth0"
        assert found[kind]["to_hop"]["interface"] == f"{n2}:flannel.1"

    syn = syn_from(doc, outside_socket)
    assert_in_path_order(syn["hops"], [
        ("external/outside:eth0", None), (f"{n2}:eth0", None), (f"{n2}:flannel.1", None),
        (f"{n2}:eth0", "vxlan"), (f"{n1}:eth0", "vxlan"), (f"{n1}:flannel.1", None),
        (f"{n1}:{nginx_a.veth}", None), ("pod/default/nginx-a:eth0", None)])
    assert syn["hops"][-1]["src"] == f"{snat_ip}:{snat_port}"
    # The reply: node-1 → overlay → node-2, un-NATed there, out to the outside client.
    reply = next(m for m in doc["messages"]
                 if m["connection"] == connection["id"] and m["flags"] == "SA")
    assert_in_path_order(reply["hops"], [
        ("pod/default/nginx-a:eth0", None), (f"{n1}:{nginx_a.veth}", None),
        (f"{n1}:flannel.1", None), (f"{n1}:eth0", "vxlan"), (f"{n2}:eth0", "vxlan"),
        (f"{n2}:flannel.1", None), (f"{n2}:eth0", None), ("external/outside:eth0", None)])
    assert reply["hops"][-1]["src"] == f"{node2.address}:30080"


def test_it_reaches_each_backend_the_access_logs_name(run, doc):
    reached = {c["server_after_nat"].rsplit(":", 1)[0] for c in doc["connections"]
               if c["handshake"] == "complete"}
    served = {run.plan.pod(pod).ip for pod, entries in run.access.items() if entries}
    assert served == {pod.ip for pod in run.plan.backends}
    assert reached == served
    answered = [h for h in doc["http"] if h["status"] == 200]
    assert len(answered) == sum(len(entries) for entries in run.access.values())


# -- last: down, and the host as it was -------------------------------------------------------


def test_it_leaves_the_host_namespace_untouched_and_nothing_behind(run):
    run.lab.down()
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(f"{run.lab.prefix}-")]
    assert not any(Path("/etc/netns", ns).exists() for ns in run.plan.namespaces)
    assert host_state() == run.host_before
