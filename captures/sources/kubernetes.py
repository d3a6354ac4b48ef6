"""Captures in a real cluster: a pod (debug container), a node (capture pod), a Service (its pods).

How a capture runs (the same for a pod's ephemeral container and a node's capture pod):
1. The container's own process is HOLD_SCRIPT: it captures nothing and prints nothing (a
   container's output is what the runtime writes to /var/log/pods and log shippers collect).
   It waits for kviz, and ends by itself when no capture arrives in time (the image pulled
   after kviz gave up, kviz's worker died, the exec was refused), when the capture ends, or at
   the longest capture's deadline. So nothing is left running with a capture capability.
2. kviz execs CAPTURE_SCRIPT into it, tcpdump's argv as positional arguments: the filter is
   never parsed by a shell, only handed to tcpdump as words after `--`. An exec's output is
   streamed to kviz only, never logged by the runtime, and it starts with the process, so
   tcpdump's pcap header is never missed.
3. It prints the interface index → name map on stderr (`kviz-if 2 eth0`): `-i any` records
   Linux cooked v2, which carries only the index. Then tcpdump runs, pcap on stdout.
4. A stdin line (stop), or stdin's EOF (kviz's connection dropped, e.g. its worker died),
   makes the script SIGINT exactly its own tcpdump, which flushes and exits; tcpdump exiting by
   itself ends the script too. Its exit code goes to the holder, which exits with it, so the
   container's `state.terminated` tells how the capture ended.
   Why not `kill -INT 1`: with targetContainerName the debug container shares the target's
   PID namespace, where PID 1 is the application, not tcpdump.
5. Any failure after the container was added: kviz execs END_SCRIPT, which ends the holder
   at once (when even that fails, the holder's own timeout does it).
Capabilities: none are added at first: `tcpdump -i any` needs only NET_RAW, which a root
container has on containerd (its default set); a runtime without it (CRI-O) makes tcpdump say
"permission", and kviz then adds NET_RAW alone, which Pod Security `baseline` refuses: the
error names the level. An ephemeral container cannot be removed from its pod; once stopped it
stays listed as terminated. A node's capture pod is always deleted (close(), open() failing,
cleanup_orphans).
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from captures.access import grants
from captures.sources.base import (
    LiveSource,
    Target,
    TargetError,
    is_dns1123_label,
    is_dns1123_subdomain,
    register,
)
from captures.sources.pcapstream import PcapngMerger

KINDS = ("pod", "node", "service")
LINKTYPE = "LINUX_SLL2"  # what `tcpdump -i any -y LINUX_SLL2` records
SNAPLEN = 262144
HOLD_MARK = "kviz-hold"  # $0 of the holder: how kviz (and its test server) knows it
CAPTURE_MARK = "kviz-capture"
END_MARK = "kviz-end"
# $1: seconds to wait for a capture; $2: seconds after which any capture is ended.
HOLD_SCRIPT = """\
trap 'exit 143' TERM INT
t=0
while [ ! -e /tmp/kviz.done ]; do
  if [ ! -e /tmp/kviz.started ] && [ "$t" -ge "$1" ]; then exit 0; fi
  if [ "$t" -ge "$2" ]; then
    [ -e /tmp/kviz.pid ] && kill -INT "$(cat /tmp/kviz.pid)" 2>/dev/null
    exit 0
  fi
  sleep 1
  t=$((t+1))
