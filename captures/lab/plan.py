"""The lab's addressing plan: which pods, Services and namespaces exist, and their addresses.

Plain data, computed from the prefix (and the node count) alone, so `down` can find everything
`up` made even when the state directory is gone, and tests can check rules and inventories
without root. The addresses imitate one node of a kubeadm cluster with flannel/kubenet-style pod
CIDRs; with two nodes (`LabPlan(prefix, nodes=2)`), two such nodes with their own pod CIDRs,
joined by a flannel-style VXLAN overlay on a shared underlay, and an "outside" client on it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,9}$")
NODE_COUNTS = (1, 2)

CLUSTER_CIDR = "10.244.0.0/16"
POD_CIDR = "10.244.10.0/24"
BRIDGE_ADDRESS = "10.244.10.1"
BRIDGE_MAC = "02:42:0a:f4:0a:01"
# Calico-style point-to-point gateway used by the routed fallback.
ROUTED_GATEWAY = "169.254.1.1"
NODE_ADDRESS = "192.168.77.2"
UPLINK_ADDRESS = "192.168.77.1"
UPLINK_PREFIXLEN = 24

# Two nodes: one underlay /24 (the uplink namespace bridges it), flannel's VXLAN on top.
OUTSIDE_ADDRESS = "192.168.77.100"
UNDERLAY_BRIDGE = "br0"
VXLAN_DEVICE = "flannel.1"
VXLAN_VNI = 1
VXLAN_PORT = 8472  # the Linux kernel's (and flannel's) default, not IANA's 4789
VXLAN_MTU = 1450  # 1500 less the 50 bytes of outer Ethernet, IP, UDP and VXLAN headers
NODE_PORT_RANGE = (30000, 32767)

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
    node: int = 1  # which of the plan's nodes runs it (1-based)

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
    node_port: int = 0  # a NodePort Service's port on every node's addresses


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    cluster_ip: str
    ports: tuple[ServicePort, ...]
    selector_role: str
    backends: tuple[str, ...] = ()  # pod names, filled by LabPlan unless given
    type: str = "ClusterIP"  # ClusterIP | NodePort (externalTrafficPolicy: Cluster)

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


# Two nodes, flannel style: node N owns 10.244.N.0/24 (its cbr0 is .1, its flannel.1 is .0).
# The client, the DNS pod, istiod and nginx-a run on node-1, nginx-b on node-2, so the nginx
# Service's endpoints span both nodes and one of its two backends is across the overlay.
TWO_NODE_PODS = (
    Pod("ubuntu", "default", "10.244.1.89", "client", {"app": "ubuntu"}, ("ubuntu",), 1),
    Pod("nginx-a", "default", "10.244.1.90", "backend", {"app": "nginx"}, ("nginx",), 1),
    Pod("nginx-b", "default", "10.244.2.91", "backend", {"app": "nginx"}, ("nginx",), 2),
    Pod("coredns", "kube-system", "10.244.1.2", "dns", {"k8s-app": "kube-dns"}, ("coredns",), 1),
    Pod("istiod", "istio-system", "10.244.1.30", "istiod", {"app": "istiod"}, ("discovery",), 1),
)

# Reached from outside through node-2's address; its one endpoint is on node-1, so the request
# is masqueraded on node-2 and crosses the overlay, and the reply comes back the same way.
NODE_PORT_SERVICE = Service("nginx-nodeport", "default", "10.0.88.80",
                            (ServicePort("http", 80, 80, "TCP", 30080),), "backend",
                            backends=("nginx-a",), type="NodePort")


@dataclass(frozen=True)
class Node:
    index: int  # 1-based
    name: str  # the Kubernetes node name, and its namespace's name
    address: str  # eth0, on the underlay
    pod_cidr: str
    bridge_address: str
    bridge_mac: str
    vxlan_address: str  # flannel.1's /32, the pod CIDR's network address
    vxlan_mac: str
    uplink_port: str  # the peer of its eth0 in the uplink namespace

    @property
    def ns(self) -> str:
        return self.name


def _single_node(prefix: str) -> Node:
    return Node(1, f"{prefix}-node", NODE_ADDRESS, POD_CIDR, BRIDGE_ADDRESS, BRIDGE_MAC,
                "", "", "eth0")


def _two_node(prefix: str, index: int) -> Node:
    # Fixed MACs: flannel's are random, but captures that read the same run to run are easier
    # to compare, and the bridge would otherwise take its lowest port's.
    return Node(index, f"{prefix}-node-{index}", f"192.168.77.{10 + index}",
                f"10.244.{index}.0/24", f"10.244.{index}.1", f"02:42:0a:f4:{index:02x}:01",
                f"10.244.{index}.0", f"0e:6b:0a:f4:{index:02x}:00", f"node-{index}")


@dataclass(frozen=True)
class LabPlan:
    prefix: str
    node_count: int = 1

    def __post_init__(self):
        if not PREFIX_PATTERN.match(self.prefix):
            raise InvalidPrefix(
                f"lab prefix {self.prefix!r} must be 1-10 lowercase letters or digits, "
                "starting with a letter"
            )
        if self.node_count not in NODE_COUNTS:
            raise ValueError(f"a lab has {' or '.join(map(str, NODE_COUNTS))} nodes, "
                             f"not {self.node_count}")

    @property
    def nodes(self) -> tuple[Node, ...]:
        if self.node_count == 1:
            return (_single_node(self.prefix),)
        return tuple(_two_node(self.prefix, index) for index in range(1, self.node_count + 1))

    def node(self, index: int) -> Node:
        return self.nodes[index - 1]

    def node_of(self, pod: Pod) -> Node:
        return self.node(pod.node)

    @property
    def node_name(self) -> str:
        """The (first) node's name: the only node, or the client's."""
        return self.nodes[0].name

    @property
    def node_ns(self) -> str:
        return self.nodes[0].ns

    @property
    def uplink_ns(self) -> str:
        return f"{self.prefix}-uplink"

    @property
    def outside_ns(self) -> str:
        """Two nodes: an external client on the underlay (NodePort traffic comes from here)."""
        return f"{self.prefix}-outside"

    def pod_ns(self, pod: Pod) -> str:
        return f"{self.prefix}-{pod.name}"

    @property
    def pods(self) -> tuple[Pod, ...]:
        return PODS if self.node_count == 1 else TWO_NODE_PODS

    def pod(self, name: str) -> Pod:
        for pod in self.pods:
            if pod.name == name:
                return pod
        raise KeyError(name)

    def pods_with_role(self, role: str) -> list[Pod]:
        return [pod for pod in self.pods if pod.role == role]

    def pods_on(self, node: Node) -> list[Pod]:
        return [pod for pod in self.pods if pod.node == node.index]

    @property
    def client(self) -> Pod:
        return self.pods_with_role("client")[0]

    @property
    def backends(self) -> list[Pod]:
        return self.pods_with_role("backend")

    @property
    def services(self) -> tuple[Service, ...]:
        declared = SERVICES if self.node_count == 1 else (*SERVICES, NODE_PORT_SERVICE)
        return tuple(
            Service(s.name, s.namespace, s.cluster_ip, s.ports, s.selector_role,
                    s.backends or tuple(p.name for p in self.pods_with_role(s.selector_role)),
                    s.type)
            for s in declared
        )

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    @property
    def namespaces(self) -> list[str]:
        """Every namespace the lab may create, pods last so the nodes go first on `up`."""
        outside = [self.outside_ns] if self.node_count > 1 else []
        return [*(node.ns for node in self.nodes), self.uplink_ns, *outside,
                *(self.pod_ns(pod) for pod in self.pods)]

    @property
    def any_layout_namespaces(self) -> list[str]:
        """The namespaces of every node count this prefix could have been brought up with:
        what `down` looks for, so it never depends on knowing the layout."""
        names = list(self.namespaces)  # its own layout's first, in their order
        for count in NODE_COUNTS:
            names += [ns for ns in LabPlan(self.prefix, count).namespaces if ns not in names]
        return names
