"""A stand-in Kubernetes API server: real HTTP and WebSocket on 127.0.0.1, the API's wire shapes.

No cluster can run here, so the unpatched `kubernetes` client talks to this instead. It serves:
- JSON lists and objects as a cluster returns them (namespaces, pods, services, endpointslices,
  nodes), for the lab's addressing (captures/lab/plan.py), with label selectors on pods;
- PATCH pods/{name}/ephemeralcontainers (strategic merge patch only, as the real server),
  POST and DELETE pods, a 403 in the RBAC authorizer's words for any request a test forbids;
- pods/{name}/attach and /exec over WebSocket (RFC 6455, written here: no websockets package),
  subprotocols v5.channel.k8s.io and v4.channel.k8s.io, one channel byte before each payload
  (0 stdin, 1 stdout, 2 stderr, 3 the final Status, 255 v5 close). An attached capture
  container plays kviz's capture script: on the first stdin line it prints interface names and
  tcpdump's "listening" on stderr, then streams a real tcpdump recording in small binary frames;
  a second line, stdin's close or a dropped connection ends it.
Every request is recorded in `requests`, so a test can assert that none arrived.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import re
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from captures.lab.plan import CLUSTER_CIDR, NODE_ADDRESS, POD_CIDR, LabPlan

FIXTURES = Path(__file__).with_name("fixtures")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TOKEN = "kviz-test-token"
USER = "system:serviceaccount:kviz:kviz"
CHUNK = 97  # odd-sized frames: pcap records, and multi-byte sequences, split across frames
STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255


@dataclass
class Request:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes = b""

    @property
    def json(self):
        return json.loads(self.body or b"null")


@dataclass
class Session:
    """One attach: what a test can look at afterwards."""

    namespace: str
    pod: str
    container: str
    subprotocol: str
    sent: bytes = b""  # every stdout byte sent
    stdin: bytes = b""
    ended_by: str = ""  # stop-line | stdin-closed | disconnected
    done: threading.Event = field(default_factory=threading.Event)


def _status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


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
    return {
        "namespaces": {ns: {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns},
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


class FakeApiServer:
    def __init__(self):
        self.state = lab_cluster()
        self.requests: list[Request] = []
        self.sessions: list[Session] = []
        # pod name → pcap bytes its capture container streams; "*" for any other pod
        self.recordings = {name: (FIXTURES / f"{name}.pcap").read_bytes()
                           for name in ("ubuntu", "nginx-a", "nginx-b")}
        self.recordings["*"] = self.recordings["ubuntu"]
        self.interfaces = json.loads((FIXTURES / "interfaces.json").read_text())
        self.forbidden: list[tuple[str, str, str, str]] = []  # (method, path regex, verb, res.)
        self.pod_security_violation = ""  # message for PATCH ephemeralcontainers
        self.no_ephemeral_containers = False
        self.capture_failure = ""  # stderr line; the capture process then exits 1
        self.subprotocols = ("v5.channel.k8s.io", "v4.channel.k8s.io")
        self.loop = asyncio.new_event_loop()
        self.port = 0
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
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        await self._stopping.wait()
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path, context: str = "fake") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "kviz", "user": {"token": TOKEN}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "kviz"}},
                         {"name": "other", "context": {"cluster": "fake", "user": "kviz"}}],
        }))
        return path

    def forbid(self, method: str, path_pattern: str, verb: str, resource: str) -> None:
        self.forbidden.append((method, path_pattern, verb, resource))

    def api_requests(self) -> list[Request]:
        return list(self.requests)

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
                code, payload = self._route(request)
                data = json.dumps(payload).encode()
                writer.write(f"HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # the client went away, or the server is stopping
        finally:
            writer.close()

    def _denied(self, request: Request):
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, _status(401, "Unauthorized", "Unauthorized")
        for method, pattern, verb, resource in self.forbidden:
            if method == request.method and re.search(pattern, request.path):
                found = re.match(r"/api/v1/namespaces/([^/]+)/(\w+)(?:/([^/]+))?", request.path)
                namespace, kind, name = (found.groups() if found else (None, "", ""))
                where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
                return 403, _status(403, "Forbidden",
                                    f'{kind} "{name or ""}" is forbidden: User "{USER}" cannot '
                                    f'{verb} resource "{resource}" in API group ""{where}',
                                    {"name": name, "kind": kind})
        return None

    def _route(self, request: Request):  # a routing table, read top to bottom
        denied = self._denied(request)
        if denied:
            return denied
        path, method, state = request.path, request.method, self.state
        selector = (request.query.get("labelSelector") or [""])[0]
        if method == "GET" and path == "/api/v1/namespaces":
            return 200, _list("NamespaceList", state["namespaces"].values())
        if method == "GET" and path == "/api/v1/nodes":
            return 200, _list("NodeList", state["nodes"].values())
        if method == "GET" and path == "/api/v1/pods":
            return 200, _list("PodList", _select(state["pods"].values(), selector))
        if method == "GET" and path == "/api/v1/services":
            return 200, _list("ServiceList", state["services"].values())
        if method == "GET" and path == "/apis/discovery.k8s.io/v1/endpointslices":
            return 200, _list("EndpointSliceList", state["endpointslices"].values(),
                              "discovery.k8s.io/v1")
        found = re.fullmatch(r"/(api/v1|apis/discovery\.k8s\.io/v1)/namespaces/([^/]+)/(\w+)"
                             r"(?:/([^/]+))?(?:/(\w+))?", path)
        if not found:
            return 404, _status(404, "NotFound", "the server could not find the requested "
                                "resource")
        _group, namespace, resource, name, sub = found.groups()
        if namespace not in state["namespaces"]:
            return 404, _status(404, "NotFound", f'namespaces "{namespace}" not found')
        table = state.get(resource)
        if table is None:
            return 404, _status(404, "NotFound", "the server could not find the requested "
                                "resource")
        if name is None and method == "GET":
            items = [v for (ns, _n), v in table.items() if ns == namespace]
            return 200, _list(resource.capitalize() + "List",
                              _select(items, selector) if resource == "pods" else items)
        if name is None and method == "POST" and resource == "pods":
            return self._create_pod(namespace, request.json)
        obj = table.get((namespace, name))
        if obj is None:
            return 404, _status(404, "NotFound", f'{resource} "{name}" not found')
        if method == "GET" and sub is None:
            if resource == "pods":
                self._progress(obj)
            return 200, obj
        if method == "DELETE" and resource == "pods" and sub is None:
            del table[(namespace, name)]
            return 200, obj
        if method == "PATCH" and resource == "pods" and sub == "ephemeralcontainers":
            return self._patch_ephemeral(obj, request)
        return 405, _status(405, "MethodNotAllowed", f"{method} is not allowed here")

    def _create_pod(self, namespace: str, manifest: dict):
        name = manifest["metadata"]["name"]
        if (namespace, name) in self.state["pods"]:
            return 409, _status(409, "AlreadyExists", f'pods "{name}" already exists')
        pod = copy.deepcopy(manifest)
        pod["metadata"].update(namespace=namespace, uid=hashlib.sha1(name.encode()).hexdigest())
        node_ip = NODE_ADDRESS if pod["spec"].get("hostNetwork") else "10.244.10.200"
        pod["status"] = {"phase": "Pending", "podIP": node_ip, "podIPs": [{"ip": node_ip}],
                         "containerStatuses": [{"name": c["name"], "ready": False, "state": {
                             "waiting": {"reason": "ContainerCreating"}}}
                             for c in pod["spec"]["containers"]]}
        self.state["pods"][(namespace, name)] = pod
        return 201, pod

    def _patch_ephemeral(self, pod: dict, request: Request):
        if self.no_ephemeral_containers:
            return 404, _status(404, "NotFound", "the server could not find the requested "
                                "resource")
        if request.headers.get("content-type") != "application/strategic-merge-patch+json":
            # The real server reads any other patch type differently; a dict body as a JSON
            # patch is refused there too.
            return 415, _status(415, "UnsupportedMediaType",
                                f"unexpected patch type {request.headers.get('content-type')}")
        name = pod["metadata"]["name"]
        if self.pod_security_violation:
            return 403, _status(403, "Forbidden", f'pods "{name}" is forbidden: violates '
                                f'PodSecurity "restricted:latest": {self.pod_security_violation}')
        added = request.json["spec"]["ephemeralContainers"]
        spec = pod["spec"].setdefault("ephemeralContainers", [])
        statuses = pod["status"].setdefault("ephemeralContainerStatuses", [])
        for container in added:
            if any(c["name"] == container["name"] for c in spec):
                continue
            spec.append(container)
            statuses.append({"name": container["name"], "ready": False,
                             "state": {"waiting": {"reason": "PodInitializing"}}})
        return 200, pod

    @staticmethod
    def _progress(pod: dict) -> None:
        # Containers start between two reads, as they do on a kubelet.
        status = pod["status"]
        status["phase"] = "Running" if status["phase"] == "Pending" else status["phase"]
        for key in ("containerStatuses", "ephemeralContainerStatuses"):
            for entry in status.get(key) or []:
                if "waiting" in entry["state"]:
                    entry["state"] = {"running": {"startedAt": "2026-11-25T20:00:00Z"}}

    # -- WebSocket (attach, exec) ----------------------------------------------------------

    async def _websocket(self, request: Request, reader, writer) -> None:
        denied = self._denied(request)
        found = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/(attach|exec)",
                             request.path)
        pod = self.state["pods"].get(found.groups()[:2]) if found else None
        if denied or pod is None:
            code, body = denied or (404, _status(404, "NotFound", "pod not found"))
            data = json.dumps(body).encode()
            writer.write(f"HTTP/1.1 {code} X\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                         + data)
            await writer.drain()
            return
        offered = [p.strip() for p in request.headers.get("sec-websocket-protocol", "").split(",")]
        chosen = next((p for p in self.subprotocols if p in offered), "")
        accept = base64.b64encode(hashlib.sha1(
            (request.headers["sec-websocket-key"] + WS_GUID).encode()).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n"
                      f"Sec-WebSocket-Protocol: {chosen}\r\n\r\n").encode())
        await writer.drain()
        namespace, name, _kind = found.groups()
        container = (request.query.get("container") or [""])[0]
        session = Session(namespace, name, container, chosen)
        self.sessions.append(session)
        try:
            await self._play_capture(session, pod, reader, writer)
        finally:
            self._terminate(pod, container)
            session.done.set()

    async def _play_capture(self, session: Session, pod: dict, reader, writer) -> None:
        frames: asyncio.Queue = asyncio.Queue()

        async def read_frames():
            try:
                while True:
                    opcode, payload = await _read_frame(reader)
                    if opcode == 0x8:
                        break
                    if opcode == 0x9:
                        writer.write(_frame(0xA, payload))
                        continue
                    if opcode in (0x1, 0x2) and payload:
                        await frames.put(payload)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            await frames.put(None)  # the connection is gone

        reading = asyncio.ensure_future(read_frames())
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

        try:
            if await next_event() != "line":
                session.ended_by = "never started"
                return
            names = self.interfaces.get(session.pod, {"1": "lo", "2": "eth0"})
            send(STDERR, "".join(f"kviz-if {i} {n}\n" for i, n in names.items()).encode())
            if self.capture_failure:
                send(STDERR, f"tcpdump: {self.capture_failure}\n".encode())
                send(ERROR, json.dumps({
                    "metadata": {}, "status": "Failure", "message": "command terminated with "
                    "non-zero exit code: error executing command [sh -c ...], exit code 1",
                    "reason": "NonZeroExitCode", "details": {"causes": [
                        {"reason": "ExitCode", "message": "1"}]}}).encode())
                writer.write(_frame(0x8, struct.pack("!H", 1000)))
                await writer.drain()
                session.ended_by = "failed"
                return
            send(STDERR, b"tcpdump: listening on any, link-type LINUX_SLL2 (Linux cooked v2), "
                         b"snapshot length 262144 bytes\n")
            recording = self.recordings.get(session.pod, self.recordings["*"])
            ended = None
            for at in range(0, len(recording), CHUNK):
                chunk = recording[at:at + CHUNK]
                send(STDOUT, chunk)
                session.sent += chunk
                await writer.drain()
                ended = await next_event(0.002)
                if ended:
                    break
            while ended is None:
                ended = await next_event()
            session.ended_by = {"line": "stop-line", "closed": "stdin-closed",
                                "gone": "disconnected"}[ended]
            if ended != "gone":
                send(STDERR, b"3 packets captured\n")
                send(ERROR, json.dumps({"metadata": {}, "status": "Success"}).encode())
                writer.write(_frame(0x8, struct.pack("!H", 1000)))
                await writer.drain()
        except ConnectionError:
            session.ended_by = session.ended_by or "disconnected"
        finally:
            reading.cancel()

    @staticmethod
    def _terminate(pod: dict, container: str) -> None:
        for key in ("containerStatuses", "ephemeralContainerStatuses"):
            for entry in pod["status"].get(key) or []:
                if entry["name"] == container:
                    entry["state"] = {"terminated": {"exitCode": 0, "reason": "Completed"}}


def _list(kind: str, items, api_version: str = "v1") -> dict:
    return {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": "1"},
            "items": list(items)}


def _select(pods, selector: str) -> list:
    if not selector:
        return list(pods)
    wanted = dict(term.split("=", 1) for term in selector.split(","))
    return [p for p in pods
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]


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
