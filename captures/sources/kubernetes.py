"""Captures in a real cluster: a pod (debug container), a node (capture pod), a Service (its pods).

How a capture runs (the same for a pod's ephemeral container and a node's capture pod):
1. The container runs CAPTURE_SCRIPT under `sh`, with tcpdump's argv as positional arguments:
   the filter is never parsed by a shell, only handed to tcpdump as words after `--`.
2. The script waits for a first line on stdin. kviz attaches first, then sends it: tcpdump's
   pcap header would be lost if it started before anyone listened (attach only streams what
   is written after it connects).
3. It prints the interface index → name map on stderr (`kviz-if 2 eth0`): `-i any` records
   Linux cooked v2, which carries only the index. Then tcpdump runs, pcap on stdout.
4. A second stdin line (stop), or stdin's EOF (stdinOnce: kviz's connection dropped, e.g. its
   worker died), makes the script SIGINT exactly its own tcpdump, which flushes and exits.
   Why not `kill -INT 1`: with targetContainerName the debug container shares the target's
   PID namespace, where PID 1 is the application, not tcpdump.
An ephemeral container cannot be removed from its pod; once stopped it stays listed as
terminated. A node's capture pod is always deleted (close(), open() failing, cleanup_orphans).
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import select
import struct
import threading
import time
import uuid

from captures.access import grants
from captures.sources.base import (
    LiveSource,
    Target,
    TargetError,
    is_dns1123_label,
    is_dns1123_subdomain,
)

KINDS = ("pod", "node", "service")
LINKTYPE = "LINUX_SLL2"  # what `tcpdump -i any -y LINUX_SLL2` records
SNAPLEN = 262144
START_TIMEOUT = 90  # image pull and container start
LISTEN_TIMEOUT = 20  # tcpdump opening the capture after the start line
CAPTURE_SCRIPT = """\
read -r _ || exit 0
for i in /sys/class/net/*; do echo "kviz-if $(cat "$i/ifindex") ${i##*/}" >&2; done
"$@" &
pid=$!
read -r _
kill -INT "$pid" 2>/dev/null
wait "$pid"
"""


def setting(name: str, default):
    from django.conf import settings

    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name, default)
    if isinstance(default, bool) and isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int) and not isinstance(default, bool):
        return int(value)
    return value


def enabled() -> bool:
    """A cluster is configured: a kubeconfig, a context, or kviz runs in a pod."""
    return bool(setting("KVIZ_KUBECONFIG", "") or setting("KVIZ_KUBE_CONTEXT", "")
                or os.environ.get("KUBERNETES_SERVICE_HOST"))


def connect():
    from captures.adapters import k8s

    return k8s.Cluster.connect(setting("KVIZ_KUBECONFIG", "") or None,
                               setting("KVIZ_KUBE_CONTEXT", "") or None)


def own_namespace() -> str:
    """Where node-capture pods are made: kviz's own namespace (the Role allows only there)."""
    namespace = setting("KVIZ_K8S_NAMESPACE", "")
    if not namespace:
        try:
            with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as fp:
                namespace = fp.read().strip()
        except OSError:
            namespace = "kviz"
    return namespace


def tcpdump_argv(bpf: str) -> list[str]:
    # --immediate-mode: packets leave the kernel ring as they arrive (a live view, and nothing
    # stranded in the ring when SIGINT ends the capture). The filter is one argv item.
    argv = ["tcpdump", "-i", "any", "-y", LINKTYPE, "-U", "--immediate-mode", "-n",
            "-s", str(SNAPLEN), "-w", "-"]
    return [*argv, "--", bpf] if bpf else argv


def capture_command(bpf: str) -> list[str]:
    return ["sh", "-c", CAPTURE_SCRIPT, "kviz-capture", *tcpdump_argv(bpf)]


