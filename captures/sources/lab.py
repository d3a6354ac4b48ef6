"""The lab as a capture source: its targets, a capture on one, a scenario's traffic.

Thin on purpose: it resolves settings (prefix, data directory) and hands over to captures.lab.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from captures.lab import Lab, LabError, scenarios
from captures.lab.capture import Capture


@dataclass(frozen=True)
class LabTarget:
    id: str  # "pod/default/ubuntu" or "node/kviz-node", as capture vantages are named
    kind: str  # pod | node
    name: str
    namespace: str | None  # the pod's Kubernetes namespace
    netns: str  # the Linux network namespace dumpcap runs in
    interface: str  # pods: eth0, as tcpdump in a debug container; node: any


def get_lab(prefix: str | None = None) -> Lab:
    from django.conf import settings  # only here: the lab package itself stays Django-free

    return Lab(prefix or settings.KVIZ_LAB_PREFIX, Path(settings.DATA_DIR) / "lab")


def list_targets(prefix: str | None = None) -> list[LabTarget]:
    lab = get_lab(prefix)
    plan = lab.plan
    targets = [LabTarget(f"node/{plan.node_name}", "node", plan.node_name, None, plan.node_ns,
                         "any")]
    targets += [LabTarget(f"pod/{pod.namespace}/{pod.name}", "pod", pod.name, pod.namespace,
                          plan.pod_ns(pod), "eth0") for pod in plan.pods]
    return targets


def find_target(target_id: str, prefix: str | None = None) -> LabTarget:
    for target in list_targets(prefix):
        if target.id == target_id:
            return target
    raise LabError(f"no lab target {target_id!r}")


def start_capture(target: LabTarget | str, path: Path | None = None,
                  interface: str | None = None, prefix: str | None = None,
                  capture_filter: str = "") -> Capture:
    """Start dumpcap on a target. Without `path`, `capture.process.stdout` streams pcapng.

    `capture_filter` is a BPF expression. Call `capture.stop()` to end it (it waits for the
    last packets, so keep reading stdout meanwhile); the lab must be up.
    """
    if isinstance(target, str):
        target = find_target(target, prefix)
    if not get_lab(prefix).is_up():
        raise LabError("the lab is not up (python manage.py kviz lab up)")
    return Capture.start(target.netns, interface or target.interface, path, capture_filter)


def inventory(prefix: str | None = None) -> dict:
    """The lab as a kviz.inventory/1 document, as it is now (see docs/inventory.md)."""
    from captures.lab import inventory as lab_inventory
    from captures.lab import netns

    lab = get_lab(prefix)
    state = lab.read_state() or {}
    return lab_inventory.build(lab.plan, netns.links(lab.plan.node_ns),
                               bool(state.get("sidecar")))


def run_traffic(name: str, prefix: str | None = None) -> None:
    """Run a scenario's traffic without capturing (brings the lab up if needed)."""
    scenarios.run_traffic(get_lab(prefix), name)


def run_scenario(name: str, out_dir: Path, prefix: str | None = None) -> list[Path]:
    return scenarios.run(get_lab(prefix), name, out_dir)
