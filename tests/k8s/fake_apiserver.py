"""A stand-in Kubernetes API server: real HTTPS and WebSocket on 127.0.0.1, the API's wire shapes,
and behind it a small kubelet and container runtime, so kviz meets what a cluster would do.

No cluster can run here, so the unpatched `kubernetes` client talks to this instead. What it
models, and on what (sources read in kubernetes/kubernetes):
- TLS with its own CA (the kubeconfig carries it), bearer-token authentication.
- JSON lists and objects as a cluster returns them (namespaces, pods, services, endpointslices,
  nodes) for the lab's addressing (captures/lab/plan.py); label and field selectors on pods;
  watches (`?watch=true`: chunked JSON events from a resourceVersion, BOOKMARK-free, ended at
  timeoutSeconds), as kubectl debug's waitForContainer uses (pkg/cmd/debug/debug.go).
- RBAC: rules loaded from deploy/kubernetes/*.yaml (Roles, ClusterRoles and their bindings)
  decide each request for the calling ServiceAccount; a denial in the RBAC authorizer's words.
  A WebSocket upgrade is a GET, so exec and attach are authorized as `get`; with
  `websocket_create=True` (1.35's AuthorizePodWebsocketUpgradeCreatePermission) also `create`.
- PATCH pods/{name}/ephemeralcontainers (strategic merge patch only). A missing subresource is
  a 404 without details.name, a missing pod one with it (kubectl tells them apart that way).
- Pod Security admission on pod creation and ephemeral containers, from the namespace's
  `pod-security.kubernetes.io/enforce` label, refusing in the admission plugin's words
  (pod-security-admission policy/check_capabilities_baseline.go, check_hostNamespaces.go,
  check_privileged.go; admission.go: `violates PodSecurity "baseline:latest": ...`).
- A kubelet: a new container has no status at first, then waits (ContainerCreating or
  PodInitializing), pulls (failing `pull_failures` times with ErrImagePull, then
  ImagePullBackOff, as a rate-limited registry does), then runs. It starts nothing in a pod
  being deleted. Deletion honours the grace period: SIGTERM, then the object goes once its
  containers stopped; grace 0 removes the object at once while the runtime keeps the
  container until it notices (FORCE_LAG seconds).
- A container runtime: each kviz-made container's main process is modelled from its command
  (kviz's holder script; the former attach-style capture; anything else runs forever), with
  the capabilities containerd or CRI-O would give it (`runtime`). What a main process writes
  is its container log (`Container.log`, as /var/log/pods); an exec's output never is.
- pods/{name}/exec and /attach over WebSocket (RFC 6455, written here), binary channel frames
  (0 stdin, 1 stdout, 2 stderr, 3 the final Status, 255 v5 close). The 1.30+ stream
  translator (apiserver pkg/util/proxy/websocket.go) speaks v5 only and opens with an empty
  frame on the lowest writable channel; the older kubelet server offers v4 too. The Status is
  the kubelet's (pkg/kubelet/cri/streaming/remotecommand): an exec's carries the exit code
  (NonZeroExitCode, cause ExitCode), an attach's is Success unless the attach itself failed.
  Pings are answered; an `idle_timeout` cuts a connection with no frame either way for that
  long (a proxy or load balancer). An exec'd kviz capture plays a real tcpdump recording from
  tests/k8s/fixtures in odd-sized frames; `busy_seconds` then keeps replaying its records,
  and what finds the connection backed up (the client not reading) is counted as dropped.
Every request is recorded in `requests`, so a test can assert that none arrived.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import hashlib
import ipaddress
import itertools
import json
import re
import socket
import ssl
import struct
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

from captures.lab.plan import CLUSTER_CIDR, NODE_ADDRESS, POD_CIDR, LabPlan

FIXTURES = Path(__file__).with_name("fixtures")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TOKEN = "kviz-test-token"
WEB_TOKEN = "kviz-web-test-token"
USER = "system:serviceaccount:kviz:kviz-worker"
WEB_USER = "system:serviceaccount:kviz:kviz-web"
CHUNK = 97  # odd-sized frames: pcap records, and multi-byte sequences, split across frames
STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255
FORCE_LAG = 5.0  # seconds a force-deleted pod's container runs on before the kubelet notices
DROP_THRESHOLD = 256 * 1024  # bytes queued towards a client that has stopped reading
ENFORCE = "pod-security.kubernetes.io/enforce"
# Pod Security baseline: capabilities a container may add (check_capabilities_baseline.go).
BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                 "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
# What a root container gets without asking: containerd's default set (oci/spec.go) includes
# NET_RAW; CRI-O's default_capabilities (since 1.18) does not.
RUNTIME_CAPS = {"containerd": BASELINE_CAPS,
                "cri-o": {"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "SETGID", "SETUID",
                          "SETPCAP", "NET_BIND_SERVICE", "KILL"}}
RUNTIME_CAPS["containerd"] = BASELINE_CAPS | {"NET_RAW"}
LISTENING = (b"tcpdump: listening on any, link-type LINUX_SLL2 (Linux cooked v2), "
             b"snapshot length 262144 bytes\n")
NO_PERMISSION = ("any: You don't have permission to perform this capture on that device\n"
                 "(socket: Operation not permitted)")


@dataclass
class Request:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes = b""
    user: str = ""

    @property
    def json(self):
        return json.loads(self.body or b"null")


@dataclass
class Session:
    """One exec or attach: what a test can look at afterwards."""

    namespace: str
    pod: str
    container: str
    subprotocol: str
    kind: str = "exec"
    command: list = field(default_factory=list)
    sent: bytes = b""  # every stdout byte sent
    stdin: bytes = b""
    pings: int = 0
    dropped: int = 0  # replayed chunks that found the client not reading
    replayed: int = 0  # bytes of busy traffic sent (pcap records)
    ended_by: str = ""  # stop-line | stdin-closed | disconnected | idle-timeout | ...
    done: threading.Event = field(default_factory=threading.Event)
    transport: object = None


@dataclass
class Container:
    """A container the kubelet runs for kviz, and its main process."""

    namespace: str
    pod: str
    name: str
    ephemeral: bool
    spec: dict
    caps: frozenset
    state: dict = field(default_factory=dict)  # a ContainerStatus's state; {}: none reported
    log: bytearray = field(default_factory=bytearray)  # the main process's output
    files: dict = field(default_factory=dict)  # what scripts leave in the container's /tmp
    term: asyncio.Event = field(default_factory=asyncio.Event)  # SIGTERM
    stdin_closed: asyncio.Event = field(default_factory=asyncio.Event)
    task: object = None

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def mark(self) -> str:
        command = self.spec.get("command") or []
        return command[3] if len(command) > 3 else ""


def _status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lab_cluster(prefix: str = "kviz") -> dict:
    """The lab's pods, Services, slices and node as the API would return them."""
    plan = LabPlan(prefix)
    node = plan.node_name
    pods, services, slices = {}, {}, {}
    for pod in plan.pods:
        pods[(pod.namespace, pod.name)] = {
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": dict(pod.labels),
                         "uid": hashlib.sha1(pod.name.encode()).hexdigest(),
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": f"{pod.name}-7d4b9", "controller": True,
                                              "uid": "1"}]},
            "spec": {"nodeName": node, "containers": [{"name": c, "image": f"{c}:latest"}
                                                      for c in pod.containers]},
            "status": {"phase": "Running", "podIP": pod.ip, "podIPs": [{"ip": pod.ip}],
                       "hostIP": NODE_ADDRESS,
                       "containerStatuses": [{"name": c, "ready": True,
                                              "state": {"running": {}}}
                                             for c in pod.containers]},
        }
    for service in plan.services:
        backends = [plan.pod(name) for name in service.backends]
        selector = dict(backends[0].labels) if backends else {}
        services[(service.namespace, service.name)] = {
            "kind": "Service", "apiVersion": "v1",
            "metadata": {"name": service.name, "namespace": service.namespace},
            "spec": {"type": "ClusterIP", "clusterIP": service.cluster_ip,
                     "clusterIPs": [service.cluster_ip], "selector": selector,
                     "ports": [{"name": p.name, "port": p.port, "targetPort": p.target_port,
                                "protocol": p.protocol} for p in service.ports]},
        }
        slices[(service.namespace, f"{service.name}-abcde")] = {
            "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": f"{service.name}-abcde", "namespace": service.namespace,
                         "labels": {"kubernetes.io/service-name": service.name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [b.ip], "conditions": {"ready": True}, "nodeName": node,
                           "targetRef": {"kind": "Pod", "name": b.name,
                                         "namespace": b.namespace}} for b in backends],
            "ports": [{"name": p.name, "port": p.target_port, "protocol": p.protocol}
                      for p in service.ports],
        }
    namespaces = sorted({ns for ns, _ in pods} | {"kviz"})
    # Pod Security as a cluster would have it: `baseline` is the usual level for workloads,
    # kviz's own namespace is privileged (its node capture pods use hostNetwork).
    levels = {"kviz": "privileged", "kube-system": "privileged"}
    return {
        "namespaces": {ns: {"kind": "Namespace", "apiVersion": "v1",
                            "metadata": {"name": ns, "labels": {
                                "kubernetes.io/metadata.name": ns,
                                ENFORCE: levels.get(ns, "baseline")}},
                            "status": {"phase": "Active"}} for ns in namespaces},
        "pods": pods, "services": services, "endpointslices": slices,
        "nodes": {node: {"kind": "Node", "apiVersion": "v1", "metadata": {"name": node},
                         "spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR],
                                  "taints": [{"key": "node-role.kubernetes.io/control-plane",
                                              "effect": "NoSchedule"}]},
                         "status": {"addresses": [{"type": "InternalIP", "address": NODE_ADDRESS},
                                                  {"type": "Hostname", "address": node}]}}},
        "cluster_cidr": CLUSTER_CIDR,
    }


