"""The `path` scenario: one request's whole path across a two-node lab, recorded everywhere at
once, with the truth read outside the captures.

What runs (the lab is brought up with two nodes if it is not):
1. from the client pod on node-1, `curl http://nginx/` (DNS, then the Service VIP), repeated
   until each of the Service's two backends (nginx-a on node-1, nginx-b on node-2) has served
   at least one request, at most MAX_CLUSTER_REQUESTS times: kube-proxy picks at random, and
   the request that lands on nginx-b crosses the VXLAN overlay;
2. from the "outside" namespace, `curl http://<node-2>:30080/`, the NodePort Service whose one
   endpoint is nginx-a on node-1: node-2 DNATs it, masquerades it to its flannel.1 address,
   sends it over the overlay, and the reply comes back node-1 → node-2 → outside.

Recorded by dumpcap at the same moment: the client pod (`-i any`), node-1 and node-2 (`-i any`),
both backend pods (eth0) and the outside client (eth0), as `path-*.pcapng` with their meta
files, `inventory.json` (both nodes, their pods, the Services, the NodePort) and `truth.json`
(schema kviz.lab-path-truth/1, see `run`): which backend answered each request (the nginx
access logs), the conntrack entries each node kept for them, the packet counters of the DNAT,
NodePort, masquerade-mark and MASQUERADE rules on both nodes, and the VXLAN devices (name, VNI,
UDP port, local address, MAC, FDB, packet counters).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from captures.lab import faults, kubeproxy, netns, scenarios
from captures.lab.plan import (
    OUTSIDE_ADDRESS,
    VXLAN_DEVICE,
    VXLAN_PORT,
    VXLAN_VNI,
    Service,
    ServicePort,
)
from captures.lab.scenarios import Scenario, Vantage
from captures.lab.topology import Lab, LabError

NAME = "path"
TRUTH_SCHEMA = "kviz.lab-path-truth/1"
DESCRIPTION = ("curl http://nginx from the client pod until both backends (one per node) "
               "answered, then the NodePort through node-2 from outside; recorded at every hop")
MAX_CLUSTER_REQUESTS = 16  # P(one backend picked all 16 times at random) = 2 * 2**-16
CURL_TIMEOUT = 5
TRAFFIC_DEADLINE = 60.0  # seconds, for all the requests together
CURL_WRITE_OUT = "%{http_code} %{local_ip} %{local_port}"
ACCESS_LOG_WAIT = 2.0  # seconds for nginx's access-log line after the response

VANTAGES = (
    Vantage("path-client.pcapng", "pod", "any", "ubuntu"),
    Vantage("path-node-1.pcapng", "node", "any", node=1),
    Vantage("path-node-2.pcapng", "node", "any", node=2),
    Vantage("path-nginx-a.pcapng", "pod", "eth0", "nginx-a"),
    Vantage("path-nginx-b.pcapng", "pod", "eth0", "nginx-b"),
    Vantage("path-outside.pcapng", "outside", "eth0"),
)
ENTRY_NODE = 2  # the node the outside client reaches the NodePort through


# -- evidence -----------------------------------------------------------------------------------


def nat_counters(lab: Lab) -> dict[str, dict]:
    """Per node: packets counted by kube-proxy's DNAT rules (per endpoint), its NodePort jump,
    the NodePort's masquerade mark and the MASQUERADE rule. nat rules count a connection's
    first packet only, so these are connections."""
    plan = lab.plan
    counters = {}
    for node in plan.nodes:
        dnat = {}
        nodeport = ext_mark = 0
        for service in plan.services:
            for port in service.ports:
                for name in service.backends:
                    endpoint = f"{plan.pod(name).ip}:{port.target_port}"
                    sep = kubeproxy.sep_chain(service, port, endpoint)
                    dnat[f"{service.name}:{port.name} -> {endpoint}"] = faults.rule_packets(
                        node.ns, "nat", sep, "DNAT")
                if service.type == "NodePort":
                    nodeport += faults.rule_packets(node.ns, "nat", "KUBE-NODEPORTS",
                                                    f"--dport {port.node_port}")
                    ext_mark += faults.rule_packets(
                        node.ns, "nat", kubeproxy.ext_chain(service, port), "KUBE-MARK-MASQ")
        counters[node.name] = {
            "dnat": dnat, "nodeport": nodeport, "nodeport_mark_masq": ext_mark,
            "masquerade": faults.rule_packets(node.ns, "nat", "KUBE-POSTROUTING", "MASQUERADE"),
        }
    return counters


def counter_deltas(before: dict, after: dict) -> dict:
    if isinstance(after, dict):
        return {key: counter_deltas(before.get(key, 0), value) for key, value in after.items()}
    return after - before


def vxlan_device(lab: Lab, node) -> dict:
    """The node's VXLAN device as the kernel describes it (not as the plan meant it)."""
    link = json.loads(netns.ip(node.ns, "-d", "-s", "-j", "link", "show", VXLAN_DEVICE)
                      .stdout)[0]
    data = link.get("linkinfo", {}).get("info_data", {})
    fdb = json.loads(netns.run(["bridge", "-n", node.ns, "-j", "fdb", "show", "dev",
                                VXLAN_DEVICE]).stdout or "[]")
    stats = link.get("stats64", link.get("stats", {}))
    return {
        "device": link["ifname"], "kind": link.get("linkinfo", {}).get("info_kind"),
        "vni": data.get("id"), "port": data.get("port"), "local": data.get("local"),
        "underlay_device": "eth0", "mac": link.get("address"), "mtu": link.get("mtu"),
        "fdb": [{"mac": entry.get("mac"), "dst": entry.get("dst")} for entry in fdb
                if entry.get("dst")],
        "tx_packets": stats.get("tx", {}).get("packets"),
        "rx_packets": stats.get("rx", {}).get("packets"),
    }


