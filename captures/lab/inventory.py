"""The lab as a `kviz.inventory/1` document (docs/inventory.md): what names its IPs carry."""

from __future__ import annotations

import datetime

from captures.lab.plan import NODE_ADDRESS, POD_CIDR, LabPlan, Pod

SCHEMA = "kviz.inventory/1"


def build(plan: LabPlan, node_interfaces: dict[int, str], sidecar: bool) -> dict:
    """`sidecar`: whether the client pod has its proxy (the backends always have theirs)."""
    taken_at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "schema": SCHEMA,
        "taken_at": taken_at,
        "cluster": f"lab/{plan.prefix}",
        "nodes": [{
            "name": plan.node_name,
            "addresses": [NODE_ADDRESS],
            "pod_cidr": POD_CIDR,
            "interfaces": {str(i): name for i, name in sorted(node_interfaces.items())},
        }],
        "pods": [
            {"namespace": pod.namespace, "name": pod.name, "ips": [pod.ip],
             "node": plan.node_name, "host_network": False,
             "containers": [*pod.containers, *_proxy_container(pod, sidecar)],
             "labels": dict(pod.labels)}
            for pod in plan.pods
        ],
        "services": [
            {"namespace": s.namespace, "name": s.name, "type": "ClusterIP",
             "cluster_ips": [s.cluster_ip],
             "ports": [{"name": p.name, "port": p.port, "target_port": p.target_port,
                        "protocol": p.protocol} for p in s.ports]}
            for s in plan.services
        ],
        "endpoints": [
            {"namespace": s.namespace, "service": s.name,
             "addresses": [plan.pod(name).ip for name in s.backends],
             "ports": [{"name": p.name, "port": p.target_port, "protocol": p.protocol}
                       for p in s.ports]}
            for s in plan.services
        ],
    }


def _proxy_container(pod: Pod, sidecar: bool) -> list[str]:
    if pod.role == "backend" or (pod.role == "client" and sidecar):
        return ["istio-proxy"]
    return []