_TLS: dict = {}


def tls_files() -> dict:
    """A self-signed certificate for 127.0.0.1 (its own CA), made once per test run."""
    if _TLS:
        return _TLS
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kviz-fake-apiserver")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory = Path(tempfile.mkdtemp(prefix="kviz-fake-tls-"))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(pem)
    (directory / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    _TLS.update(cert=str(directory / "cert.pem"), key=str(directory / "key.pem"), pem=pem)
    return _TLS


class FakeApiServer:
    def __init__(self):
        self.state = lab_cluster()
        self.requests: list[Request] = []
        self.sessions: list[Session] = []
        self.containers: list[Container] = []  # what the runtime ran for kviz, in order
        # pod name → pcap bytes its capture container streams; "*" for any other pod
        self.recordings = {name: (FIXTURES / f"{name}.pcap").read_bytes()
                           for name in ("ubuntu", "nginx-a", "nginx-b")}
        self.recordings["*"] = self.recordings["ubuntu"]
        self.interfaces = json.loads((FIXTURES / "interfaces.json").read_text())
        self.tokens = {TOKEN: USER, WEB_TOKEN: WEB_USER}
        self.forbidden: list[tuple[str, str, str, str]] = []  # (method, path regex, verb, res.)
        self.rbac: dict | None = None  # None: every request allowed (load_rbac() to check)
        self.authorized: list[tuple[str, str, str, str]] = []  # (user, verb, resource, ns)
        self.websocket_create = False  # 1.35+: a WebSocket upgrade also needs `create`
        self.no_ephemeral_containers = False
        self.capture_failure = ""  # tcpdump's complaint at start; it then exits 1
        self.die_after = 0  # stdout bytes after which tcpdump dies (0: never)
        self.runtime = "containerd"
        self.status_delay = 0.05  # a new container has no status for this long
        self.pull_delay = 0.05
        self.pull_failures = 0  # failed pulls before one succeeds; -1: never succeeds
        self.slow_pods: dict[str, float] = {}  # pod name → extra seconds before it starts
        self.delete_after_get: set[tuple[str, str]] = set()  # (ns, pod) gone after one GET
        self.translator = True  # 1.30+: the API server's stream translator (v5 only)
        self.idle_timeout = 0.0  # a proxy cutting connections silent for this long
        self.quiet = 0.0  # seconds tcpdump sees no packet after it starts listening
        self.busy_seconds = 0.0  # seconds of replayed traffic after the recording
        self.drop_status = False  # the connection is cut before the final Status
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._version = itertools.count(100)
        self._events: list[tuple[int, str, dict]] = []  # (resourceVersion, type, pod)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fake-apiserver")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeApiServer:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._tick = asyncio.Event()
        files = tls_files()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(files["cert"], files["key"])
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=context)
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        await self._stopping.wait()
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def call(self, fn, *args):
        """Run fn in the server's loop (state changes from a test) and return its result."""
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path, context: str = "fake", token: str = TOKEN) -> Path:
        ca = base64.b64encode(tls_files()["pem"]).decode()
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "fake", "cluster": {"server": self.url,
                                                      "certificate-authority-data": ca}}],
            "users": [{"name": "kviz", "user": {"token": token}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "kviz"}},
                         {"name": "other", "context": {"cluster": "fake", "user": "kviz"}}],
        }))
        return path

    def forbid(self, method: str, path_pattern: str, verb: str, resource: str) -> None:
        self.forbidden.append((method, path_pattern, verb, resource))

    def api_requests(self) -> list[Request]:
        return list(self.requests)

    def running_containers(self) -> list[Container]:
        return [c for c in self.containers if c.running]

    def container_logs(self) -> bytes:
        return b"".join(bytes(c.log) for c in self.containers)

    # -- RBAC ------------------------------------------------------------------------------

    def load_rbac(self, directory: Path = DEPLOY) -> None:
        """Authorize with the Roles, ClusterRoles and bindings of deploy/kubernetes/."""
        roles, bindings = {}, []
        for path in sorted(directory.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc or not doc.get("kind"):
                    continue
                meta = doc.get("metadata") or {}
                if doc["kind"] == "ClusterRole":
                    roles[("ClusterRole", "", meta["name"])] = doc.get("rules") or []
                elif doc["kind"] == "Role":
                    roles[("Role", meta["namespace"], meta["name"])] = doc.get("rules") or []
                elif doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
                    bindings.append(doc)
        self.rbac = {"roles": roles, "bindings": bindings}

    def _rbac_allows(self, user: str, verb: str, group: str, resource: str,
                     namespace: str | None) -> bool:
        for binding in self.rbac["bindings"]:
            subjects = {f"system:serviceaccount:{s.get('namespace')}:{s['name']}"
                        for s in binding.get("subjects") or [] if s["kind"] == "ServiceAccount"}
            if user not in subjects:
                continue
            scope = None
            if binding["kind"] == "RoleBinding":
                scope = binding["metadata"]["namespace"]
                if namespace != scope:
                    continue
            ref = binding["roleRef"]
            rules = self.rbac["roles"].get((ref["kind"], scope if ref["kind"] == "Role" else "",
                                            ref["name"])) or []
            for rule in rules:
                if (verb in rule.get("verbs", []) and group in rule.get("apiGroups", [])
                        and resource in rule.get("resources", [])):
                    return True
        return False

    def _attributes(self, request: Request, websocket: bool) -> list[tuple]:
        """(verb, group, resource, namespace, name) as the API server's request info sees it."""
        path, query = request.path, request.query
        group = "discovery.k8s.io" if path.startswith("/apis/discovery.k8s.io/") else ""
        parts = [p for p in re.sub(r"^/(api/v1|apis/discovery\.k8s\.io/v1)/?", "", path)
                 .split("/") if p]
        namespace = None
        if len(parts) >= 2 and parts[0] == "namespaces":
            namespace, parts = parts[1], parts[2:]
            if not parts:
                parts = ["namespaces", namespace]
        resource = parts[0] if parts else ""
        name = parts[1] if len(parts) > 1 else ""
        if len(parts) > 2:
            resource = f"{resource}/{parts[2]}"
        watching = (query.get("watch") or [""])[0].lower() in ("true", "1")
        verb = {"POST": "create", "PATCH": "patch", "DELETE": "delete",
                "PUT": "update"}.get(request.method)
        if verb is None:
            verb = "get" if name else ("watch" if watching else "list")
        found = [(verb, group, resource, namespace, name)]
        if websocket and self.websocket_create:
            found.append(("create", group, resource, namespace, name))
        return found

    def _denied(self, request: Request, websocket: bool = False):
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        user = self.tokens.get(token)
        if user is None:
            return 401, _status(401, "Unauthorized", "Unauthorized")
        request.user = user
        for method, pattern, verb, resource in self.forbidden:
            if method == request.method and re.search(pattern, request.path):
                found = re.match(r"/api/v1/namespaces/([^/]+)/(\w+)(?:/([^/]+))?", request.path)
                namespace, kind, name = (found.groups() if found else (None, "", ""))
                return 403, self._forbidden(user, verb, "", resource, namespace, kind, name)
        if self.rbac is None:
            return None
        for verb, group, resource, namespace, name in self._attributes(request, websocket):
            if not self._rbac_allows(user, verb, group, resource, namespace):
                return 403, self._forbidden(user, verb, group, resource, namespace,
                                            resource.split("/")[0], name)
            self.authorized.append((user, verb, f"{resource}.{group}" if group else resource,
                                    namespace or ""))
        return None

    @staticmethod
    def _forbidden(user, verb, group, resource, namespace, kind, name) -> dict:
        # An RBAC denial as the API server words its 403 (what kviz's FORBIDDEN pattern reads;
        # the Status names the object in details, as for any StatusError).
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        return _status(403, "Forbidden", f'{kind} "{name or ""}" is forbidden: User "{user}" '
                       f'cannot {verb} resource "{resource}" in API group "{group}"{where}',
                       {"name": name, "kind": kind})

    # -- HTTP ------------------------------------------------------------------------------

    async def _connection(self, reader, writer) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _version = line.decode("latin-1").split(" ", 2)
                headers = {}
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    key, _, value = header.decode("latin-1").partition(":")
                    headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                url = urlsplit(target)
                request = Request(method, url.path, parse_qs(url.query), headers, body)
                self.requests.append(request)
                if headers.get("upgrade", "").lower() == "websocket":
                    await self._websocket(request, reader, writer)
                    return
                if (request.query.get("watch") or [""])[0].lower() in ("true", "1"):
                    denied = self._denied(request)
                    if denied:
                        self._respond(writer, *denied)
                        await writer.drain()
                        continue
                    await self._watch(request, writer)
                    continue
                self._respond(writer, *self._route(request))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError,
                ssl.SSLError):
            return  # the client went away, or the server is stopping
        finally:
            writer.close()

    @staticmethod
    def _respond(writer, code: int, payload) -> None:
        data = json.dumps(payload).encode()
        writer.write(f"HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data)

    def _route(self, request: Request):  # a routing table, read top to bottom
        denied = self._denied(request)
        if denied:
            return denied
        path, method, state = request.path, request.method, self.state
        selector = (request.query.get("labelSelector") or [""])[0]
        fields = (request.query.get("fieldSelector") or [""])[0]
        if method == "GET" and path == "/api/v1/namespaces":
            return 200, self._list("NamespaceList", state["namespaces"].values())
        if method == "GET" and path == "/api/v1/nodes":
            return 200, self._list("NodeList", state["nodes"].values())
        if method == "GET" and path == "/api/v1/pods":
            return 200, self._list("PodList", _select(state["pods"].values(), selector))
        if method == "GET" and path == "/api/v1/services":
            return 200, self._list("ServiceList", state["services"].values())
        if method == "GET" and path == "/apis/discovery.k8s.io/v1/endpointslices":
            return 200, self._list("EndpointSliceList", state["endpointslices"].values(),
                                   "discovery.k8s.io/v1")
        found = re.fullmatch(r"/(api/v1|apis/discovery\.k8s\.io/v1)/namespaces/([^/]+)/(\w+)"
                             r"(?:/([^/]+))?(?:/(\w+))?", path)
        if not found:
            return 404, _status(404, "NotFound", "the server could not find the requested "
                                "resource")
        _group, namespace, resource, name, sub = found.groups()
        if namespace not in state["namespaces"]:
            return 404, _status(404, "NotFound", f'namespaces "{namespace}" not found',
                                {"name": namespace, "kind": "namespaces"})
        table = state.get(resource)
        if table is None:
            return 404, _status(404, "NotFound", "the server could not find the requested "
                                "resource")
        if name is None and method == "GET":
            items = [v for (ns, _n), v in table.items() if ns == namespace]
            if resource == "pods":
                items = _fields(_select(items, selector), fields)
            return 200, self._list(resource.capitalize() + "List", items)
        if name is None and method == "POST" and resource == "pods":
            return self._create_pod(namespace, request.json)
        if (method == "PATCH" and sub == "ephemeralcontainers" and self.no_ephemeral_containers):
            # The subresource does not exist: a 404 with no details (what kubectl checks).
            return 404, _status(404, "NotFound", "the server could not find the requested "
                                "resource")
        obj = table.get((namespace, name))
        if obj is None:
            return 404, _status(404, "NotFound", f'{resource} "{name}" not found',
                                {"name": name, "kind": resource})
        if method == "GET" and sub is None:
            if (namespace, name) in self.delete_after_get:
                self.delete_after_get.discard((namespace, name))
                self._remove(obj)  # deleted by someone else right after this answer
            return 200, copy.deepcopy(obj)
        if method == "DELETE" and resource == "pods" and sub is None:
            grace = (request.query.get("gracePeriodSeconds") or [None])[0]
            if grace is None and request.body:
                grace = request.json.get("gracePeriodSeconds")
            if grace is None:
                grace = obj["spec"].get("terminationGracePeriodSeconds", 30)
            return 200, self._delete(obj, int(grace))
        if method == "PATCH" and resource == "pods" and sub == "ephemeralcontainers":
            return self._patch_ephemeral(obj, request)
        return 405, _status(405, "MethodNotAllowed", f"{method} is not allowed here")

    def _list(self, kind: str, items, api_version: str = "v1") -> dict:
        return {"kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": str(self._current())},
                "items": [copy.deepcopy(i) for i in items]}

    def _current(self) -> int:
        return self._events[-1][0] if self._events else 99

    # -- watches ---------------------------------------------------------------------------

    async def _watch(self, request: Request, writer) -> None:
        found = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", request.path)
        namespace = found.group(1) if found else ""
        fields = (request.query.get("fieldSelector") or [""])[0]
        since = int((request.query.get("resourceVersion") or ["0"])[0] or 0)
        timeout = float((request.query.get("timeoutSeconds") or ["30"])[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        deadline = self.loop.time() + timeout
        while True:
            for version, kind, pod in [e for e in self._events if e[0] > since]:
                since = version
                if pod["metadata"]["namespace"] == namespace and _fields([pod], fields):
                    line = json.dumps({"type": kind, "object": pod}).encode() + b"\n"
                    writer.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            await writer.drain()
            left = deadline - self.loop.time()
            if left <= 0:
                break
            tick = self._tick
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tick.wait(), left)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    def _touch(self, pod: dict, kind: str = "MODIFIED") -> None:
        version = next(self._version)
        pod["metadata"]["resourceVersion"] = str(version)
        self._events.append((version, kind, copy.deepcopy(pod)))
        self._tick.set()
        self._tick = asyncio.Event()

    # -- pods, the kubelet and the runtime -------------------------------------------------

    def _admit(self, namespace: str, pod: dict):
        """Pod Security admission for the namespace's enforce level, or None."""
        level = ((self.state["namespaces"][namespace]["metadata"].get("labels") or {})
                 .get(ENFORCE, "privileged"))
        if level == "privileged":
            return None
        spec = pod["spec"]
        containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or []),
                      *(spec.get("ephemeralContainers") or [])]
        found = []
        if spec.get("hostNetwork"):
            found.append("host namespaces (hostNetwork=true)")
        privileged = [c["name"] for c in containers
                      if (c.get("securityContext") or {}).get("privileged")]
        if privileged:
            found.append(f"privileged ({_plural('container', privileged)} "
                         f"{_quote(privileged)} must not set securityContext.privileged=true)")
        allowed = BASELINE_CAPS if level == "baseline" else {"NET_BIND_SERVICE"}
        bad, caps = [], set()
        for c in containers:
            added = set(((c.get("securityContext") or {}).get("capabilities") or {})
                        .get("add") or []) - allowed
            if added:
                bad.append(c["name"])
                caps |= added
        if bad and level == "baseline":
            found.append(f"non-default capabilities ({_plural('container', bad)} {_quote(bad)} "
                         f"must not include {_quote(sorted(caps))} in "
                         f"securityContext.capabilities.add)")
        if level == "restricted":
            no_drop = [c["name"] for c in containers if "ALL" not in (
                ((c.get("securityContext") or {}).get("capabilities") or {}).get("drop") or [])]
            details = []
            if no_drop:
                details.append(f"{_plural('container', no_drop)} {_quote(no_drop)} must set "
                               f"securityContext.capabilities.drop=[\"ALL\"]")
            if bad:
                details.append(f"{_plural('container', bad)} {_quote(bad)} must not include "
                               f"{_quote(sorted(caps))} in securityContext.capabilities.add")
            if details:
                found.append(f"unrestricted capabilities ({'; '.join(details)})")
            root = [c["name"] for c in containers
                    if not (c.get("securityContext") or {}).get("runAsNonRoot")
                    and not (spec.get("securityContext") or {}).get("runAsNonRoot")]
            if root:
                found.append(f"runAsNonRoot != true (pod or {_plural('container', root)} "
                             f"{_quote(root)} must set securityContext.runAsNonRoot=true)")
        if not found:
            return None
        name = pod["metadata"]["name"]
        return 403, _status(403, "Forbidden", f'pods "{name}" is forbidden: violates '
                            f'PodSecurity "{level}:latest": {", ".join(found)}',
                            {"name": name, "kind": "pods"})

    def _create_pod(self, namespace: str, manifest: dict):
        name = manifest["metadata"]["name"]
        if (namespace, name) in self.state["pods"]:
            return 409, _status(409, "AlreadyExists", f'pods "{name}" already exists')
        pod = copy.deepcopy(manifest)
        pod["metadata"].update(namespace=namespace, uid=hashlib.sha1(name.encode()).hexdigest(),
                               creationTimestamp=_now())
        refused = self._admit(namespace, pod)
        if refused:
            return refused
        node_ip = NODE_ADDRESS if pod["spec"].get("hostNetwork") else "10.244.10.200"
        pod["status"] = {"phase": "Pending", "podIP": node_ip, "podIPs": [{"ip": node_ip}]}
        self.state["pods"][(namespace, name)] = pod
        self._touch(pod, "ADDED")
        for spec in pod["spec"]["containers"]:
            self._run_container(pod, spec, ephemeral=False)
        return 201, pod

    def _patch_ephemeral(self, pod: dict, request: Request):
        if request.headers.get("content-type") != "application/strategic-merge-patch+json":
            # The real server reads any other patch type differently; a dict body as a JSON
            # patch is refused there too.
            return 415, _status(415, "UnsupportedMediaType",
                                f"unexpected patch type {request.headers.get('content-type')}")
        added = request.json["spec"]["ephemeralContainers"]
        patched = copy.deepcopy(pod)
        spec = patched["spec"].setdefault("ephemeralContainers", [])
        new = [c for c in added if all(c["name"] != e["name"] for e in spec)]
        spec.extend(new)
        refused = self._admit(pod["metadata"]["namespace"], patched)
        if refused:
            return refused
        pod["spec"]["ephemeralContainers"] = spec
        self._touch(pod)
        for container in new:
            self._run_container(pod, container, ephemeral=True)
        return 200, pod

    def _run_container(self, pod: dict, spec: dict, ephemeral: bool) -> None:
        security = spec.get("securityContext") or {}
        capabilities = security.get("capabilities") or {}
        caps = set(RUNTIME_CAPS[self.runtime])
        if "ALL" in (capabilities.get("drop") or []):
            caps = set()
        caps -= set(capabilities.get("drop") or [])
        caps |= set(capabilities.get("add") or [])
        if security.get("privileged"):
            caps |= {"NET_RAW", "NET_ADMIN", "SYS_ADMIN"}
        container = Container(pod["metadata"]["namespace"], pod["metadata"]["name"],
                              spec["name"], ephemeral, spec, frozenset(caps))
        self.containers.append(container)
        container.task = asyncio.ensure_future(self._kubelet(pod, container))

    def _report(self, pod: dict, container: Container) -> None:
        """The kubelet's status update for one container."""
        key = "ephemeralContainerStatuses" if container.ephemeral else "containerStatuses"
        statuses = pod["status"].setdefault(key, [])
        entry = next((s for s in statuses if s["name"] == container.name), None)
        if entry is None:
            entry = {"name": container.name, "image": container.spec.get("image", "")}
            statuses.append(entry)
        entry.update(state=copy.deepcopy(container.state), ready=container.running)
        if not container.ephemeral:
            mine = [c for c in self.containers if c.pod == container.pod
                    and c.namespace == container.namespace and not c.ephemeral]
            if all("terminated" in c.state for c in mine):
                failed = any(c.state["terminated"]["exitCode"] for c in mine)
                pod["status"]["phase"] = "Failed" if failed else "Succeeded"
            elif any(c.running for c in mine):
                pod["status"]["phase"] = "Running"
        if self._exists(pod):
            self._touch(pod)

    def _exists(self, pod: dict) -> bool:
        meta = pod["metadata"]
        return self.state["pods"].get((meta["namespace"], meta["name"])) is pod

    async def _kubelet(self, pod: dict, container: Container) -> None:
        await asyncio.sleep(self.status_delay + self.slow_pods.get(container.pod, 0))
        if pod["metadata"].get("deletionTimestamp") or not self._exists(pod):
            return  # the kubelet starts nothing in a pod that is shutting down
        container.state = {"waiting": {"reason": "PodInitializing" if container.ephemeral
                                       else "ContainerCreating"}}
        self._report(pod, container)
        image = container.spec.get("image", "")
        if not re.fullmatch(r"[a-z0-9][a-z0-9._/:@-]*", image):
            container.state = {"waiting": {"reason": "InvalidImageName", "message": (
                f'Failed to apply default image tag "{image}": couldn\'t parse image name '
                f'"{image}": invalid reference format')}}
            self._report(pod, container)
            return
        attempts = itertools.count() if self.pull_failures < 0 else range(self.pull_failures)
        for _attempt in attempts:
            await asyncio.sleep(self.pull_delay)
            container.state = {"waiting": {"reason": "ErrImagePull", "message": (
                f'failed to pull and unpack image "docker.io/{image}": failed to copy: '
                f'httpReadSeeker: failed open: unexpected status code https://registry-1.'
                f'docker.io/v2/{image.split(":")[0]}/manifests/sha256:1f2e: 429 Too Many '
                f'Requests - Server message: toomanyrequests: You have reached your pull rate '
                f'limit.')}}
            self._report(pod, container)
            await asyncio.sleep(self.pull_delay)
            container.state = {"waiting": {"reason": "ImagePullBackOff",
                                           "message": f'Back-off pulling image "{image}"'}}
            self._report(pod, container)
            if not self._exists(pod):
                return
        await asyncio.sleep(self.pull_delay)
        if pod["metadata"].get("deletionTimestamp") or not self._exists(pod):
            return
        container.state = {"running": {"startedAt": _now()}}
        self._report(pod, container)
        code, message = await self._main_process(container)
        container.state = {"terminated": {"exitCode": code,
                                          "reason": "Completed" if code == 0 else "Error",
                                          "startedAt": container.state["running"]["startedAt"],
                                          "finishedAt": _now()}}
        if message:
            container.state["terminated"]["message"] = message
        self._report(pod, container)
        self._maybe_gone(pod)

    async def _main_process(self, container: Container) -> tuple[int, str]:
        """How the container's own process runs and ends: (exit code, termination message)."""
        command = container.spec.get("command") or []
        if container.mark == "kviz-hold":
            # kviz's HOLD_SCRIPT: $1 seconds for a capture to start, $2 for any to end.
            wait, longest = float(command[4]), float(command[5])
            started = self.loop.time()
            while True:
                if container.term.is_set():
                    return 143, ""
                if "/tmp/kviz.done" in container.files:
                    code = int(container.files["/tmp/kviz.done"] or 0)
                    return code, f"tcpdump exited with code {code}\n" if code else ""
                elapsed = self.loop.time() - started
                if "/tmp/kviz.started" not in container.files and elapsed >= wait:
                    return 0, ""
                if elapsed >= longest:
                    return 0, ""
                await asyncio.sleep(0.02)
        if container.spec.get("stdin") and container.spec.get("stdinOnce"):
            # An attach-style process blocked on stdin: it runs until an attach's stdin ends.
            stopped = asyncio.ensure_future(container.stdin_closed.wait())
            term = asyncio.ensure_future(container.term.wait())
            await asyncio.wait([stopped, term], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            term.cancel()
            return (0 if container.stdin_closed.is_set() else 143), ""
        await container.term.wait()  # an application: runs until stopped
        return 143, ""

    def _maybe_gone(self, pod: dict) -> None:
        if not pod["metadata"].get("deletionTimestamp") or not self._exists(pod):
            return
        meta = pod["metadata"]
        mine = [c for c in self.containers
                if c.pod == meta["name"] and c.namespace == meta["namespace"]]
        if all(not c.running for c in mine):
            self._remove(pod)

    def _remove(self, pod: dict) -> None:
        meta = pod["metadata"]
        if self.state["pods"].pop((meta["namespace"], meta["name"]), None) is not None:
            self._touch(pod, "DELETED")

    def _delete(self, pod: dict, grace: int) -> dict:
        meta = pod["metadata"]
        mine = [c for c in self.containers if c.pod == meta["name"]
                and c.namespace == meta["namespace"] and c.running]
        if grace == 0:
            # Force: the object goes now; the kubelet finds the container later.
            self._remove(pod)
            for container in mine:
                self.loop.call_later(FORCE_LAG, container.term.set)
            return pod
        meta["deletionTimestamp"] = _now()
        meta["deletionGracePeriodSeconds"] = grace
        self._touch(pod)
        for container in mine:
            container.term.set()  # SIGTERM
        self._maybe_gone(pod)
        return pod

    def add_rollout(self) -> None:
        """The nginx Service mid-rollout: its endpoints in two slices per address family
        (dual-stack), nginx-a ready, nginx-b not ready yet, nginx-old terminating (its pod
        being deleted, so the kubelet starts nothing in it)."""
        pods, slices = self.state["pods"], self.state["endpointslices"]
        old = copy.deepcopy(pods[("default", "nginx-a")])
        old["metadata"].update(name="nginx-old", deletionTimestamp=_now(),
                               deletionGracePeriodSeconds=30)
        old["status"]["podIP"] = "10.244.10.92"
        old["status"]["podIPs"] = [{"ip": "10.244.10.92"}, {"ip": "fd00:10:244::92"}]
        pods[("default", "nginx-old")] = old
        del slices[("default", "nginx-abcde")]
        endpoints = {"nginx-a": ({"ready": True, "serving": True, "terminating": False},
                                 "10.244.10.90", "fd00:10:244::90"),
                     "nginx-b": ({"ready": False, "serving": False, "terminating": False},
                                 "10.244.10.91", "fd00:10:244::91"),
                     "nginx-old": ({"ready": False, "serving": True, "terminating": True},
                                   "10.244.10.92", "fd00:10:244::92")}
        for family, index in (("IPv4", 1), ("IPv6", 2)):
            for suffix, names in (("x1", ["nginx-a", "nginx-old"]), ("x2", ["nginx-b"])):
                name = f"nginx-{family.lower()}{suffix}"
                slices[("default", name)] = {
                    "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                    "metadata": {"name": name, "namespace": "default",
                                 "labels": {"kubernetes.io/service-name": "nginx"}},
                    "addressType": family,
                    "endpoints": [{"addresses": [endpoints[n][index]],
                                   "conditions": endpoints[n][0], "nodeName": "kviz-node",
                                   "targetRef": {"kind": "Pod", "name": n,
                                                 "namespace": "default"}} for n in names],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}

    # -- WebSocket (exec, attach) ----------------------------------------------------------

    async def _websocket(self, request: Request, reader, writer) -> None:
        found = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/(attach|exec)",
                             request.path)
        denied = self._denied(request, websocket=True)
        pod = self.state["pods"].get(found.groups()[:2]) if found else None
        container_name = (request.query.get("container") or [""])[0]
        container = next((c for c in self.containers if pod is not None
                          and (c.namespace, c.pod) == found.groups()[:2]
                          and c.name == container_name), None)
        failure = denied
        if failure is None and pod is None:
            failure = 404, _status(404, "NotFound", f'pods "{found.group(2) if found else ""}" '
                                   f'not found')
        if failure is None and (container is None or not container.running):
            # What the kubelet answers for a container that is not running (yet, or any more).
            failure = 500, _status(500, "InternalError", f"Internal error occurred: error "
                                   f"attaching to container: container not found "
                                   f'("{container_name}")')
        if failure:
            code, body = failure
            data = json.dumps(body).encode()
            writer.write(f"HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
            await writer.drain()
            return
        offered = [p.strip() for p in request.headers.get("sec-websocket-protocol", "").split(",")]
        supported = (("v5.channel.k8s.io",) if self.translator
                     else ("v4.channel.k8s.io", "v3.channel.k8s.io"))
        chosen = next((p for p in supported if p in offered), "")
        accept = base64.b64encode(hashlib.sha1(
            (request.headers["sec-websocket-key"] + WS_GUID).encode()).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n"
                      f"Sec-WebSocket-Protocol: {chosen}\r\n\r\n").encode())
        sock = writer.get_extra_info("socket")
        if sock is not None:  # a small send buffer: a client that stops reading shows soon
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        if self.translator:
            # apiserver pkg/util/proxy/websocket.go: "Send an empty message to the lowest
            # writable channel to notify the client the connection is established".
            writer.write(_frame(0x2, bytes([STDOUT])))
        await writer.drain()
        namespace, name, kind = found.groups()
        session = Session(namespace, name, container_name, chosen, kind,
                          request.query.get("command") or [])
        session.transport = writer.transport
        self.sessions.append(session)
        try:
            await self._session(session, container, reader, writer)
        finally:
            session.done.set()

    async def _session(self, session: Session, container: Container, reader, writer) -> None:
        frames: asyncio.Queue = asyncio.Queue()
        activity = [self.loop.time()]

        async def read_frames():
            try:
                while True:
                    opcode, payload = await _read_frame(reader)
                    activity[0] = self.loop.time()
                    if opcode == 0x8:
                        break
                    if opcode == 0x9:
                        session.pings += 1
                        writer.write(_frame(0xA, payload))
                        continue
                    if opcode in (0x1, 0x2) and payload:
                        await frames.put(payload)
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                pass
            await frames.put(None)  # the connection is gone

        async def idle_cut():
            while True:
                await asyncio.sleep(self.idle_timeout / 4)
                if self.loop.time() - activity[0] > self.idle_timeout:
                    session.ended_by = "idle-timeout"
                    writer.transport.abort()  # a proxy drops it: no close frame, no Status
                    await frames.put(None)
                    return

        lines = 0

        async def next_event(timeout=None):
            """A stdin line, 'closed' or 'gone'; None on timeout."""
            nonlocal lines
            while True:
                try:
                    payload = await asyncio.wait_for(frames.get(), timeout)
                except TimeoutError:
                    return None
                if payload is None:
                    return "gone"
                if payload[0] == CLOSE and payload[1:2] == bytes([STDIN]):
                    return "closed"
                if payload[0] == STDIN:
                    session.stdin += payload[1:]
                    if session.stdin.count(b"\n") > lines:
                        lines += 1
                        return "line"

        def send(channel: int, data: bytes) -> None:
            writer.write(_frame(0x2, bytes([channel]) + data))
            activity[0] = self.loop.time()

        reading = asyncio.ensure_future(read_frames())
        watchdog = asyncio.ensure_future(idle_cut()) if self.idle_timeout else None
        try:
            if session.kind == "attach":
                code = await self._attach(session, container, send, writer, next_event)
                status = {"metadata": {}, "status": "Success"}  # the kubelet's attach.go
            else:
                code = await self._exec(session, container, send, writer, next_event)
                status = ({"metadata": {}, "status": "Success"} if code == 0 else {
                    "metadata": {}, "status": "Failure", "message": "command terminated with "
                    f"non-zero exit code: error executing command [{' '.join(session.command)}"
                    f"], exit code {code}", "reason": "NonZeroExitCode", "details": {
                        "causes": [{"reason": "ExitCode", "message": str(code)}]}})
            if self.drop_status:
                writer.transport.abort()  # cut on the way: the Status never arrives
            elif session.ended_by not in ("disconnected", "idle-timeout"):
                send(ERROR, json.dumps(status).encode())
                writer.write(_frame(0x8, struct.pack("!H", 1000)))
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            session.ended_by = session.ended_by or "disconnected"
        finally:
            reading.cancel()
            if watchdog:
                watchdog.cancel()

    async def _exec(self, session, container: Container, send, writer, next_event) -> int:
        """An exec'd process; returns its exit code. Its output goes to the client only."""
        command = session.command
        mark = command[3] if len(command) > 3 else ""
        if mark == "kviz-end":
            container.files["/tmp/kviz.done"] = "0"
            session.ended_by = "ended"
            return 0
        if mark != "kviz-capture":
            return 0
        container.files["/tmp/kviz.started"] = ""
        code = 0  # a connection that broke closed stdin: the script SIGINTs tcpdump
        try:
            code = await self._tcpdump(session, container, send, writer, next_event)
        finally:
            container.files["/tmp/kviz.done"] = str(code)
        return code

    async def _tcpdump(self, session, container, send, writer, next_event, log=None) -> int:
        """kviz's capture script: interface names, tcpdump's words, a real recording."""
        def out(channel: int, data: bytes) -> None:
            send(channel, data)
            if log is not None:
                log.extend(data)  # an attached main process: the runtime logs it too

        names = self.interfaces.get(session.pod, {"1": "lo", "2": "eth0"})
        out(STDERR, "".join(f"kviz-if {i} {n}\n" for i, n in names.items()).encode())
        failure = self.capture_failure or ("" if "NET_RAW" in container.caps else NO_PERMISSION)
        if failure:
            out(STDERR, f"tcpdump: {failure}\n".encode())
            session.ended_by = "failed"
            return 1
        out(STDERR, LISTENING)
        ended = await next_event(self.quiet) if self.quiet else None
        recording = self.recordings.get(session.pod, self.recordings["*"])
        for at in range(0, len(recording), CHUNK):
            if ended:
                break
            chunk = recording[at:at + CHUNK]
            out(STDOUT, chunk)
            session.sent += chunk
            await writer.drain()
            if self.die_after and len(session.sent) >= self.die_after:
                out(STDERR, b"tcpdump: pcap_loop: The interface disappeared\n")
                session.ended_by = "died"
                return 1
            ended = await next_event(0.002)
        if self.busy_seconds and not ended:
            ended = await self._replay(session, recording, send, next_event)
        while ended is None:
            ended = await next_event()
        session.ended_by = session.ended_by or {"line": "stop-line", "closed": "stdin-closed",
                                                "gone": "disconnected"}[ended]
        if ended != "gone":
            out(STDERR, b"3 packets captured\n")
        return 0

    async def _replay(self, session, recording: bytes, send, next_event):
        """Busy traffic: the recording's packets again, about 2 MB/s; a chunk that finds the
        connection backed up (the client stopped reading: tcpdump would block on its
        output) is dropped, as the kernel drops what tcpdump does not take."""
        records = recording[24:] * (16 * 1024 // max(1, len(recording) - 24) + 1)
        deadline = self.loop.time() + self.busy_seconds
        while self.loop.time() < deadline:
            if session.transport.get_write_buffer_size() > DROP_THRESHOLD:
                session.dropped += 1
            else:
                send(STDOUT, records)
                session.replayed += len(records)
            ended = await next_event(0.008)
            if ended:
                return ended
        return None

    async def _attach(self, session, container: Container, send, writer, next_event) -> int:
        """Attach to the main process: what it writes now (the runtime logs it as well)."""
        if not (container.spec.get("stdin") and container.spec.get("stdinOnce")):
            ended = await next_event()
            session.ended_by = {"line": "stdin-line", "closed": "stdin-closed",
                                "gone": "disconnected", None: ""}[ended]
            return 0
        # The former attach-style capture: it waits for a line, then captures.
        first = await next_event()
        if first != "line":
            session.ended_by = "never started"
            container.stdin_closed.set()
            return 0
        try:
            await self._tcpdump(session, container, send, writer, next_event, log=container.log)
        finally:
            container.stdin_closed.set()  # stdinOnce: the attach's stdin ended, so did it
        return 0


def _plural(word: str, items) -> str:
    return word if len(items) == 1 else word + "s"


def _quote(items) -> str:
    return ", ".join(f'"{item}"' for item in items)


def _select(pods, selector: str) -> list:
    if not selector:
        return list(pods)
    wanted = dict(term.split("=", 1) for term in selector.split(","))
    return [p for p in pods
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]


def _fields(pods, selector: str) -> list:
    if not selector:
        return list(pods)
    wanted = dict(term.split("=", 1) for term in selector.split(","))
    return [p for p in pods if all(k == "metadata.name" and p["metadata"]["name"] == v
                                   for k, v in wanted.items())]


async def _read_frame(reader) -> tuple[int, bytes]:
    """One whole message from the client (masked, as RFC 6455 requires of clients)."""
    message, first_opcode = b"", None
    while True:
        head = await reader.readexactly(2)
        fin, opcode = head[0] & 0x80, head[0] & 0x0F
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", await reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await reader.readexactly(8))[0]
        mask = await reader.readexactly(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = await reader.readexactly(length)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        if opcode >= 0x8:
            return opcode, data  # control frames come whole, even between fragments
        first_opcode = first_opcode if first_opcode is not None else opcode
        message += data
        if fin:
            return first_opcode, message


def _frame(opcode: int, payload: bytes) -> bytes:
    """A server frame: final, unmasked."""
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return head + payload
