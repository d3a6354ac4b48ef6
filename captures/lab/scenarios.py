"""Scenarios: bounded traffic in the lab, recorded by dumpcap at chosen vantage points.

A run, step by step:
1. bring the lab up if needed; switch the client's sidecar to what the scenario needs;
2. flush neighbour caches in the client, the node and the pods: a warm cache skips ARP and can
   change which interfaces a packet crosses, so every run starts cold and reads the same;
3. start every capture and wait until each is really capturing;
4. run the traffic (bounded: a fixed number of requests, each with a timeout);
5. wait briefly for the last packets (FIN/ACK), stop the captures (SIGINT flushes the files);
6. write `<file>.meta.json` beside each capture and one `inventory.json`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from captures.lab import capture, inventory, netns
from captures.lab.topology import Lab, LabError

SETTLE_BEFORE = 0.3  # let earlier connections finish closing before the capture starts
SETTLE_AFTER = 0.2  # let the last FIN/ACK reach every vantage point
CURL_TIMEOUT = 5
MESH_REQUESTS = 10


@dataclass(frozen=True)
class Vantage:
    file_name: str
    kind: str  # node | pod | outside (a two-node lab's external client)
    interface: str
    pod: str | None = None
    node: int | None = None  # kind node: which node (1-based); None: the first


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    sidecar: bool
    vantages: tuple[Vantage, ...]
    traffic: Callable[[Lab], None]
    nodes: int | None = None  # the lab layout it needs (brought up so); None: any


def curl(lab: Lab, *args: str) -> str:
    """curl from the client pod, by Service name through the pod's DNS search path."""
    argv = ["curl", "-sS", "--max-time", str(CURL_TIMEOUT), *args, "http://nginx/"]
    try:
        result = netns.ns_run(lab.plan.pod_ns(lab.plan.client), argv, timeout=CURL_TIMEOUT + 5)
    except netns.CommandFailed as exc:
        raise LabError(f"scenario traffic failed: {exc}") from exc
    return result.stdout


def one_head_request(lab: Lab) -> None:
    curl(lab, "-I")


def mesh_requests(lab: Lab) -> None:
    for _ in range(MESH_REQUESTS):
        code = curl(lab, "-o", "/dev/null", "-w", "%{http_code}")
        if code != "200":
            raise LabError(f"mesh request answered {code!r}, expected 200")


SCENARIOS = {
    s.name: s for s in (
        Scenario("pod", "curl -I http://nginx, seen from the client pod's eth0", False,
                 (Vantage("pod.pcapng", "pod", "eth0", "ubuntu"),), one_head_request),
        Scenario("node", "curl -I http://nginx, seen on every interface of the node", False,
                 (Vantage("node.pcapng", "node", "any"),), one_head_request),
        Scenario("mesh", f"{MESH_REQUESTS} requests through the client's sidecar (mTLS, pooled)",
                 True, (Vantage("mesh-node.pcapng", "node", "any"),
                        Vantage("mesh-pod.pcapng", "pod", "any", "ubuntu")), mesh_requests),
    )
}


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise LabError(f"unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})") from None


def vantage_ns(lab: Lab, vantage: Vantage) -> str:
    if vantage.kind == "node":
        return lab.plan.node(vantage.node or 1).ns
    if vantage.kind == "outside":
        return lab.plan.outside_ns
    return lab.plan.pod_ns(lab.plan.pod(vantage.pod))


def vantage_name(lab: Lab, vantage: Vantage) -> str:
    if vantage.kind == "node":
        return f"node/{lab.plan.node(vantage.node or 1).name}"
    if vantage.kind == "outside":
        return "external/outside"
    pod = lab.plan.pod(vantage.pod)
    return f"pod/{pod.namespace}/{pod.name}"


def node_interfaces(lab: Lab) -> dict:
    """What inventory.build takes: the only node's interfaces, or each node's by name."""
    if lab.plan.node_count == 1:
        return netns.links(lab.plan.node_ns)
    return {node.name: netns.links(node.ns) for node in lab.plan.nodes}


def _prepare(lab: Lab, chosen: Scenario) -> None:
    if chosen.nodes is not None and chosen.nodes != lab.plan.node_count:
        lab.up(sidecar_enabled=False, nodes=chosen.nodes)  # rebuilt with the other layout
    elif not lab.is_up():
        lab.up(sidecar_enabled=False)
    # The mesh scenario starts its proxy after the captures, so they show the proxy's first
    # connections (control plane, pooled upstreams) from their handshakes on.
    lab.set_sidecar(False)
    others = [lab.plan.outside_ns] if lab.plan.node_count > 1 else []
    for ns in [*(node.ns for node in lab.plan.nodes), *others,
               *(lab.plan.pod_ns(pod) for pod in lab.plan.pods)]:
        netns.flush_neighbours(ns)
    time.sleep(SETTLE_BEFORE)


def run_traffic(lab: Lab, name: str) -> None:
    """The scenario's traffic alone, without captures (a dashboard action)."""
    chosen = scenario(name)
    with lab.locked():
        _prepare(lab, chosen)
        if chosen.sidecar:
            lab.set_sidecar(True)
        chosen.traffic(lab)


def run(lab: Lab, name: str | Scenario, out_dir: Path) -> list[Path]:
    """Run scenario `name`, writing captures, meta files and inventory.json into `out_dir`.

    A Scenario object runs as given (captures.lab.faults builds one per fault)."""
    chosen = name if isinstance(name, Scenario) else scenario(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with lab.locked():
        _prepare(lab, chosen)
        running: list[tuple[Vantage, capture.DumpcapRun]] = []
        try:
            for vantage in chosen.vantages:
                path = out_dir / vantage.file_name
                path.unlink(missing_ok=True)
                running.append((vantage, capture.DumpcapRun.start(vantage_ns(lab, vantage),
                                                                  vantage.interface, path)))
            if chosen.sidecar:
                lab.set_sidecar(True)
            chosen.traffic(lab)
            time.sleep(SETTLE_AFTER)
        finally:
            for _, started in running:
                started.stop()
        written: list[Path] = []
        for vantage, started in running:
            interfaces = netns.links(vantage_ns(lab, vantage))
            written += [started.path,
                        capture.write_meta(started.path, vantage_name(lab, vantage), interfaces)]
        document = inventory.build(lab.plan, node_interfaces(lab), chosen.sidecar)
        inventory_path = out_dir / "inventory.json"
        inventory_path.write_text(json.dumps(document, indent=2) + "\n")
        written.append(inventory_path)
        return written
