"""The lab as a capture source: its pods and node as live targets, a capture on one, a
scenario's traffic.

Targets are addressed as the lab names its vantages: "pod/<namespace>/<pod>" or "node/<name>".
Thin on purpose: it resolves settings (prefix, data directory) and hands over to captures.lab,
which stays Django-free.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from captures.adapters import sniffer
from captures.lab import Lab, LabError, netns, scenarios
from captures.lab import inventory as lab_inventory
from captures.lab.capture import DumpcapRun
from captures.sources.base import (
    LiveSource,
    Target,
    TargetError,
    is_dns1123_label,
    is_dns1123_subdomain,
    register,
)

# What dumpcap records at each kind of lab target (see captures/lab/capture.py). Pods too are
# recorded on every interface, as cluster pod captures are (tcpdump -i any): a sidecar's
# traffic with its app (127.0.0.1:15001, 127.0.0.6) never leaves lo, and eth0 alone misses it.
LAB_LINKTYPES = {"pod": sniffer.ANY_LINKTYPE, "node": sniffer.ANY_LINKTYPE}
LAB_FAILURES: tuple[type[BaseException], ...] = (RuntimeError, OSError, ValueError, KeyError)


@dataclass(frozen=True)
class LabTarget:
    id: str  # "pod/default/ubuntu" or "node/kviz-node", as capture vantages are named
    kind: str  # pod | node
    name: str
    namespace: str | None  # the pod's Kubernetes namespace
    netns: str  # the Linux network namespace dumpcap runs in
    interface: str  # any: every interface of its namespace (lo, eth0; a node's veths)


def get_lab(prefix: str | None = None) -> Lab:
    return Lab(prefix or settings.KVIZ_LAB_PREFIX, Path(settings.DATA_DIR) / "lab")


def list_targets(prefix: str | None = None) -> list[LabTarget]:
    lab = get_lab(prefix)
    plan = lab.plan
    # Every node of the lab (two with `kviz lab up --nodes 2`), then every pod.
    targets = [LabTarget(f"node/{node.name}", "node", node.name, None, node.ns, "any")
               for node in plan.nodes]
    targets += [LabTarget(f"pod/{pod.namespace}/{pod.name}", "pod", pod.name, pod.namespace,
                          plan.pod_ns(pod), "any") for pod in plan.pods]
    return targets


def find_target(target_id: str, prefix: str | None = None) -> LabTarget:
    for target in list_targets(prefix):
        if target.id == target_id:
            return target
    raise LabError(f"no lab target {target_id!r}")


def start_capture(target: LabTarget | str, path: Path | None = None,
                  interface: str | None = None, prefix: str | None = None,
                  capture_filter: str = "") -> DumpcapRun:
    """Start dumpcap on a target. Without `path`, `capture.process.stdout` streams pcapng.

    `capture_filter` is a BPF expression. Call `capture.stop()` to end it (it waits for the
    last packets, so keep reading stdout meanwhile); the lab must be up.
    """
    if isinstance(target, str):
        target = find_target(target, prefix)
    if not get_lab(prefix).is_up():
        raise LabError("the lab is not up (python manage.py kviz lab up)")
    return DumpcapRun.start(target.netns, interface or target.interface, path, capture_filter)


def inventory(prefix: str | None = None) -> dict:
    """The lab as a kviz.inventory/1 document, as it is now (see docs/inventory.md)."""
    lab = get_lab(prefix)
    state = lab.read_state() or {}
    return lab_inventory.build(lab.plan, scenarios.node_interfaces(lab),
                               bool(state.get("sidecar")))


def run_traffic(name: str, prefix: str | None = None) -> None:
    """Run a scenario's traffic without capturing (brings the lab up if needed)."""
    scenarios.run_traffic(get_lab(prefix), name)


def run_scenario(name: str, out_dir: Path, prefix: str | None = None) -> list[Path]:
    return scenarios.run(get_lab(prefix), name, out_dir)


# -- the lab's targets for the dashboard --------------------------------------------------------


def targets(user=None) -> list[dict]:
    """The picker's lab targets (base offers them only to users with the host grant)."""
    try:
        up = get_lab().is_up()
        return [{"kind": "lab", "target": t.id, "type": t.kind, "up": up}
                for t in list_targets()]
    except LAB_FAILURES:
        return []  # no lab here (not root, no `ip netns`): nothing to offer


def _check_id(target_id) -> None:
    if not isinstance(target_id, str) or len(target_id) > 300:
        raise TargetError("lab target must be \"pod/<namespace>/<pod>\" or \"node/<name>\"")
    parts = target_id.split("/")
    if parts[0] == "pod" and len(parts) == 3:
        if is_dns1123_label(parts[1]) and is_dns1123_subdomain(parts[2]):
            return
        raise TargetError("pod namespace and name must follow Kubernetes' DNS-1123 rules")
    if parts[0] == "node" and len(parts) == 2:
        if is_dns1123_subdomain(parts[1]):
            return
        raise TargetError("node names must follow Kubernetes' DNS-1123 rules")
    raise TargetError("lab target must be \"pod/<namespace>/<pod>\" or \"node/<name>\"")


def resolve(target: dict, user=None) -> Target:
    target_id = target.get("target")
    _check_id(target_id)
    try:
        found = find_target(target_id)
        up = get_lab().is_up()
    except LAB_FAILURES as exc:
        raise TargetError(str(exc)) from None
    if not up:
        raise TargetError("the lab is not up (python manage.py kviz lab up)")
    return Target("lab", {"target": found.id}, LAB_LINKTYPES[found.kind])


class LabSource(LiveSource):
    def __init__(self, target_id: str, bpf: str = "", max_packets: int | None = None):
        self.target_id = target_id
        self.bpf = bpf
        self.max_packets = max_packets
        self.vantage = target_id
        self.interfaces = {}
        self.capture = None

    def open(self) -> None:
        target = find_target(self.target_id)
        # Cooked v2 carries interface indexes only; name them as they are now.
        self.interfaces = netns.links(target.netns) if target.interface == "any" else {}
        self.capture = start_capture(target, capture_filter=self.bpf)
        self.stream = self.capture.process.stdout

    def stop(self) -> None:
        if self.capture.process.poll() is None:
            # Not DumpcapRun.stop(): that waits, and dumpcap's last blocks need us reading.
            self.capture.process.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self.capture.process.poll() is None:
            os.kill(self.capture.process.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.capture:
            self.capture.stop()
            if self.capture.process.stdout:
                self.capture.process.stdout.close()

    def inventory(self) -> dict | None:
        return inventory()


def open_source(kind: str, spec: dict, bpf: str, max_packets: int | None = None,
                capture_id=None) -> LabSource:
    return LabSource(spec["target"], bpf, max_packets)


register(["lab"], resolve=resolve, targets=targets, open=open_source, host=True)
