"""A path: one request's whole way, captured at every place it passes, at the same moment.

    {"kind": "path", "from": "pod/<ns>/<pod>", "to": "service/<ns>/<name>" | "pod/<ns>/<pod>",
     "where": "lab" | "cluster"}

resolves into parts, each a target of a kind that is already captured live:
1. the client pod, on all its interfaces (its `lo` carries the app's traffic to a sidecar);
2. the client's node (`-i any`: veth, bridge, eth0, the overlay);
3. every backend pod behind the destination (a Service's ready endpoints, or the one pod);
4. each backend's node, once per node.
The runner opens the parts together, writes one file each, stops them together and analyses
them as one capture (captures.jobs.runner). Grants are checked for every part here, before
anything starts: the client's and the destination's namespaces must be granted (nothing can be
looked up otherwise); a part that is not granted, or a Service without endpoints, is kept with
its reason so the page names what is missing while the other parts are captured.
`where` defaults to the cluster when one is configured, else the lab.
"""

from __future__ import annotations

from captures.access import grants
from captures.sources.base import (
    Part,
    Target,
    TargetError,
    is_dns1123_label,
    is_dns1123_subdomain,
    register,
)

LINKTYPE = "LINUX_SLL2"  # every part records `-i any` (pods and nodes alike)
SHAPE = ('a path is {"kind": "path", "from": "pod/<namespace>/<pod>", '
         '"to": "service/<namespace>/<name>" or "pod/<namespace>/<pod>"}')


def _endpoint(value, what: str, kinds: tuple[str, ...]) -> tuple[str, str, str]:
    """("pod" | "service", namespace, name) from "pod/<ns>/<name>"."""
    parts = value.split("/") if isinstance(value, str) and len(value) <= 300 else []
    if len(parts) != 3 or parts[0] not in kinds:
        raise TargetError(f"{what} must be " + " or ".join(f'"{k}/<namespace>/<name>"'
                                                            for k in kinds) + f"; {SHAPE}")
    kind, namespace, name = parts
    valid_name = is_dns1123_subdomain(name) if kind == "pod" else is_dns1123_label(name)
    if not (is_dns1123_label(namespace) and valid_name):
        raise TargetError(f"{what}: namespace and name must follow Kubernetes' DNS-1123 rules")
    return kind, namespace, name


def _where(target: dict) -> str:
    from captures.sources import kubernetes

    where = target.get("where")
    if where is None:
        return "cluster" if kubernetes.enabled() else "lab"
    if where not in ("lab", "cluster"):
        raise TargetError('where must be "lab" or "cluster"')
    return where


def resolve(target: dict, user=None) -> Target:
    unknown = set(target) - {"kind", "from", "to", "where"}
    if unknown:
        raise TargetError(f"unknown path field {sorted(unknown)[0]!r}; {SHAPE}")
    client = _endpoint(target.get("from"), "from", ("pod",))
    destination = _endpoint(target.get("to"), "to", ("service", "pod"))
    where = _where(target)
    parts = (_lab_parts if where == "lab" else _cluster_parts)(client, destination, user)
    spec = {"from": target["from"], "to": target["to"], "where": where,
            "parts": [part.to_json() for part in parts]}
    return Target("path", spec, LINKTYPE)


def plan(client: dict, backends: list[dict], node_part, pod_part, no_backends: str) -> list[Part]:
    """The parts in path order: client pod, its node, then each backend and its node (a node
    once, under the first role that reaches it). `client` and `backends` are
    {"namespace", "name", "node"}; `node_part(name)` and `pod_part(pod)` make a Part."""
    parts = [pod_part(client, "client pod")]
    seen_nodes = set()
    if client["node"]:
        parts.append(node_part(client["node"], "client node"))
        seen_nodes.add(client["node"])
    if not backends:
        parts.append(Part("", {}, "backend pods", "", no_backends))
    for backend in backends:
        if (backend["namespace"], backend["name"]) != (client["namespace"], client["name"]):
            parts.append(pod_part(backend, "backend pod"))
        if backend["node"] and backend["node"] not in seen_nodes:
            parts.append(node_part(backend["node"], "backend node"))
            seen_nodes.add(backend["node"])
    return parts


# -- in the lab ---------------------------------------------------------------------------------