CONNTRACK_LINE = re.compile(
    r"^ipv4\s+2\s+(?P<proto>\w+)\s+\d+\s+\d+\s+(?:(?P<state>[A-Z_]+)\s+)?"
    r"src=(?P<src>\S+) dst=(?P<dst>\S+) sport=(?P<sport>\d+) dport=(?P<dport>\d+) .*?"
    r"src=(?P<rsrc>\S+) dst=(?P<rdst>\S+) sport=(?P<rsport>\d+) dport=(?P<rdport>\d+)")


def conntrack(lab: Lab, node) -> list[dict]:
    """The node namespace's conntrack table (/proc/net/nf_conntrack is per namespace)."""
    text = netns.ns_run(node.ns, ["cat", "/proc/net/nf_conntrack"], check=False).stdout
    entries = []
    for line in text.splitlines():
        match = CONNTRACK_LINE.match(line)
        if match and match["proto"] == "tcp":
            entries.append({
                "state": match["state"],
                "original": f"{match['src']}:{match['sport']} -> {match['dst']}:{match['dport']}",
                "reply": f"{match['rsrc']}:{match['rsport']} -> {match['rdst']}:{match['rdport']}",
            })
    return entries


def entries_from(entries: list[dict], source: str) -> list[dict]:
    return [entry for entry in entries if entry["original"].startswith(f"{source} ->")]


def parse_access(line: str) -> dict:
    match = re.search(r"pod=(\S+) server=(\S+) client=(\S+) \"([^\"]*)\" (\d+)", line)
    if not match:
        return {"line": line}
    return {"pod": match[1], "server": match[2], "client": match[3], "request": match[4],
            "status": int(match[5]), "line": line}


def curl_result(run: dict) -> dict:
    """curl's -w output: the status and the socket it used (the source of the request)."""
    words = run.get("stdout", "").split()
    if len(words) == 3 and words[0].isdigit():
        run.update(http_code=int(words[0]), local=f"{words[1]}:{words[2]}")
    else:
        run.update(http_code=None, local=None)
    return run


def served_request(lab: Lab, offsets: dict[str, int], answered: bool) -> list[dict]:
    """The access-log lines written since `offsets`, moving the offsets past them.

    nginx writes its line after sending the response, so curl may be done first: when the
    request was answered, wait (bounded) for the line."""
    if answered:
        netns.wait_until(lambda: any(faults.served_since(lab, offsets).values()),
                         ACCESS_LOG_WAIT)
    lines = faults.served_since(lab, offsets)
    for name in offsets:
        offsets[name] = faults.log_offset(lab.access_log(name))
    return [parse_access(line) for name in sorted(lines) for line in lines[name]]


# -- the traffic ----------------------------------------------------------------------------------