def debug_container(name: str, target_container: str, bpf: str) -> dict:
    return {"name": name, "image": setting("KVIZ_DEBUG_IMAGE", "nicolaka/netshoot:v0.13"),
            "command": capture_command(bpf), "targetContainerName": target_container,
            "stdin": True, "stdinOnce": True, "tty": False,
            "imagePullPolicy": "IfNotPresent", "terminationMessagePolicy": "File",
            "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}}


def node_pod_manifest(node: str, capture_id, bpf: str) -> dict:
    from captures.adapters import k8s

    privileged = setting("KVIZ_NODE_PRIVILEGED", False)
    security = ({"privileged": True} if privileged else
                {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}})
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"kviz-node-{str(capture_id)[:8]}-{uuid.uuid4().hex[:5]}",
                     "labels": {k8s.MANAGED_BY: "kviz", k8s.CAPTURE_LABEL: str(capture_id)}},
        "spec": {
            "nodeName": node,  # bypasses the scheduler: the pod lands on that node or nowhere
            "hostNetwork": True,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            # A backstop if kviz itself is gone: the kubelet ends the pod after this.
            "activeDeadlineSeconds": setting("KVIZ_MAX_SECONDS", 3600) + 300,
            "tolerations": [{"operator": "Exists"}],  # tainted nodes too (control plane)
            "containers": [{
                "name": "capture", "image": setting("KVIZ_DEBUG_IMAGE", "nicolaka/netshoot:v0.13"),
                "command": capture_command(bpf), "stdin": True, "stdinOnce": True, "tty": False,
                "imagePullPolicy": "IfNotPresent", "securityContext": security,
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                              "limits": {"memory": "256Mi"}},
            }],
        },
    }


# -- targets -----------------------------------------------------------------------------------


def _spec(target: dict) -> tuple[str, dict, str | None]:
    kind = target.get("kind")
    namespace = target.get("namespace")
    if kind == "node":
        node = target.get("node")
        if not is_dns1123_subdomain(node):
            raise TargetError("node must be a node name (DNS-1123 subdomain)")
        return kind, {"node": node}, None
    if not is_dns1123_label(namespace):
        raise TargetError("namespace must be a Kubernetes namespace name (DNS-1123 label)")
    name = target.get(kind)
    if kind == "pod" and is_dns1123_subdomain(name):
        return kind, {"namespace": namespace, "pod": name}, namespace
    if kind == "service" and is_dns1123_label(name):
        return kind, {"namespace": namespace, "service": name}, namespace
    raise TargetError(f"{kind} must be a Kubernetes {kind} name (DNS-1123)")


def resolve(target: dict, user=None) -> Target:
    """Check a cluster target: its shape, the user's grant (before any API call), then that it
    exists. Targets: {"kind": "pod", "namespace": "default", "pod": "ubuntu"},
    {"kind": "service", "namespace": "default", "service": "nginx"}, {"kind": "node", "node": n}.
    """
    from captures.adapters import k8s

    kind, spec, namespace = _spec(target)
    if user is not None:
        try:
            grants.check(user, kind, namespace)
        except grants.NotGranted as exc:
            raise TargetError(str(exc)) from None
    if not enabled():
        raise TargetError("no cluster configured (set KVIZ_KUBECONFIG, or run kviz in a pod)")
    cluster = connect()
    try:
        if kind == "pod":
            pod = cluster.pod(namespace, spec["pod"])
            if pod["phase"] != "Running":
                raise TargetError(f"pod {namespace}/{spec['pod']} is {pod['phase'] or 'not'} "
                                  "running")
            if pod["host_network"]:
                spec["host_network"] = True  # it shares its node's interfaces
        elif kind == "service":
            if not cluster.service_pods(namespace, spec["service"]):
                raise TargetError(f"service {namespace}/{spec['service']} has no pods")
        elif spec["node"] not in {n["name"] for n in cluster.nodes()}:
            raise TargetError(f"no node {spec['node']!r}")
    except k8s.K8sError as exc:
        raise TargetError(str(exc)) from None
    finally:
        cluster.close()
    return Target(kind, spec, LINKTYPE)


def targets(user=None) -> list[dict]:
    """The picker: {"kind": "cluster", "namespaces": [...], "nodes": [...]} or nothing."""
    from captures.adapters import k8s

    if not enabled():
        return []
    namespaces = grants.granted_namespaces(user) if user is not None else None
    may_nodes = user is None or grants.may_capture_nodes(user)
    if namespaces is not None and not namespaces and not may_nodes:
        return []  # nothing granted: nothing to ask the cluster
    cluster = connect()
    try:
        listing = cluster.targets(None if namespaces is None else sorted(namespaces))
        nodes = cluster.nodes() if may_nodes else []
    except k8s.K8sError as exc:
        return [{"kind": "cluster", "error": str(exc)}]
    finally:
        cluster.close()
    return [{"kind": "cluster", "cluster": cluster.name, "namespaces": listing,
             "nodes": [{"name": n["name"], "addresses": n["addresses"]} for n in nodes]}]


