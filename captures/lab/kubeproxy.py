"""kube-proxy in iptables mode, as rules text for `iptables-restore` in the node namespace.

The chain names, comments and rule order follow what kube-proxy writes, so `iptables-save` in
the lab reads like a real node:

    PREROUTING/OUTPUT → KUBE-SERVICES → KUBE-SVC-<hash>   (one per Service port)
        → -m statistic --mode random --probability 1/n    (one rule per endpoint but the last)
        → KUBE-SEP-<hash>: -s <itself> → KUBE-MARK-MASQ (hairpin), then DNAT to podIP:port
    POSTROUTING → KUBE-POSTROUTING: MASQUERADE what KUBE-MARK-MASQ marked.

A NodePort Service (externalTrafficPolicy: Cluster) adds, as kube-proxy 1.26+ writes it:

    KUBE-SERVICES (last rule, --dst-type LOCAL) → KUBE-NODEPORTS: -p tcp --dport <nodePort>
        → KUBE-EXT-<hash>: KUBE-MARK-MASQ ("masquerade traffic for ... external destinations"),
          then KUBE-SVC-<hash>, the Service's own chain (same hash)
so a client outside the cluster is masqueraded to the node's address on the way to the
endpoint, wherever the endpoint runs, and the reply returns through the same node.
"""

from __future__ import annotations

import base64
import hashlib

from captures.lab.plan import CLUSTER_CIDR, LabPlan, Service, ServicePort

MASQ_MARK = "0x4000"


def _chain(kind: str, *parts: str) -> str:
    # kube-proxy: "KUBE-SVC-" + first 16 chars of base32(sha256(servicePortName + protocol)).
    digest = hashlib.sha256("".join(parts).encode()).digest()
    return f"KUBE-{kind}-" + base64.b32encode(digest).decode()[:16]


def service_port_name(service: Service, port: ServicePort) -> str:
    return f"{service.namespace}/{service.name}:{port.name}"


def svc_chain(service: Service, port: ServicePort) -> str:
    return _chain("SVC", service_port_name(service, port), port.protocol.lower())


def sep_chain(service: Service, port: ServicePort, endpoint: str) -> str:
    return _chain("SEP", service_port_name(service, port), port.protocol.lower(), endpoint)


def ext_chain(service: Service, port: ServicePort) -> str:
    # kube-proxy: the same hash as the Service port's KUBE-SVC chain, prefix KUBE-EXT.
    return "KUBE-EXT-" + svc_chain(service, port).removeprefix("KUBE-SVC-")


def ext_masquerade_comment(service: Service, port: ServicePort) -> str:
    return f"masquerade traffic for {service_port_name(service, port)} external destinations"


def nat_rules(plan: LabPlan) -> str:
    chains = ["KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KUBE-NODEPORTS"]
    rules = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" '
        "-j KUBE-POSTROUTING",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
    ]
    for service in plan.services:
        endpoints = [plan.pod(name).ip for name in service.backends]
        for port in service.ports:
            rules += _service_rules(service, port, endpoints)
            chains.append(svc_chain(service, port))
            chains += [sep_chain(service, port, f"{ip}:{port.target_port}") for ip in endpoints]
            if service.type == "NodePort" and port.node_port:
                rules += _node_port_rules(service, port)
                chains.append(ext_chain(service, port))
    rules.append(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
        'the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'
    )
    lines = ["*nat", *(f":{chain} - [0:0]" for chain in chains), *rules, "COMMIT", ""]
    return "\n".join(lines)


def _service_rules(service: Service, port: ServicePort, endpoints: list[str]) -> list[str]:
    name = service_port_name(service, port)
    proto = port.protocol.lower()
    match = f"-d {service.cluster_ip}/32 -p {proto}"
    svc = svc_chain(service, port)
    rules = [
        f'-A KUBE-SERVICES {match} -m comment --comment "{name} cluster IP" '
        f"-m {proto} --dport {port.port} -j {svc}",
        # Traffic to the VIP from outside the cluster CIDR (the node itself) gets masqueraded.
        f'-A {svc} ! -s {CLUSTER_CIDR} {match} -m comment --comment "{name} cluster IP" '
        f"-m {proto} --dport {port.port} -j KUBE-MARK-MASQ",
    ]
    for index, ip in enumerate(endpoints):
        endpoint = f"{ip}:{port.target_port}"
        sep = sep_chain(service, port, endpoint)
        remaining = len(endpoints) - index
        # Each rule takes 1/remaining of what reached it, so the split is even overall.
        chance = f" -m statistic --mode random --probability {1 / remaining:.11f}"
        rules.append(
            f'-A {svc} -m comment --comment "{name} -> {endpoint}"'
            f"{chance if remaining > 1 else ''} -j {sep}"
        )
    for ip in endpoints:
        endpoint = f"{ip}:{port.target_port}"
        sep = sep_chain(service, port, endpoint)
        rules += [
            # Hairpin: a pod reaching itself through its own Service must be masqueraded, or
            # the reply would bypass the node and the connection would break.
            f'-A {sep} -s {ip}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ',
            f'-A {sep} -p {proto} -m comment --comment "{name}" -m {proto} '
            f"-j DNAT --to-destination {endpoint}",
        ]
    return rules


def _node_port_rules(service: Service, port: ServicePort) -> list[str]:
    name = service_port_name(service, port)
    proto = port.protocol.lower()
    ext = ext_chain(service, port)
    return [
        f'-A KUBE-NODEPORTS -p {proto} -m comment --comment "{name}" -m {proto} '
        f"--dport {port.node_port} -j {ext}",
        # externalTrafficPolicy: Cluster: any endpoint, on any node, so always masquerade
        # (the reply must come back through this node to be un-NATed).
        f'-A {ext} -m comment --comment "{ext_masquerade_comment(service, port)}" '
        "-j KUBE-MARK-MASQ",
        f"-A {ext} -j {svc_chain(service, port)}",
    ]
