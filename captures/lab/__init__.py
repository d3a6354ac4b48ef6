"""The kviz lab: one Kubernetes node built from Linux network namespaces.

Pods on a bridge (or routed /32 links), kube-proxy's iptables DNAT for Service VIPs, a DNS pod,
two nginx backends, an optional Istio-like sidecar with mutual TLS and pooled connections, and
dumpcap at any pod or at the node. With two nodes (`Lab(..., nodes=2)` or `up(nodes=2)`), two
such nodes joined by a flannel-style VXLAN overlay, an outside client and a NodePort Service
(captures.lab.path records a request's whole path across them). It never touches the host's own
network namespace.
No Django here: callers pass the prefix and the state directory (captures.sources.lab does).
"""

from captures.lab.plan import InvalidPrefix, LabPlan
from captures.lab.topology import Lab, LabError

__all__ = ["InvalidPrefix", "Lab", "LabError", "LabPlan"]