def cleanup_orphans(active_capture_ids) -> list[str]:
    """Delete node-capture pods of captures that no longer run (the worker calls this)."""
    if not enabled():
        return []
    cluster = connect()
    try:
        return cluster.cleanup_orphans(own_namespace(), active_capture_ids)
    finally:
        cluster.close()


# -- sources -----------------------------------------------------------------------------------


def parse_interfaces(stderr: bytes) -> dict[int, str]:
    names = {}
    for line in stderr.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "kviz-if" and parts[1].isdigit():
            names[int(parts[1])] = parts[2]
    return names


class _Attached:
    """One running capture container: attach, start, wait until tcpdump listens."""

    def __init__(self, cluster, namespace: str, pod: str, container: str):
        self.cluster, self.namespace, self.pod, self.container = cluster, namespace, pod, container
        self.stream = None
        self.interfaces: dict[int, str] = {}

    def start(self) -> None:
        from captures.adapters import k8s

        self.stream = self.cluster.attach(self.namespace, self.pod, self.container)
        self.stream.write_stdin(b"start\n")
        if not self.stream.wait_stderr(b"listening on", LISTEN_TIMEOUT):
            said = self.stream.stderr.decode("utf-8", "replace").strip().splitlines()
            said = [line for line in said if not line.startswith("kviz-if ")]
            why = said[-1] if said else (self.stream.failure() or "no answer")
            self.stream.close()
            raise k8s.K8sError(f"tcpdump did not start in {self.namespace}/{self.pod}: {why}")
        self.interfaces = parse_interfaces(self.stream.stderr)

    def stop(self) -> None:
        # A connection that is gone has closed stdin already, which stopped tcpdump too.
        with contextlib.suppress(Exception):
            self.stream.write_stdin(b"stop\n")

    def close(self) -> None:
        if self.stream:
            self.stream.close()


class _AttachedSource(LiveSource):
    """A tcpdump container whose output comes back over the attach WebSocket."""

    attached: _Attached | None = None
    _inventory: dict | None = None

    def _attach(self, namespace: str, pod: str, container: str) -> None:
        self.attached = _Attached(self.cluster, namespace, pod, container)
        self.attached.start()
        self.interfaces = self.attached.interfaces
        self.stream = self.attached.stream.stdout

    def stop(self) -> None:
        self.attached.stop()

    def kill(self) -> None:
        # Dropping the connection closes the container's stdin: the script ends tcpdump.
        self.attached.stream.ws.close()

    def close(self) -> None:
        if self.attached:
            self.attached.close()

    def failure(self) -> str:
        return self.attached.stream.failure() if self.attached and self.attached.stream else ""

    def inventory(self) -> dict | None:
        return self._inventory


class PodSource(_AttachedSource):
    """tcpdump in an ephemeral container of the pod (it shares the pod's network namespace).

    `stream` is tcpdump's classic pcap, byte for byte as it came over the WebSocket."""

    def __init__(self, namespace: str, pod: str, bpf: str = "", cluster=None,
                 snapshot: bool = True):
        self.namespace, self.pod, self.bpf = namespace, pod, bpf
        self.vantage = f"pod/{namespace}/{pod}"
        self.interfaces = {}
        self.cluster = cluster
        self.snapshot = snapshot  # a Service's pods share the Service's one snapshot

    def open(self) -> None:
        self.cluster = self.cluster or connect()
        pod = self.cluster.pod(self.namespace, self.pod)
        if self.snapshot:
            # Taken as the capture starts: names as they were at that moment.
            self._inventory = _snapshot(self.cluster)
        name = f"kviz-{uuid.uuid4().hex[:8]}"
        self.cluster.add_debug_container(self.namespace, self.pod,
                                         debug_container(name, pod["containers"][0], self.bpf))
        self.cluster.wait_running(self.namespace, self.pod, name, True, START_TIMEOUT)
        self._attach(self.namespace, self.pod, name)