done
code=$(cat /tmp/kviz.done)
[ "${code:-0}" = 0 ] || echo "tcpdump exited with code $code" >/dev/termination-log
exit "${code:-0}"
"""
CAPTURE_SCRIPT = """\
: >/tmp/kviz.started
for i in /sys/class/net/*; do echo "kviz-if $(cat "$i/ifindex") ${i##*/}" >&2; done
exec 3<&0
"$@" &
pid=$!
echo "$pid" >/tmp/kviz.pid
{ read -r _ <&3; kill -INT "$pid"; } >/dev/null 2>&1 &
wait "$pid"
code=$?
echo "$code" >/tmp/kviz.done
exit "$code"
"""
END_SCRIPT = 'echo 0 >/tmp/kviz.done\n'
PERMISSION_WORDS = ("permission", "Operation not permitted")


def setting(name: str, default):
    from django.conf import settings

    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name, default)
    if isinstance(default, bool) and isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int) and not isinstance(default, bool):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


def start_timeout() -> int:
    return setting("KVIZ_K8S_START_TIMEOUT", 120)  # image pull (with retries) and start


def listen_timeout() -> int:
    return setting("KVIZ_K8S_LISTEN_TIMEOUT", 20)  # tcpdump opening the capture


def hold_wait() -> int:
    # How long the holder waits for kviz's exec once it runs: kviz execs at once, so this
    # only matters when kviz gave up or died; then it bounds how long a container idles.
    return setting("KVIZ_K8S_HOLD_WAIT", 60)


def ping_period() -> float:
    return setting("KVIZ_K8S_PING_PERIOD", 5.0)


def image() -> str:
    return setting("KVIZ_DEBUG_IMAGE", "nicolaka/netshoot:v0.13")


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
    """What kviz execs into the capture container."""
    return ["sh", "-c", CAPTURE_SCRIPT, CAPTURE_MARK, *tcpdump_argv(bpf)]


def end_command() -> list[str]:
    return ["sh", "-c", END_SCRIPT, END_MARK]


def hold_command() -> list[str]:
    """The capture container's own process (see the module's docstring)."""
    longest = setting("KVIZ_MAX_SECONDS", 3600) + 300
    return ["sh", "-c", HOLD_SCRIPT, HOLD_MARK, str(hold_wait()), str(longest)]


def _security(net_raw: bool) -> dict:
    # Nothing added by default: a root container on containerd has NET_RAW already, and Pod
    # Security `baseline` (the usual namespace level) refuses any added NET_RAW or NET_ADMIN.
    # `-i any` never needs NET_ADMIN (no promiscuous mode on the `any` device).
    return {"capabilities": {"add": ["NET_RAW"]}} if net_raw else {}


def debug_container(name: str, target_container: str, net_raw: bool = False) -> dict:
    container = {"name": name, "image": image(), "command": hold_command(),
                 "targetContainerName": target_container, "stdin": False, "tty": False,
                 "imagePullPolicy": "IfNotPresent", "terminationMessagePolicy": "File"}
    security = _security(net_raw)
    if security:
        container["securityContext"] = security
    return container


def node_pod_manifest(node: str, capture_id) -> dict:
    from captures.adapters import k8s

    privileged = setting("KVIZ_NODE_PRIVILEGED", False)
    security = ({"privileged": True} if privileged else
                {"capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]}})
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"kviz-node-{str(capture_id)[:8]}-{uuid.uuid4().hex[:5]}",
                     "labels": {k8s.MANAGED_BY: "kviz", k8s.CAPTURE_LABEL: str(capture_id)}},
        "spec": {
            "nodeName": node,  # bypasses the scheduler: the pod lands on that node or nowhere
            "hostNetwork": True,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            # Short, not 0: the holder exits on SIGTERM within a second, and a deleted pod
            # stays listed until the kubelet has stopped it (see Cluster.delete_pod).
            "terminationGracePeriodSeconds": k8s.DELETE_GRACE,
            # A backstop if kviz itself is gone: the kubelet ends the pod after this.
            "activeDeadlineSeconds": setting("KVIZ_MAX_SECONDS", 3600) + 300,
            "tolerations": [{"operator": "Exists"}],  # tainted nodes too (control plane)
            "containers": [{
                "name": "capture", "image": image(), "command": hold_command(),
                "stdin": False, "tty": False, "imagePullPolicy": "IfNotPresent",
                "terminationMessagePolicy": "File", "securityContext": security,
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


def capture_bindings(namespaces=None, worker: str = "kviz-worker") -> list[dict]:
    """The RoleBindings that let kviz's worker capture in `namespaces` (default: every
    namespace granted to someone), to the ClusterRole kviz-capture of deploy/kubernetes."""
    if namespaces is None:
        namespaces = grants.namespaces_granted_to_anyone()
    return [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "kviz-capture", "namespace": namespace,
                          "labels": {"app.kubernetes.io/part-of": "kviz"}},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "kviz-capture"},
             "subjects": [{"kind": "ServiceAccount", "name": worker,
                           "namespace": own_namespace()}]}
            for namespace in sorted(namespaces)]


def capture_bindings_yaml(namespaces=None) -> str:
    import yaml

    return yaml.safe_dump_all(capture_bindings(namespaces), sort_keys=False)


# -- sources -----------------------------------------------------------------------------------


def parse_interfaces(stderr: bytes) -> dict[int, str]:
    names = {}
    for line in stderr.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "kviz-if" and parts[1].isdigit():
            names[int(parts[1])] = parts[2]
    return names


class CaptureFailed(Exception):
    """tcpdump did not start; `permission` when it said it lacked the capability."""

    def __init__(self, message: str, permission: bool):
        super().__init__(message)
        self.permission = permission


class _Capture:
    """tcpdump exec'd into one capture container: start, wait until it listens, stop, end."""

    def __init__(self, cluster, namespace: str, pod: str, container: str):
        self.cluster, self.namespace, self.pod, self.container = cluster, namespace, pod, container
        self.stream = None
        self.interfaces: dict[int, str] = {}

    def start(self, bpf: str) -> None:
        self.stream = self.cluster.exec(self.namespace, self.pod, self.container,
                                        capture_command(bpf), ping_period())
        if not self.stream.wait_stderr(b"listening on", listen_timeout()):
            said = _said(self.stream.stderr)
            why = said[-1] if said else (self.stream.failure() or "no answer")
            self.stream.close()
            raise CaptureFailed(f"tcpdump did not start in {self.namespace}/{self.pod}: {why}",
                                any(word in line for line in said for word in PERMISSION_WORDS))
        self.interfaces = parse_interfaces(self.stream.stderr)

    def stop(self) -> None:
        # A connection that is gone has closed stdin already, which stopped tcpdump too.
        with contextlib.suppress(Exception):
            self.stream.write_stdin(b"stop\n")

    def kill(self) -> None:
        # Dropping the connection closes the process's stdin: the script ends tcpdump.
        self.stream.drop()

    def close(self) -> None:
        if self.stream:
            self.stream.close()

    def failure(self) -> str:
        """How tcpdump ended when it was not asked to, or ''. The exec's Status carries its
        exit code; a stream that ended without one (cut on the way) leaves the container's
        `state.terminated` (the holder exits with tcpdump's code) as the one witness."""
        from captures.adapters import k8s

        if self.stream is None:
            return ""
        where = f"tcpdump in {self.namespace}/{self.pod}"
        said = [line for line in _said(self.stream.stderr) if "packets" not in line]
        words = f": {said[-1]}" if said else ""
        code = self.stream.exit_code()
        if code:
            return f"{where} exited with code {code}{words}"
        if self.stream.status is not None:
            return "" if code == 0 else f"{where}: {self.stream.failure()}"
        terminated = {}
        with contextlib.suppress(k8s.K8sError):
            for raw in self.cluster.watch_pod(self.namespace, self.pod, 3):
                state = (k8s._container_status(raw, self.container) or {}).get("state") or {}
                terminated = state.get("terminated") or {}
                if terminated:
                    break
        if terminated.get("exitCode"):
            message = (terminated.get("message") or "").strip()
            return (f"{where} exited with code {terminated['exitCode']}"
                    + (f" ({message})" if message else "") + words)
        return self.stream.error