def drive(lab: Lab, truth: dict) -> None:
    plan = lab.plan
    nginx = plan.service("nginx")
    nodeport = next(s for s in plan.services if s.type == "NodePort")
    port: ServicePort = nodeport.ports[0]
    entry = plan.node(ENTRY_NODE)
    deadline = time.monotonic() + TRAFFIC_DEADLINE
    counters_before = nat_counters(lab)
    vxlan_before = {node.name: vxlan_device(lab, node) for node in plan.nodes}
    offsets = faults.access_log_offsets(lab)
    requests: list[dict] = []

    # 1. The client pod calls the Service until both backends answered (bounded).
    for _ in range(MAX_CLUSTER_REQUESTS):
        if time.monotonic() > deadline:
            break
        run = curl_result(faults.client_run(lab, _curl("http://nginx/"), CURL_TIMEOUT))
        served = served_request(lab, offsets, run["http_code"] == 200)
        requests.append(_cluster_ip_request(lab, nginx, run, served))
        reached = {r["served_by"] for r in requests if r.get("served_by")}
        if reached >= set(nginx.backends):
            break

    # 2. The outside client calls the NodePort on node-2.
    url = f"http://{entry.address}:{port.node_port}/"
    run = curl_result(faults.client_run(lab, _curl(url), CURL_TIMEOUT, ns=plan.outside_ns))
    served = served_request(lab, offsets, run["http_code"] == 200)
    requests.append(_node_port_request(lab, nodeport, port, entry, run, served))

    # 3. What the nodes kept: conntrack entries of these connections, counters, VXLAN devices.
    tables = {node.name: conntrack(lab, node) for node in plan.nodes}
    for request in requests:
        # The client's socket, and (NodePort) the masqueraded one node-1 saw instead.
        sources = {request["from"]["socket"], request["backend_saw_client"]} - {None}
        request["conntrack"] = {
            name: found for name, entries in tables.items()
            if (found := [e for source in sorted(sources) for e in entries_from(entries, source)])
        }
    counters_after = nat_counters(lab)
    vxlan_after = {node.name: vxlan_device(lab, node) for node in plan.nodes}
    for name, device in vxlan_after.items():
        device["tx_packets_during"] = device["tx_packets"] - vxlan_before[name]["tx_packets"]
        device["rx_packets_during"] = device["rx_packets"] - vxlan_before[name]["rx_packets"]
    served = {name: [] for name in offsets}
    for request in requests:
        if request.get("served_by"):
            served[request["served_by"]].append(request["access_log"]["line"])
    truth.update(
        requests=requests,
        reached={name: bool(lines) for name, lines in served.items()},
        served=served,
        counters={"before": counters_before, "after": counters_after,
                  "during": counter_deltas(counters_before, counters_after)},
        vxlan=vxlan_after,
    )
    failed = [r for r in requests if r["http_code"] != 200]
    if failed:
        truth["failed_requests"] = len(failed)


def _curl(url: str) -> list[str]:
    return ["curl", "-sS", "--max-time", str(CURL_TIMEOUT), "-o", "/dev/null", "-w",
            CURL_WRITE_OUT, url]


def _served_by(lines: list[dict]) -> tuple[str | None, dict | None]:
    if len(lines) != 1 or "pod" not in lines[0]:
        return None, (lines[0] if lines else None)
    return lines[0]["pod"], lines[0]


def _cluster_ip_request(lab: Lab, service: Service, run: dict, lines: list[dict]) -> dict:
    plan = lab.plan
    client = plan.client
    backend, line = _served_by(lines)
    backend_node = plan.node_of(plan.pod(backend)).name if backend else None
    client_node = plan.node_of(client).name
    port = service.ports[0]
    return {
        "kind": "cluster-ip", "url": run["argv"][-1], "exit_code": run["exit_code"],
        "http_code": run["http_code"], "elapsed_s": run["elapsed_s"],
        "started_at": run["started_at"], "stderr": run["stderr"],
        "from": {"pod": f"{client.namespace}/{client.name}", "node": client_node,
                 "socket": run["local"]},
        "service": {"name": service.name, "vip": f"{service.cluster_ip}:{port.port}"},
        "dnat_on": client_node,
        "served_by": backend, "served_by_node": backend_node,
        "backend_endpoint": f"{plan.pod(backend).ip}:{port.target_port}" if backend else None,
        # The backend's view of the client (nginx's $remote_addr:$remote_port): no SNAT
        # between pods, so the client's own socket.
        "backend_saw_client": line["client"] if line else None,
        "crossed_overlay": backend_node is not None and backend_node != client_node,
        "access_log": line,
    }


