"""The client pod's Istio-like sidecar: the REDIRECT rules and the outbound proxy process.

The rules mirror istio-iptables in the pod's own namespace (nat OUTPUT): outbound TCP goes to
the proxy on 15001, except traffic from the proxy's uid (its own upstream connections would
loop back to it) and traffic to loopback (the app talking to the proxy or to itself).
"""

from __future__ import annotations

from pathlib import Path

from captures.lab import netns, workloads
from captures.lab.plan import OUTBOUND_PORT, PROXY_UID, LabPlan


def redirect_rules() -> str:
    return "\n".join([
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
        ":ISTIO_OUTPUT - [0:0]",
        ":ISTIO_REDIRECT - [0:0]",
        "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
        "-A ISTIO_OUTPUT -d 127.0.0.0/8 -j RETURN",
        f"-A ISTIO_OUTPUT -p tcp -m owner ! --uid-owner {PROXY_UID} -j ISTIO_REDIRECT",
        f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}",
        "COMMIT",
        "",
    ])


def empty_nat_rules() -> str:
    return "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
           ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n"


def enable(plan: LabPlan, state_dir: Path) -> int:
    """Start a fresh outbound proxy (an empty pool), then redirect to it. Returns its pid."""
    started = workloads.start_outbound(plan, state_dir)
    netns.iptables_restore(plan.pod_ns(plan.client), redirect_rules())
    return started.pid


def disable(plan: LabPlan, pid: int | None) -> None:
    """Remove the redirect first, so nothing is sent to a proxy that is going away."""
    netns.iptables_restore(plan.pod_ns(plan.client), empty_nat_rules())
    stop_proxy(pid)


def stop_proxy(pid: int | None) -> None:
    if netns.alive(pid):
        netns.signal_and_wait(pid)