def _said(stderr: bytes) -> list[str]:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("kviz-if ")]


class _ExecSource(LiveSource):
    """A tcpdump whose output comes back over an exec WebSocket."""

    writes_pcap = True  # tcpdump -w - writes classic pcap, stored as it came
    capture: _Capture | None = None
    _inventory: dict | None = None

    def _start(self, namespace: str, pod: str, container: str) -> None:
        capture = _Capture(self.cluster, namespace, pod, container)
        capture.start(self.bpf)
        self.capture = capture
        self.interfaces = capture.interfaces
        self.stream = capture.stream.stdout

    def stop(self) -> None:
        self.capture.stop()

    def kill(self) -> None:
        self.capture.kill()

    def close(self) -> None:
        if self.capture:
            self.capture.close()

    def failure(self) -> str:
        return self.capture.failure() if self.capture else ""

    def inventory(self) -> dict | None:
        return self._inventory


class PodSource(_ExecSource):
    """tcpdump in an ephemeral container of the pod (it shares the pod's network namespace).

    `stream` is tcpdump's classic pcap, byte for byte as it came over the WebSocket."""

    def __init__(self, namespace: str, pod: str, bpf: str = "", cluster=None,
                 snapshot: bool = True):
        self.namespace, self.pod, self.bpf = namespace, pod, bpf
        self.vantage = f"pod/{namespace}/{pod}"
        self.interfaces = {}
        self.cluster = cluster
        self.snapshot = snapshot  # a Service's pods share the Service's one snapshot
        self.containers: list[str] = []  # every container added, in order

    def open(self) -> None:
        from captures.adapters import k8s

        self.cluster = self.cluster or connect()
        pod = self.cluster.pod(self.namespace, self.pod)
        if self.snapshot:
            # Taken as the capture starts: names as they were at that moment.
            self._inventory = _snapshot(self.cluster)
        net_raw = False
        while True:
            name = f"kviz-{uuid.uuid4().hex[:8]}"
            try:
                self.cluster.add_debug_container(
                    self.namespace, self.pod, debug_container(name, pod["containers"][0],
                                                              net_raw))
            except k8s.PodSecurity as exc:
                if not net_raw:
                    raise
                raise k8s.PodSecurity(
                    f"tcpdump in {self.namespace}/{self.pod} needs the NET_RAW capability, "
                    f"which this node's container runtime does not give a root container "
                    f"(containerd does, CRI-O does not); the namespace's Pod Security level "
                    f"\"{exc.level}\" forbids adding it ({exc}). Capture there needs the "
                    f"namespace labelled pod-security.kubernetes.io/enforce=privileged, or a "
                    f"node capture instead") from None
            self.containers.append(name)
            try:
                self.cluster.wait_running(self.namespace, self.pod, name, start_timeout(),
                                          image())
                self._start(self.namespace, self.pod, name)
                return
            except CaptureFailed as exc:
                self._end(name)
                if exc.permission and not net_raw:
                    net_raw = True  # this runtime gives root no NET_RAW: ask for it alone
                    continue
                raise k8s.K8sError(str(exc)) from None
            except BaseException:
                self._end(name)
                raise

    def _end(self, name: str) -> None:
        """End the holder now (a failure past the PATCH); if even that fails it ends itself
        after KVIZ_K8S_HOLD_WAIT seconds."""
        from captures.adapters import k8s

        with contextlib.suppress(k8s.K8sError):
            stream = self.cluster.exec(self.namespace, self.pod, name, end_command(), 0)
            stream.ended.wait(5)
            stream.close()