def _lab_parts(client, destination, user) -> list[Part]:
    from captures.lab import LabError
    from captures.sources import lab

    try:
        grants.check_host(user)
    except grants.NotGranted as exc:
        raise TargetError(str(exc)) from None
    try:
        lab_plan = lab.get_lab().plan
        up = lab.get_lab().is_up()
        pods = {(p.namespace, p.name): p for p in lab_plan.pods}
    except lab.LAB_FAILURES as exc:
        raise TargetError(str(exc)) from None
    if not up:
        raise TargetError("the lab is not up (python manage.py kviz lab up)")

    def pod_of(namespace: str, name: str) -> dict:
        pod = pods.get((namespace, name))
        if pod is None:
            raise TargetError(f"no lab pod {namespace}/{name}")
        return {"namespace": namespace, "name": name, "node": lab_plan.node_of(pod).name}

    _kind, namespace, name = destination
    if destination[0] == "pod":
        backends = [pod_of(namespace, name)]
    else:
        try:
            service = lab_plan.service(name)
        except (LabError, KeyError, ValueError):
            raise TargetError(f"no lab service {namespace}/{name}") from None
        if service.namespace != namespace:
            raise TargetError(f"no lab service {namespace}/{name}")
        backends = [pod_of(pods_ns, backend) for pods_ns, backend in
                    ((service.namespace, b) for b in service.backends)]
    return plan(pod_of(client[1], client[2]), backends,
                lambda node, role: Part("lab", {"target": f"node/{node}"}, role, f"node/{node}"),
                lambda pod, role: Part("lab", {"target": f"pod/{pod['namespace']}/{pod['name']}"},
                                       role, f"pod/{pod['namespace']}/{pod['name']}"),
                f"service {namespace}/{name} has no backends")


# -- in a cluster -------------------------------------------------------------------------------


def _cluster_parts(client, destination, user) -> list[Part]:
    from captures.adapters import k8s
    from captures.sources import kubernetes

    for namespace in {client[1], destination[1]}:
        try:
            grants.check(user, "pod", namespace)
        except grants.NotGranted as exc:
            raise TargetError(str(exc)) from None
    if not kubernetes.enabled():
        raise TargetError("no cluster configured (set KVIZ_KUBECONFIG, or run kviz in a pod)")
    cluster = kubernetes.connect()
    try:
        client_pod = cluster.pod(client[1], client[2])
        if client_pod["phase"] != "Running":
            raise TargetError(f"pod {client[1]}/{client[2]} is "
                              f"{client_pod['phase'] or 'not'} running")
        kind, namespace, name = destination
        if kind == "pod":
            found = [cluster.pod(namespace, name)]
        else:
            found = [p for p in cluster.service_pods(namespace, name) if p["phase"] == "Running"]
    except k8s.K8sError as exc:
        raise TargetError(str(exc)) from None
    finally:
        cluster.close()
    backends = [{"namespace": namespace, "name": p["name"], "node": p["node"],
                 "host_network": p["host_network"]} for p in found]
    may_nodes = user is None or grants.may_capture_nodes(user)

    def node_part(node: str, role: str) -> Part:
        if not may_nodes:
            return Part("node", {"node": node}, role, f"node/{node}",
                        "not granted: node captures need the group "
                        f"{grants.NODES_GROUP!r}")
        return Part("node", {"node": node}, role, f"node/{node}")

    def pod_part(pod: dict, role: str) -> Part:
        spec = {"namespace": pod["namespace"], "pod": pod["name"]}
        if pod.get("host_network"):
            spec["host_network"] = True  # it shares its node's interfaces
        return Part("pod", spec, role, f"pod/{pod['namespace']}/{pod['name']}")

    client_info = {"namespace": client[1], "name": client[2], "node": client_pod["node"],
                   "host_network": client_pod["host_network"]}
    return plan(client_info, backends, node_part, pod_part,
                f"service {namespace}/{name} has no running endpoints")


def targets(user=None) -> list[dict]:
    """The picker offers a path wherever pods are offered (the lab, a cluster); the lab's
    Services are listed here, as they are no capture target of their own (a cluster's come
    with its listing)."""
    from captures.sources import kubernetes

    where, offered = [], {}
    if grants.may_capture_host(user):
        services = _lab_services()
        if services is not None:
            where.append("lab")
            offered["lab_services"] = services
    if kubernetes.enabled():
        where.append("cluster")
    return [{"kind": "path", "where": where, **offered}] if where else []


def _lab_services() -> list[str] | None:
    from captures.sources import lab

    try:
        return [f"service/{s.namespace}/{s.name}" for s in lab.get_lab().plan.services]
    except lab.LAB_FAILURES:
        return None  # no lab here


register(["path"], resolve=resolve, targets=targets, live=True)
