"""The lab's addressing plan: which pods, Services and namespaces exist, and their addresses.

Plain data, computed from the prefix alone, so `down` can find everything `up` made even when
the state directory is gone, and tests can check rules and inventories without root.
The addresses imitate one node of a kubeadm cluster with flannel/kubenet-style pod CIDRs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,9}$")

CLUSTER_CIDR = "10.244.0.0/16"
POD_CIDR = "10.244.10.0/24"
BRIDGE_ADDRESS = "10.244.10.1"
BRIDGE_MAC = "02:42:0a:f4:0a:01"
# Calico-style point-to-point gateway used by the routed fallback.
ROUTED_GATEWAY = "169.254.1.1"
NODE_ADDRESS = "192.168.77.2"
UPLINK_ADDRESS = "192.168.77.1"
UPLINK_PREFIXLEN = 24

PROXY_UID = 1337
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
ISTIOD_PORT = 15012
CLUSTER_DOMAIN = "cluster.local"


class InvalidPrefix(ValueError):
    pass


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    ip: str
    role: str  # client | backend | dns | istiod
    labels: dict = field(default_factory=dict)
    containers: tuple = ()

    @property
    def veth(self) -> str:
        # vethXXXX like the CNI plugins: short, stable, unique per node.
        return "veth" + hashlib.sha1(f"{self.namespace}/{self.name}".encode()).hexdigest()[:4]


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int
    protocol: str  # TCP | UDP


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    cluster_ip: str
    ports: tuple[ServicePort, ...]
    selector_role: str
    backends: tuple[str, ...] = ()  # pod names, filled by LabPlan

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{CLUSTER_DOMAIN}"


PODS = (
    Pod("ubuntu", "default", "10.244.10.89", "client", {"app": "ubuntu"}, ("ubuntu",)),
    Pod("nginx-a", "default", "10.244.10.90", "backend", {"app": "nginx"}, ("nginx",)),
    Pod("nginx-b", "default", "10.244.10.91", "backend", {"app": "nginx"}, ("nginx",)),
    Pod("coredns", "kube-system", "10.244.10.2", "dns", {"k8s-app": "kube-dns"}, ("coredns",)),
    Pod("istiod", "istio-system", "10.244.10.30", "istiod", {"app": "istiod"}, ("discovery",)),
)

SERVICES = (
    Service("nginx", "default", "10.0.185.118",
            (ServicePort("http", 80, 80, "TCP"),), "backend"),
    Service("kube-dns", "kube-system", "10.0.0.10",
            (ServicePort("dns", 53, 53, "UDP"), ServicePort("dns-tcp", 53, 53, "TCP")), "dns"),
    Service("istiod", "istio-system", "10.0.36.12",
            (ServicePort("grpc-xds", ISTIOD_PORT, ISTIOD_PORT, "TCP"),), "istiod"),
)


@dataclass(frozen=True)
class LabPlan:
    prefix: str

    def __post_init__(self):
        if not PREFIX_PATTERN.match(self.prefix):
            raise InvalidPrefix(
                f"lab prefix {self.prefix!r} must be 1-10 lowercase letters or digits, "
                "starting with a letter"
            )

    @property
    def node_name(self) -> str:
        return f"{self.prefix}-node"

    @property
    def node_ns(self) -> str:
        return f"{self.prefix}-node"

    @property
    def uplink_ns(self) -> str:
        return f"{self.prefix}-uplink"

    def pod_ns(self, pod: Pod) -> str:
        return f"{self.prefix}-{pod.name}"

    @property
    def pods(self) -> tuple[Pod, ...]:
        return PODS

    def pod(self, name: str) -> Pod:
        for pod in PODS:
            if pod.name == name:
                return pod
        raise KeyError(name)

    def pods_with_role(self, role: str) -> list[Pod]:
        return [pod for pod in PODS if pod.role == role]

    @property
    def client(self) -> Pod:
        return self.pods_with_role("client")[0]

    @property
    def backends(self) -> list[Pod]:
        return self.pods_with_role("backend")

    @property
    def services(self) -> tuple[Service, ...]:
        return tuple(
            Service(s.name, s.namespace, s.cluster_ip, s.ports, s.selector_role,
                    tuple(p.name for p in self.pods_with_role(s.selector_role)))
            for s in SERVICES
        )

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    @property
    def namespaces(self) -> list[str]:
        """Every namespace the lab may create, pods last so the node goes first on `up`."""
        return [self.node_ns, self.uplink_ns, *(self.pod_ns(pod) for pod in PODS)]