class NodeSource(_ExecSource):
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
        manifest = node_pod_manifest(self.node, self.capture_id)
        try:
            self.cluster.create_pod(self.namespace, manifest)
            self.pod_name = manifest["metadata"]["name"]
            self.cluster.wait_running(self.namespace, self.pod_name, "capture",
                                      start_timeout(), image())
            self._start(self.namespace, self.pod_name, "capture")
        except CaptureFailed as exc:
            from captures.adapters import k8s

            self.close()
            raise k8s.K8sError(str(exc)) from None
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


class ServiceSource(LiveSource):
    """Every pod behind a Service at once, one debug container each, merged into one pcapng.

    The pods start in parallel and each stream joins the merge the moment it opens: a stream
    nobody reads fills its pipe and socket buffers, tcpdump blocks on its output and the
    kernel drops what it cannot queue. A pod that cannot be captured (its debug container does
    not start, Pod Security, ...) is named in failure() and the others go on; only when none
    can be captured does open() fail."""

    def __init__(self, namespace: str, service: str, bpf: str = "", cluster=None):
        self.namespace, self.service, self.bpf = namespace, service, bpf
        self.vantage = f"service/{namespace}/{service}"
        self.interfaces = {}
        self.cluster = cluster
        self.pods: list[PodSource] = []
        self.failures: list[str] = []
        self.merger: PcapngMerger | None = None
        self._inventory = None
        self._lock = threading.Lock()

    def open(self) -> None:
        from captures.adapters import k8s

        self.cluster = self.cluster or connect()
        pods = self.cluster.service_pods(self.namespace, self.service)
        if not pods:
            raise k8s.K8sError(f"service {self.namespace}/{self.service} has no pods")
        self._inventory = _snapshot(self.cluster)
        self.merger = PcapngMerger(SNAPLEN)
        self.merger.start()

        def capture(pod: dict) -> None:
            source = PodSource(self.namespace, pod["name"], self.bpf, self.cluster,
                               snapshot=False)
            try:
                source.open()
            except Exception as exc:  # one pod's failure is named, the others go on
                with self._lock:
                    self.failures.append(f"pod {pod['name']}: {exc}")
                return
            with self._lock:
                self.pods.append(source)
                self.merger.add(source.pod, source.stream, source.interfaces)

        try:
            with ThreadPoolExecutor(max_workers=min(8, len(pods)),
                                    thread_name_prefix="kviz-k8s-open") as pool:
                list(pool.map(capture, pods))
        finally:
            self.merger.seal()
        if not self.pods:
            self.close()
            raise k8s.K8sError(f"no pod of service {self.namespace}/{self.service} could be "
                               f"captured: " + "; ".join(self.failures))
        self.interfaces = self.merger.interfaces
        self.stream = self.merger.stdout

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
            self.merger.seal()
            self.merger.join(5)
            self.merger.stdout.close()

    def failure(self) -> str:
        found = self.failures + [f for f in (s.failure() for s in self.pods) if f]
        return "; ".join(found)

    def inventory(self) -> dict | None:
        return self._inventory


def open_source(kind: str, spec: dict, bpf: str, max_packets: int | None = None,
                capture_id=None) -> LiveSource:
    """A pod, Service or node source (`max_packets`: the runner stops a cluster capture)."""
    if kind == "pod":
        return PodSource(spec["namespace"], spec["pod"], bpf)
    if kind == "service":
        return ServiceSource(spec["namespace"], spec["service"], bpf)
    if kind == "node":
        if capture_id is None:
            raise TargetError("a node capture needs its capture id (it labels the capture pod)")
        return NodeSource(spec["node"], capture_id, bpf)
    raise TargetError(f"no cluster source for kind {kind!r}")


register(KINDS, resolve=resolve, targets=targets, open=open_source)