def _node_port_request(lab: Lab, service: Service, port: ServicePort, entry, run: dict,
                       lines: list[dict]) -> dict:
    plan = lab.plan
    backend, line = _served_by(lines)
    backend_node = plan.node_of(plan.pod(backend)).name if backend else None
    return {
        "kind": "node-port", "url": run["argv"][-1], "exit_code": run["exit_code"],
        "http_code": run["http_code"], "elapsed_s": run["elapsed_s"],
        "started_at": run["started_at"], "stderr": run["stderr"],
        "from": {"outside": plan.outside_ns, "ip": OUTSIDE_ADDRESS, "socket": run["local"]},
        "service": {"name": service.name, "vip": f"{service.cluster_ip}:{port.port}",
                    "node_port": port.node_port, "external_traffic_policy": "Cluster"},
        "entry_node": entry.name, "entry": f"{entry.address}:{port.node_port}",
        "dnat_on": entry.name,
        "served_by": backend, "served_by_node": backend_node,
        "backend_endpoint": f"{plan.pod(backend).ip}:{port.target_port}" if backend else None,
        # MASQUERADE on the way out of node-2's flannel.1: the backend sees node-2's flannel.1
        # address and a port --random-fully chose, never the outside client.
        "snat_on": entry.name,
        "backend_saw_client": line["client"] if line else None,
        "crossed_overlay": backend_node is not None and backend_node != entry.name,
        "access_log": line,
    }


# -- the run ------------------------------------------------------------------------------------


def run(lab: Lab, out_dir: Path) -> list[Path]:
    """Run the path scenario; writes the captures, their meta files, inventory.json, truth.json.

    truth.json (schema kviz.lab-path-truth/1): schema, scenario, description, started_at,
    finished_at; lab {prefix, mode, nodes [{name, netns, address, pod_cidr, bridge}]},
    outside {netns, ip}; captures {vantage name: file}; requests (in order, each: kind
    cluster-ip|node-port, url, exit_code, http_code, from {.., socket}, service, dnat_on,
    snat_on (node-port), served_by, served_by_node, backend_endpoint, backend_saw_client,
    crossed_overlay, access_log, conntrack {node: entries}); reached {backend: bool}; served
    {backend: access-log lines}; counters {before, after, during: {node: {dnat {rule: n},
    nodeport, nodeport_mark_masq, masquerade}}}; vxlan {node: {device, kind, vni, port, local,
    underlay_device, mac, mtu, fdb, tx_packets, rx_packets, tx_packets_during,
    rx_packets_during}}.
    """
    out_dir = Path(out_dir)
    truth: dict = {"schema": TRUTH_SCHEMA, "scenario": NAME, "description": DESCRIPTION,
                   "started_at": faults._now()}
    scenario = Scenario(NAME, DESCRIPTION, False, VANTAGES, lambda lab: drive(lab, truth),
                        nodes=2)
    with lab.locked():
        written = scenarios.run(lab, scenario, out_dir)
        state = lab.read_state() or {}
    plan = lab.plan
    if plan.node_count != 2:  # scenarios.run brought it up with two; anything else is a bug
        raise LabError(f"the path scenario needs two nodes, the lab has {plan.node_count}")
    truth = {
        **truth, "finished_at": faults._now(),
        "lab": {"prefix": lab.prefix, "mode": state.get("mode"), "nodes": [
            {"name": node.name, "netns": node.ns, "address": node.address,
             "pod_cidr": node.pod_cidr, "bridge": "cbr0" if state.get("mode") == "bridge"
             else None, "pods": [pod.name for pod in plan.pods_on(node)]}
            for node in plan.nodes]},
        "outside": {"netns": plan.outside_ns, "ip": OUTSIDE_ADDRESS},
        "overlay": {"kind": "vxlan", "device": VXLAN_DEVICE, "vni": VXLAN_VNI,
                    "port": VXLAN_PORT},
        "captures": {scenarios.vantage_name(lab, v): v.file_name for v in VANTAGES},
    }
    truth_path = out_dir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=2) + "\n")
    return [*written, truth_path]
