"""The lab as a `kviz.inventory/1` document (docs/inventory.md): what names its IPs carry."""

from __future__ import annotations

import datetime

from captures.lab.plan import LabPlan, Pod

SCHEMA = "kviz.inventory/1"


def build(plan: LabPlan, node_interfaces: dict, sidecar: bool) -> dict:
    """`node_interfaces`: node name → (index → name) for each node's `-i any` captures, or
    one index → name map, the (first) node's; `sidecar`: whether the client pod has its proxy
    (the backends always have theirs)."""
    taken_at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if not _per_node(node_interfaces):
        node_interfaces = {plan.node_name: node_interfaces}
    return {
        "schema": SCHEMA,
        "taken_at": taken_at,
        "cluster": f"lab/{plan.prefix}",
        "nodes": [{
            "name": node.name,
            # A two-node lab's flannel.1 address is the node's too: what a pod sees as the
            # source of masqueraded NodePort traffic arriving over the overlay.
            "addresses": [node.address, *([node.vxlan_address] if node.vxlan_address else [])],
            "pod_cidr": node.pod_cidr,
            "interfaces": {str(i): name for i, name in
                           sorted((node_interfaces.get(node.name) or {}).items())},
        } for node in plan.nodes],
        "pods": [
            {"namespace": pod.namespace, "name": pod.name, "ips": [pod.ip],
             "node": plan.node_of(pod).name, "host_network": False,
             "containers": [*pod.containers, *_proxy_container(pod, sidecar)],
             "labels": dict(pod.labels)}
            for pod in plan.pods
        ],
        "services": [
            {"namespace": s.namespace, "name": s.name, "type": s.type,
             "cluster_ips": [s.cluster_ip],
             "ports": [{"name": p.name, "port": p.port, "target_port": p.target_port,
                        "protocol": p.protocol, **({"node_port": p.node_port}
                                                   if p.node_port else {})}
                       for p in s.ports],
             **({"external_traffic_policy": "Cluster"} if s.type == "NodePort" else {})}
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


def _per_node(node_interfaces: dict) -> bool:
    return bool(node_interfaces) and all(isinstance(v, dict) for v in node_interfaces.values())


def _proxy_container(pod: Pod, sidecar: bool) -> list[str]:
    if pod.role == "backend" or (pod.role == "client" and sidecar):
        return ["istio-proxy"]
    return []
