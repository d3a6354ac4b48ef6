"""Bringing the lab up and down: namespaces, links, kube-proxy rules, DNS, workloads.

Theory of operation
-------------------
The lab's state lives in two places: the kernel (namespaces, and everything inside them) and
`STATE_DIR/state.json` (mode, sidecar, pids). The plan (captures.lab.plan) names every namespace
from the prefix alone, so teardown never depends on the state file being intact.

    absent ──up──► building ──every step done──► up
      ▲               │ a step fails (or we are killed)
      └──── down ◄────┘ `up` runs `down` itself, then raises the error
    up ──up──► up           healthy (all namespaces, all recorded processes): only the sidecar
                            setting is applied
    up ──up──► building     unhealthy: `down`, then build again
    any ──down──► absent    idempotent: kills every process in the lab's namespaces, deletes the
                            namespaces, the /etc/netns files and the state directory

`state.json` is written with status "building" before the first change, so a crash mid-`up`
leaves a record that `status` reports and the next `up` or `down` cleans.

Two node layouts (the "mode"):
- bridge: pods on a Linux bridge `cbr0` (kubenet/flannel style). Bridged traffic only meets
  iptables (and so kube-proxy's DNAT) when br_netfilter is on; on this kernel its sysctl is
  per network namespace, so it is switched on in the node namespace alone.
- routed: when that sysctl is unavailable, pods sit on point-to-point veths with /32 routes and a
  proxy-ARP gateway 169.254.1.1 (Calico style); everything is routed, so iptables sees it anyway.

Two nodes (`up(nodes=2)`, recorded in state.json): node-1 and node-2 namespaces, each with its
own pods (bridged or routed as above) and kube-proxy's rules, their eth0 links bridged (`br0`)
in the uplink namespace, which also holds an "outside" client's link; a flannel-style VXLAN
device `flannel.1` (VNI 1, UDP 8472, static FDB and neighbour entries, as flanneld writes them)
on each node carries pod traffic between the nodes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from captures.lab import kubeproxy, netns, pki, sidecar, workloads
from captures.lab.plan import (
    CLUSTER_DOMAIN,
    OUTSIDE_ADDRESS,
    ROUTED_GATEWAY,
    UNDERLAY_BRIDGE,
    UPLINK_ADDRESS,
    UPLINK_PREFIXLEN,
    VXLAN_DEVICE,
    VXLAN_MTU,
    VXLAN_PORT,
    VXLAN_VNI,
    LabPlan,
    Node,
    Pod,
)

STATE_SCHEMA = "kviz.lab-state/1"
MODES = ("auto", "bridge", "routed")
NETNS_ETC = Path("/etc/netns")
LOCK_TIMEOUT = 120.0
REQUIRED_TOOLS = ("ip", "iptables-restore", "sysctl", "dnsmasq", "nginx", "openssl", "dumpcap")


class LabError(RuntimeError):
    """A failure worth one line to the user."""


class Lab:
    def __init__(self, prefix: str, root_dir: Path | str, nodes: int | None = None):
        """`nodes`: the layout to plan for; by default what the state file records (1 when
        there is none). `up(nodes=...)` may change it."""
        LabPlan(prefix)  # the prefix is checked before any path is made from it
        # The state directory is named after the prefix, so `down` only ever removes a
        # directory it can recognise as a lab's.
        self.state_dir = Path(root_dir) / prefix
        self._lock_depth = 0
        if nodes is None:
            nodes = (self.read_state() or {}).get("nodes", 1)
        self.plan = LabPlan(prefix, nodes)

    @property
    def prefix(self) -> str:
        return self.plan.prefix

    # -- state file ------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.json"

    def read_state(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None

    def write_state(self, state: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2, sort_keys=True))
        temporary.replace(self.state_path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One lab operation at a time per root directory (CLI and dashboard may both drive it).

        Re-entrant within one Lab object: a scenario holds the lock and switches the sidecar.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        # The lock is the labs' root directory itself: a lock file would be one more thing for
        # `down` to remove, and removing a lock file others wait on breaks the lock.
        root = self.state_dir.parent
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LabError(f"lab {self.prefix} is busy (lock on {root})") from None
                    time.sleep(0.1)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # -- queries ---------------------------------------------------------------------------------

    def status(self) -> dict:
        state = self.read_state() or {}
        present = netns.list_namespaces()
        namespaces = {ns: ns in present for ns in self.plan.namespaces}
        processes = {name: {"pid": pid, "alive": netns.alive(pid)}
                     for name, pid in state.get("processes", {}).items()}
        # Namespaces of the other layout (a state file lost) still make the lab not down.
        if not state and not any(ns in present for ns in self.plan.any_layout_namespaces):
            overall = "down"
        elif state.get("status") == "up" and all(namespaces.values()) and all(
                p["alive"] for p in processes.values()):
            overall = "up"
        else:
            overall = "broken" if state.get("status") != "building" else "building"
        return {
            "prefix": self.prefix, "status": overall, "mode": state.get("mode"),
            "sidecar": state.get("sidecar", False), "node": self.plan.node_name,
            "nodes": [node.name for node in self.plan.nodes],
            "state_dir": str(self.state_dir), "namespaces": namespaces, "processes": processes,
        }

    def is_up(self) -> bool:
        return self.status()["status"] == "up"

    def access_log(self, pod_name: str) -> Path:
        return workloads.access_log(self.state_dir, self.plan.pod(pod_name))

    # -- up --------------------------------------------------------------------------------------

    def up(self, sidecar_enabled: bool = False, mode: str = "auto",
           nodes: int | None = None) -> dict:
        """`nodes`: 1 or 2; None keeps the current layout (1 for a new lab). A lab that is up
        with another node count is taken down and built again."""
        if mode not in MODES:
            raise LabError(f"unknown lab mode {mode!r} (use one of {', '.join(MODES)})")
        with self.locked():
            if nodes is not None and nodes != self.plan.node_count:
                try:
                    self.plan = LabPlan(self.prefix, nodes)
                except ValueError as exc:
                    raise LabError(str(exc)) from None
            if self.is_up():
                self._apply_sidecar(sidecar_enabled)
                return self.status()
            self._down()
            try:
                self._build(sidecar_enabled, mode)
            except BaseException:
                self._down()
                raise
            return self.status()

    def _build(self, sidecar_enabled: bool, mode: str) -> None:
        missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
        if missing:
            raise LabError(f"missing programs: {', '.join(missing)} (run scripts/setup.sh)")
        state = {"schema": STATE_SCHEMA, "prefix": self.prefix, "status": "building",
                 "mode": None, "sidecar": False, "processes": {}, "started_at": time.time()}
        if self.plan.node_count > 1:
            state["nodes"] = self.plan.node_count  # absent means one, as before
        self.write_state(state)
        # 1. Namespaces: the node(s), a dead-end uplink, (the outside client,) one per pod.
        for ns in self.plan.namespaces:
            netns.add_namespace(ns)
        # 2. The nodes: forwarding on, br_netfilter on if this kernel lets us (decides the mode).
        state["mode"] = self._node_sysctls(mode)
        self.write_state(state)
        if self.plan.node_count == 1:
            self._wire_uplink()
        else:
            self._wire_underlay()
            self._wire_overlay()
        # 3. Pods on the bridge, or on routed point-to-point links.
        for node in self.plan.nodes:
            if state["mode"] == "bridge":
                self._wire_bridge(node)
            else:
                self._wire_routed(node)
        # 4. kube-proxy's Service rules in each node's namespace (every node has them all).
        for node in self.plan.nodes:
            netns.iptables_restore(node.ns, kubeproxy.nat_rules(self.plan))
        # 5. Certificates, cluster DNS settings for the pods.
        self._make_certificates()
        self._write_resolv_confs()
        # 6. Workloads, each waited for until it listens.
        started = [workloads.start_dns(self.plan, self.state_dir)]
        for pod in self.plan.backends:
            started.append(workloads.start_nginx(self.plan, self.state_dir, pod))
            started.append(workloads.start_inbound(self.plan, self.state_dir, pod))
        started.append(workloads.start_istiod(self.plan, self.state_dir))
        state["processes"] = {s.name: s.pid for s in started}
        state["status"] = "up"
        self.write_state(state)
        # 7. The client's sidecar, when asked for.
        self._apply_sidecar(sidecar_enabled)

    def _node_sysctls(self, mode: str) -> str:
        for node in self.plan.nodes:
            netns.sysctl(node.ns, {"net.ipv4.ip_forward": "1"})
        if mode == "routed":
            return "routed"
        bridge_ok = all(netns.try_sysctl(node.ns, "net.bridge.bridge-nf-call-iptables", "1")
                        for node in self.plan.nodes)
        if bridge_ok:
            return "bridge"
        if mode == "bridge":
            raise LabError("bridge mode needs br_netfilter (net.bridge.bridge-nf-call-iptables "
                           "in the node namespace); use --mode routed")
        return "routed"

    def _wire_uplink(self) -> None:
        node, uplink = self.plan.node_ns, self.plan.uplink_ns
        netns.ip(node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                 "netns", uplink)
        netns.ip(node, "addr", "add", f"{self.plan.nodes[0].address}/{UPLINK_PREFIXLEN}", "dev",
                 "eth0")
        netns.ip(uplink, "addr", "add", f"{UPLINK_ADDRESS}/{UPLINK_PREFIXLEN}", "dev", "eth0")
        netns.ip(node, "link", "set", "eth0", "up")
        netns.ip(uplink, "link", "set", "eth0", "up")
        # The node's default route leads into the uplink namespace, which forwards nothing:
        # whatever tries to leave the lab stops there.
        netns.ip(node, "route", "add", "default", "via", UPLINK_ADDRESS)

    def _wire_underlay(self) -> None:
        """Two nodes: their eth0s and the outside client's on one bridge in the uplink
        namespace, like hosts on one L2 network; its 192.168.77.1 still forwards nothing."""
        uplink = self.plan.uplink_ns
        netns.ip(uplink, "link", "add", UNDERLAY_BRIDGE, "type", "bridge")
        netns.ip(uplink, "addr", "add", f"{UPLINK_ADDRESS}/{UPLINK_PREFIXLEN}", "dev",
                 UNDERLAY_BRIDGE)
        netns.ip(uplink, "link", "set", UNDERLAY_BRIDGE, "up")
        ends = [(node.ns, node.address, node.uplink_port) for node in self.plan.nodes]
        ends.append((self.plan.outside_ns, OUTSIDE_ADDRESS, "outside"))
        for ns, address, port in ends:
            netns.ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                     "netns", uplink)
            netns.ip(ns, "addr", "add", f"{address}/{UPLINK_PREFIXLEN}", "dev", "eth0")
            netns.ip(uplink, "link", "set", port, "master", UNDERLAY_BRIDGE)
            netns.ip(uplink, "link", "set", port, "up")
            netns.ip(ns, "link", "set", "eth0", "up")
            netns.ip(ns, "route", "add", "default", "via", UPLINK_ADDRESS)

    def _wire_overlay(self) -> None:
        """flannel's vxlan backend, by hand: on each node a `flannel.1` VXLAN device (VNI 1,
        UDP 8472, no learning) holding the node's pod CIDR's .0 as a /32, and for every other
        node the three entries flanneld writes: a route to its pod CIDR via its flannel.1
        address (onlink), a permanent neighbour entry for that address with its flannel.1 MAC,
        and an FDB entry sending that MAC to its node address."""
        for node in self.plan.nodes:
            netns.ip(node.ns, "link", "add", VXLAN_DEVICE, "type", "vxlan", "id", str(VXLAN_VNI),
                     "local", node.address, "dev", "eth0", "dstport", str(VXLAN_PORT),
                     "nolearning")
            netns.ip(node.ns, "link", "set", VXLAN_DEVICE, "address", node.vxlan_mac,
                     "mtu", str(VXLAN_MTU))
            netns.ip(node.ns, "addr", "add", f"{node.vxlan_address}/32", "dev", VXLAN_DEVICE)
            netns.ip(node.ns, "link", "set", VXLAN_DEVICE, "up")
            for peer in self.plan.nodes:
                if peer.index == node.index:
                    continue
                netns.ip(node.ns, "route", "add", peer.pod_cidr, "via", peer.vxlan_address,
                         "dev", VXLAN_DEVICE, "onlink")
                netns.ip(node.ns, "neigh", "add", peer.vxlan_address, "lladdr", peer.vxlan_mac,
                         "dev", VXLAN_DEVICE, "nud", "permanent")
                netns.run(["bridge", "-n", node.ns, "fdb", "append", peer.vxlan_mac, "dev",
                           VXLAN_DEVICE, "dst", peer.address])
        # flanneld's own masquerade rules are left out: pod traffic stays inside the cluster
        # CIDR here, and nothing may leave the lab anyway.

    def _pod_mtu(self) -> list[str]:
        # Pods on a VXLAN overlay get its MTU (flannel's FLANNEL_MTU), so full-size segments
        # still fit once encapsulated.
        return ["mtu", str(VXLAN_MTU)] if self.plan.node_count > 1 else []

    def _add_pod_veth(self, pod: Pod) -> None:
        # Created directly between two lab namespaces: no end ever exists in the host's.
        mtu = self._pod_mtu()
        netns.ip(self.plan.node_of(pod).ns, "link", "add", pod.veth, *mtu, "type", "veth",
                 "peer", "name", "eth0", *mtu, "netns", self.plan.pod_ns(pod))

    def _wire_bridge(self, node: Node) -> None:
        ns = node.ns
        netns.ip(ns, "link", "add", "cbr0", *self._pod_mtu(), "type", "bridge")
        # A fixed MAC: otherwise the bridge takes its lowest port's and changes it as ports come.
        netns.ip(ns, "link", "set", "cbr0", "address", node.bridge_mac)
        prefixlen = node.pod_cidr.split("/")[1]
        netns.ip(ns, "addr", "add", f"{node.bridge_address}/{prefixlen}", "dev", "cbr0")
        netns.ip(ns, "link", "set", "cbr0", "up")
        for pod in self.plan.pods_on(node):
            pod_ns = self.plan.pod_ns(pod)
            self._add_pod_veth(pod)
            netns.ip(ns, "link", "set", pod.veth, "master", "cbr0")
            netns.ip(ns, "link", "set", pod.veth, "up")
            netns.ip(pod_ns, "addr", "add", f"{pod.ip}/{prefixlen}", "dev", "eth0")
            netns.ip(pod_ns, "link", "set", "eth0", "up")
            netns.ip(pod_ns, "route", "add", "default", "via", node.bridge_address)

    def _wire_routed(self, node: Node) -> None:
        for pod in self.plan.pods_on(node):
            pod_ns = self.plan.pod_ns(pod)
            node_ns = node.ns
            self._add_pod_veth(pod)
            # The node answers ARP for the pod's gateway on the pod's veth (proxy ARP), at once:
            # the kernel's default proxy_delay holds each answer back up to 0.8 s.
            netns.sysctl(node_ns, {f"net.ipv4.conf.{pod.veth}.proxy_arp": "1",
                                   f"net.ipv4.neigh.{pod.veth}.proxy_delay": "0"})
            netns.ip(node_ns, "link", "set", pod.veth, "up")
            netns.ip(node_ns, "route", "add", f"{pod.ip}/32", "dev", pod.veth, "scope", "link")
            netns.ip(pod_ns, "addr", "add", f"{pod.ip}/32", "dev", "eth0")
            netns.ip(pod_ns, "link", "set", "eth0", "up")
            netns.ip(pod_ns, "route", "add", ROUTED_GATEWAY, "dev", "eth0", "scope", "link")
            netns.ip(pod_ns, "route", "add", "default", "via", ROUTED_GATEWAY, "dev", "eth0")

    def _make_certificates(self) -> None:
        directory = self.state_dir / "pki"
        ca = pki.make_ca(directory)
        for pod in self.plan.pods:
            if pod.role in ("client", "backend", "istiod"):
                # Service accounts named after the app, as in Istio's samples.
                account = pod.labels.get("app", pod.name)
                dns = ("istiod.istio-system.svc",) if pod.role == "istiod" else ()
                pki.issue(ca, directory, pod.name, [pki.spiffe_id(pod.namespace, account)], dns)

    def resolv_conf_path(self, pod: Pod) -> Path:
        return NETNS_ETC / self.plan.pod_ns(pod) / "resolv.conf"

    def _write_resolv_confs(self) -> None:
        dns_vip = self.plan.service("kube-dns").cluster_ip
        for pod in self.plan.pods:
            if pod.role == "dns":
                continue
            search = " ".join([f"{pod.namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}",
                               CLUSTER_DOMAIN])
            path = self.resolv_conf_path(pod)
            path.parent.mkdir(parents=True, exist_ok=True)
            # `ip netns exec` bind-mounts this over /etc/resolv.conf for programs in the pod.
            path.write_text(f"search {search}\nnameserver {dns_vip}\noptions ndots:5\n")

    # -- sidecar ---------------------------------------------------------------------------------

    def set_sidecar(self, enabled: bool, fresh: bool = False) -> None:
        """Switch the client's sidecar; `fresh` restarts the proxy so its pool starts empty."""
        with self.locked():
            if not self.is_up():
                raise LabError(f"lab {self.prefix} is not up")
            self._apply_sidecar(enabled, fresh)

    def _apply_sidecar(self, enabled: bool, fresh: bool = False) -> None:
        state = self.read_state()
        key = f"{self.plan.client.name}/meshproxy-outbound"
        pid = state["processes"].get(key)
        if enabled and netns.alive(pid) and not fresh:
            return
        sidecar.disable(self.plan, pid)
        state["processes"].pop(key, None)
        state["sidecar"] = False
        self.write_state(state)
        if enabled:
            state["processes"][key] = sidecar.enable(self.plan, self.state_dir)
            state["sidecar"] = True
            self.write_state(state)

    # -- down ------------------------------------------------------------------------------------

    def down(self) -> list[str]:
        with self.locked():
            return self._down()

    def _down(self) -> list[str]:
        """Remove everything; returns the namespaces that were deleted."""
        present = netns.list_namespaces()
        # Every layout's namespaces: `down` must not depend on knowing how `up` was called.
        everything = self.plan.any_layout_namespaces
        ours = [ns for ns in everything if ns in present]
        # Processes first: a namespace with processes left in it outlives its name.
        for ns in ours:
            netns.kill_namespace_processes(ns)
        for ns in ours:
            netns.delete_namespace(ns)
        for ns in everything:
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        with contextlib.suppress(OSError):
            NETNS_ETC.rmdir()  # only when empty: other labs' files stay
        shutil.rmtree(self.state_dir, ignore_errors=True)
        left = [ns for ns in everything if ns in netns.list_namespaces()]
        if left:
            raise LabError(f"could not delete namespaces: {', '.join(left)}")
        return ours