class NodeSource(_AttachedSource):
    """tcpdump in a short-lived hostNetwork pod pinned to the node; the pod is always deleted."""

    def __init__(self, node: str, capture_id, bpf: str = "", cluster=None):
        self.node, self.capture_id, self.bpf = node, capture_id, bpf
        self.vantage = f"node/{node}"
        self.interfaces = {}
        self.cluster = cluster
        self.namespace = own_namespace()
        self.pod_name = ""

    def open(self) -> None:
        self.cluster = self.cluster or connect()
        self._inventory = _snapshot(self.cluster)
        manifest = node_pod_manifest(self.node, self.capture_id, self.bpf)
        self.pod_name = manifest["metadata"]["name"]
        try:
            self.cluster.create_pod(self.namespace, manifest)
            self.cluster.wait_running(self.namespace, self.pod_name, "capture", False,
                                      START_TIMEOUT)
            self._attach(self.namespace, self.pod_name, "capture")
        except BaseException:
            self.close()  # the runner closes only sources that opened
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.pod_name:
                self.cluster.delete_pod(self.namespace, self.pod_name)


def _snapshot(cluster) -> dict | None:
    from captures.adapters import k8s

    try:
        return cluster.inventory()
    except k8s.K8sError:
        return None  # names are a help, not a condition: capture without them


# -- a Service: every pod behind it, merged into one pcapng ------------------------------------


IFINDEX_STRIDE = 1 << 16  # pod k's interface i becomes (k + 1) * stride + i in the merged file
HOLD = 0.3  # seconds a packet waits so packets of several pods leave in time order


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


SECTION_HEADER = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
                        + _option(4, b"kviz") + struct.pack("<HH", 0, 0))


