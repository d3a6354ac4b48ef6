"""Run the network-namespace lab: up, down, status, run SCENARIO --out DIR.

    python manage.py kviz lab up [--prefix P] [--sidecar/--no-sidecar] [--mode auto|bridge|routed]
                                 [--nodes 1|2]
    python manage.py kviz lab down [--prefix P]
    python manage.py kviz lab status [--prefix P]
    python manage.py kviz lab run pod|node|mesh --out DIR [--prefix P]
    python manage.py kviz lab run fault-NAME --out DIR [--prefix P]   # + truth.json
    python manage.py kviz lab run path --out DIR [--prefix P]   # two nodes; + truth.json

Needs root (namespaces, veths, iptables inside the lab's namespaces; never the host's).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from captures.lab import InvalidPrefix, LabError, faults, netns, path, scenarios
from captures.lab.capture import CaptureFailed
from captures.lab.plan import NODE_COUNTS
from captures.lab.topology import MODES
from captures.lab.workloads import WorkloadFailed

EXPECTED_FAILURES = (LabError, InvalidPrefix, netns.CommandFailed, WorkloadFailed, CaptureFailed,
                     OSError)


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="lab_action", required=True)

    def action(name: str, help_text: str):
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument("--prefix", help="namespace name prefix (default: KVIZ_LAB_PREFIX)")
        return sub

    up = action("up", "create the lab (idempotent)")
    up.add_argument("--sidecar", action=argparse.BooleanOptionalAction, default=False,
                    help="give the client pod its Istio-like sidecar (default: no)")
    up.add_argument("--mode", choices=MODES, default="auto",
                    help="bridge (cbr0 + br_netfilter), routed (/32 links) or auto")
    up.add_argument("--nodes", type=int, choices=NODE_COUNTS, default=None,
                    help="1 (the default for a new lab) or 2: two nodes joined by a VXLAN "
                    "overlay, with an outside client and a NodePort Service")
    action("down", "remove everything the lab created")
    action("status", "show the lab's namespaces and processes")
    run_parser = action("run", "run a scenario or a fault and write its captures (brings the "
                        "lab up); a fault and `path` (two nodes) also write truth.json")
    run_parser.add_argument("scenario", choices=[*sorted(scenarios.SCENARIOS), path.NAME,
                                                 *faults.FAULTS])
    run_parser.add_argument("--out", required=True, help="directory for the captures")


def preflight() -> str | None:
    """Why the lab cannot run here, in one line, or None."""
    if os.geteuid() != 0:
        return ("kviz lab needs root: it creates network namespaces, veth pairs and iptables "
                "rules (run it as root)")
    if shutil.which("ip") is None:
        return "kviz lab needs the `ip` command (iproute2)"
    if not os.path.exists("/proc/self/ns/net"):
        return "kviz lab needs network namespace support in the kernel"
    try:
        netns.list_namespaces()
    except netns.CommandFailed as exc:
        return f"kviz lab cannot use network namespaces here: {exc}"
    return None


def run(options: dict, out, err) -> int:
    problem = preflight()
    if problem:
        err.write(problem)
        return 2
    from captures.sources.lab import get_lab  # after preflight: it reads Django settings

    try:
        lab = get_lab(options.get("prefix"))
        return ACTIONS[options["lab_action"]](lab, options, out)
    except EXPECTED_FAILURES as exc:
        err.write(f"kviz lab {options['lab_action']}: {exc}")
        return 1


def do_up(lab, options: dict, out) -> int:
    status = lab.up(sidecar_enabled=options["sidecar"], mode=options["mode"],
                    nodes=options.get("nodes"))
    if lab.plan.node_count == 1:
        where = f"node namespace {lab.plan.node_ns}"
    else:
        where = f"node namespaces {', '.join(node.ns for node in lab.plan.nodes)}"
    out.write(f"lab {lab.prefix} up: mode {status['mode']}, sidecar "
              f"{'on' if status['sidecar'] else 'off'}, {where}")
    return 0


def do_down(lab, options: dict, out) -> int:
    removed = lab.down()
    out.write(f"lab {lab.prefix} down" + (f": removed {', '.join(removed)}" if removed else
                                          ": nothing was up"))
    return 0


def do_status(lab, options: dict, out) -> int:
    status = lab.status()
    out.write(f"lab {lab.prefix}: {status['status']}")
    if status["status"] == "down":
        return 0
    out.write(f"  mode: {status['mode']}   sidecar: {'on' if status['sidecar'] else 'off'}   "
              f"state: {status['state_dir']}")
    for ns, present in status["namespaces"].items():
        out.write(f"  netns {ns}: {'present' if present else 'MISSING'}")
    for name, process in sorted(status["processes"].items()):
        out.write(f"  {name}: pid {process['pid']} {'running' if process['alive'] else 'DEAD'}")
    several = lab.plan.node_count > 1
    for node in lab.plan.nodes if several else ():
        out.write(f"  node {node.name}: {node.address}, pods {node.pod_cidr} (netns {node.ns})")
    for pod in lab.plan.pods:
        on = f", node {lab.plan.node_of(pod).name}" if several else ""
        out.write(f"  pod {pod.namespace}/{pod.name}: {pod.ip} (netns {lab.plan.pod_ns(pod)}"
                  f"{on})")
    for service in lab.plan.services:
        ports = ",".join(f"{p.port}{f':{p.node_port}' if p.node_port else ''}/"
                         f"{p.protocol.lower()}" for p in service.ports)
        out.write(f"  service {service.namespace}/{service.name}: {service.cluster_ip} {ports}")
    return 0 if status["status"] == "up" else 1


def do_run(lab, options: dict, out) -> int:
    name = options["scenario"]
    out_dir = Path(options["out"])
    if name == path.NAME:
        written = path.run(lab, out_dir)
    else:
        runner = faults.run if name in faults.FAULTS else scenarios.run
        written = runner(lab, name, out_dir)
    for file_path in written:
        out.write(str(file_path))
    return 0


ACTIONS = {"up": do_up, "down": do_down, "status": do_status, "run": do_run}