class PcapParser:
    """Classic pcap arriving in pieces → (timestamp units, linktype) and whole records."""

    def __init__(self):
        self.buffer = b""
        self.endian = ""
        self.nanoseconds = False
        self.linktype = None

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Records completed by `data`: (seconds, fraction, frame bytes)."""
        self.buffer += data
        if self.linktype is None:
            if len(self.buffer) < 24:
                return []
            magic = self.buffer[:4]
            self.endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
            self.nanoseconds = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
            self.linktype = struct.unpack(self.endian + "I", self.buffer[20:24])[0] & 0x0FFFFFFF
            self.buffer = self.buffer[24:]
        records, offset = [], 0
        while len(self.buffer) - offset >= 16:
            sec, frac, caplen, _wire = struct.unpack_from(self.endian + "IIII", self.buffer,
                                                          offset)
            if len(self.buffer) - offset - 16 < caplen:
                break
            records.append((sec, frac, self.buffer[offset + 16:offset + 16 + caplen]))
            offset += 16 + caplen
        self.buffer = self.buffer[offset:]
        return records


class PcapngMerger:
    """Merges several pods' pcap streams into one pcapng written to a pipe, in time order.

    One interface block per pod, named `<pod>:any`. Cooked v2 headers carry an interface index
    that is only unique within one pod (every pod has its eth0 at 2), so the index is renumbered
    per pod; `interfaces` names the new numbers `<pod>:<interface>` for the analysis. The
    header is libpcap's own description of the packet, not bytes from the wire.
    """

    def __init__(self, named_streams: list[tuple[str, object, dict[int, str]]]):
        self.inputs = named_streams
        self.interfaces = {(k + 1) * IFINDEX_STRIDE + index: f"{pod}:{name}"
                           for k, (pod, _s, names) in enumerate(named_streams)
                           for index, name in names.items()}
        read_fd, self._write_fd = os.pipe()
        self.stdout = os.fdopen(read_fd, "rb", buffering=0)
        self._thread = threading.Thread(target=self._run, name="kviz-k8s-merge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        from captures.adapters.k8s import _write_all

        parsers = [PcapParser() for _ in self.inputs]
        iface_ids: dict[int, int] = {}
        open_fds = {stream.fileno(): k for k, (_pod, stream, _n) in enumerate(self.inputs)}
        pending: list[tuple] = []
        seq = 0
        try:
            _write_all(self._write_fd, SECTION_HEADER)
            while open_fds or pending:
                ready = select.select(list(open_fds), [], [], 0.05)[0] if open_fds else []
                out = b""
                for fd in ready:
                    k = open_fds[fd]
                    chunk = os.read(fd, 256 * 1024)
                    if not chunk:
                        del open_fds[fd]
                        continue
                    parser = parsers[k]
                    for sec, frac, data in parser.feed(chunk):
                        if k not in iface_ids:
                            iface_ids[k] = len(iface_ids)
                            out += self._idb(k, parser)
                        ts = sec * 1_000_000_000 + frac * (1 if parser.nanoseconds else 1000)
                        heapq.heappush(pending, (ts, seq, time.monotonic(), k, data))
                        seq += 1
                now = time.monotonic()
                # The earliest packet leaves once it has waited HOLD: any packet another pod
                # took earlier has arrived by then (or all streams have ended).
                while pending and (not open_fds or now - pending[0][2] >= HOLD):
                    ts, _seq, _at, k, data = heapq.heappop(pending)
                    out += self._epb(iface_ids[k], ts, self._renumber(k, parsers[k], data))
                if out:
                    _write_all(self._write_fd, out)
        except OSError:
            pass  # the reader went away: nothing left to write to
        finally:
            os.close(self._write_fd)

    def _idb(self, k: int, parser: PcapParser) -> bytes:
        pod = self.inputs[k][0]
        return _block(1, struct.pack("<HHI", parser.linktype, 0, SNAPLEN)
                      + _option(2, f"{pod}:any".encode()) + _option(9, bytes([9]))
                      + struct.pack("<HH", 0, 0))

    @staticmethod
    def _epb(iface: int, ts_ns: int, data: bytes) -> bytes:
        return _block(6, struct.pack("<IIIII", iface, ts_ns >> 32, ts_ns & 0xFFFFFFFF,
                                     len(data), len(data)) + data)

    @staticmethod
    def _renumber(k: int, parser: PcapParser, data: bytes) -> bytes:
        if parser.linktype != 276 or len(data) < 20:
            return data
        index = struct.unpack_from("!I", data, 4)[0]
        return data[:4] + struct.pack("!I", (k + 1) * IFINDEX_STRIDE + index) + data[8:]


class ServiceSource(LiveSource):
    """Every pod behind a Service at once, one debug container each, merged into one pcapng."""

    def __init__(self, namespace: str, service: str, bpf: str = "", cluster=None):
        self.namespace, self.service, self.bpf = namespace, service, bpf
        self.vantage = f"service/{namespace}/{service}"
        self.interfaces = {}
        self.cluster = cluster
        self.pods: list[PodSource] = []
        self.merger: PcapngMerger | None = None
        self._inventory = None

    def open(self) -> None:
        from captures.adapters import k8s

        self.cluster = self.cluster or connect()
        pods = self.cluster.service_pods(self.namespace, self.service)
        if not pods:
            raise k8s.K8sError(f"service {self.namespace}/{self.service} has no pods")
        self._inventory = _snapshot(self.cluster)
        try:
            for pod in pods:
                source = PodSource(self.namespace, pod["name"], self.bpf, self.cluster,
                                   snapshot=False)
                source.open()
                self.pods.append(source)
        except BaseException:
            self.close()
            raise
        self.merger = PcapngMerger([(s.pod, s.stream, s.interfaces) for s in self.pods])
        self.interfaces = self.merger.interfaces
        self.stream = self.merger.stdout
        self.merger.start()

    def stop(self) -> None:
        for source in self.pods:
            source.stop()

    def kill(self) -> None:
        for source in self.pods:
            source.kill()

    def close(self) -> None:
        for source in self.pods:
            source.close()
        if self.merger:
            self.merger._thread.join(5)
            self.merger.stdout.close()

    def inventory(self) -> dict | None:
        return self._inventory


def open_source(kind: str, spec: dict, bpf: str, capture_id=None) -> LiveSource:
    if kind == "pod":
        return PodSource(spec["namespace"], spec["pod"], bpf)
    if kind == "service":
        return ServiceSource(spec["namespace"], spec["service"], bpf)
    if kind == "node":
        if capture_id is None:
            raise TargetError("a node capture needs its capture id (it labels the capture pod)")
        return NodeSource(spec["node"], capture_id, bpf)
    raise TargetError(f"no cluster source for kind {kind!r}")


def describe_command(bpf: str) -> str:
    """The container's command as JSON, for the capture log."""
    return json.dumps(tcpdump_argv(bpf))
