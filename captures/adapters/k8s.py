"""The one door to the Kubernetes API: listings, the inventory snapshot, capture containers.

Only this module imports `kubernetes`. Everything it hands out is plain data (dicts in the
shapes below, bytes on a pipe), so the sources, the form and the tests never see the client.

Listings are read with `_preload_content=False` and parsed as the API's own JSON: no model
objects (slow at thousands of pods), and field names exactly as `kubectl get -o json` shows.

Errors become K8sError with a message for a person: a 403 names the permission that was
missing, Pod Security rejections say so, an unreachable API server names its address.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import select
import threading
import time

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream as ws_stream

MANAGED_BY = "app.kubernetes.io/managed-by"
CAPTURE_LABEL = "kviz.io/capture"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
REQUEST_TIMEOUT = 30  # seconds for one API call; a capture's stream has none
STDOUT, STDERR, ERROR = 1, 2, 3

# `pods "x" is forbidden: User "u" cannot patch resource "pods/ephemeralcontainers" in API group
# "" in the namespace "default"` (the RBAC authorizer's wording, stable since 1.8).
FORBIDDEN = re.compile(r'cannot (?P<verb>[\w-]+) resource "(?P<resource>[^"]+)" in API group '
                       r'"(?P<group>[^"]*)"(?: in the namespace "(?P<namespace>[^"]+)")?')


class K8sError(Exception):
    """Something the cluster refused or could not do; the message is for the user."""


class Forbidden(K8sError):
    def __init__(self, message: str, permission: str = ""):
        super().__init__(message)
        self.permission = permission


class PodSecurity(K8sError):
    """The namespace's Pod Security level rejected the capture container."""


class NotSupported(K8sError):
    """The cluster has no ephemeral containers (older than 1.23, or turned off)."""


def _status_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or b"{}").get("message") or "")
    except (ValueError, AttributeError):
        return (exc.body or b"").decode("utf-8", "replace")[:300] if isinstance(
            exc.body, bytes) else str(exc.body or "")[:300]


def missing_permission(message: str) -> str:
    """'patch pods/ephemeralcontainers in default' from an RBAC denial, or ''."""
    found = FORBIDDEN.search(message)
    if not found:
        return ""
    resource = found["resource"]
    if found["group"]:
        resource = f"{resource}.{found['group']}"  # as `kubectl auth can-i` spells it
    where = f"in {found['namespace']}" if found["namespace"] else "cluster-wide"
    return f"{found['verb']} {resource} {where}"


def api_error(exc: ApiException, doing: str) -> K8sError:
    """Turn the API's refusal into a K8sError naming why."""
    message = _status_message(exc) or exc.reason or "no message"
    if "violates PodSecurity" in message:
        return PodSecurity(f"{doing}: the namespace's Pod Security level forbids the capture "
                           f"container ({message})")
    if exc.status == 403:
        permission = missing_permission(message)
        if permission:
            return Forbidden(f"{doing}: missing permission: {permission} ({message})", permission)
        return Forbidden(f"{doing}: forbidden ({message})")
    if exc.status == 401:
        return K8sError(f"{doing}: the cluster did not accept kviz's credentials ({message})")
    if exc.status == 0:
        return K8sError(f"{doing}: {exc.reason}")
    return K8sError(f"{doing}: {exc.status} {message}")


# -- connecting --------------------------------------------------------------------------------


def kube_contexts(kubeconfig: str | None = None) -> list[str]:
    contexts, _active = config.list_kube_config_contexts(config_file=kubeconfig)
    return [context["name"] for context in contexts]


class Cluster:
    def __init__(self, api_client: client.ApiClient, name: str = "cluster"):
        self.api_client = api_client
        self.name = name
        self.core = client.CoreV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None,
                name: str = "") -> Cluster:
        """In-cluster credentials when kviz runs in a pod and no kubeconfig is named;
        otherwise the kubeconfig (KUBECONFIG's default) and its context (current if none)."""
        try:
            if not kubeconfig and not context and os.environ.get("KUBERNETES_SERVICE_HOST"):
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                return cls(client.ApiClient(configuration), name or "in-cluster")
            api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        except (config.ConfigException, OSError, KeyError, TypeError) as exc:
            raise K8sError(f"cannot load the Kubernetes configuration: {exc}") from None
        return cls(api_client, name or context or "cluster")

    def close(self) -> None:
        self.api_client.close()

    def _json(self, method, *args, doing: str, **kwargs) -> dict:
        try:
            response = method(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT,
                              **kwargs)
        except ApiException as exc:
            raise api_error(exc, doing) from None
        except urllib3.exceptions.HTTPError as exc:
            host = self.api_client.configuration.host
            raise K8sError(f"{doing}: cannot reach the Kubernetes API at {host} ({exc})") from None
        return json.loads(response.data or b"{}")

    def _items(self, namespaced, cluster_wide, namespace: str | None, doing: str) -> list[dict]:
        if namespace:
            return self._json(namespaced, namespace, doing=doing).get("items") or []
        return self._json(cluster_wide, doing=doing).get("items") or []

    # -- listings (the target picker and the inventory) ----------------------------------------

    def namespaces(self) -> list[dict]:
        items = self._json(self.core.list_namespace, doing="listing namespaces").get("items")
        return sorted(({"name": ns["metadata"]["name"],
                        "phase": (ns.get("status") or {}).get("phase", "")}
                       for ns in items or []), key=lambda ns: ns["name"])

    def pods(self, namespace: str | None = None) -> list[dict]:
        items = self._items(self.core.list_namespaced_pod, self.core.list_pod_for_all_namespaces,
                            namespace, "listing pods")
        return [pod_dict(item) for item in items]

    def pod(self, namespace: str, name: str) -> dict:
        return pod_dict(self._raw_pod(namespace, name))

    def _raw_pod(self, namespace: str, name: str) -> dict:
        return self._json(self.core.read_namespaced_pod, name, namespace,
                          doing=f"reading pod {namespace}/{name}")

    def services(self, namespace: str | None = None) -> list[dict]:
        items = self._items(self.core.list_namespaced_service,
                            self.core.list_service_for_all_namespaces, namespace,
                            "listing services")
        return [service_dict(item) for item in items]

    def service(self, namespace: str, name: str) -> dict:
        return service_dict(self._json(self.core.read_namespaced_service, name, namespace,
                                       doing=f"reading service {namespace}/{name}"))

    def endpoint_slices(self, namespace: str | None = None) -> list[dict]:
        items = self._items(self.discovery.list_namespaced_endpoint_slice,
                            self.discovery.list_endpoint_slice_for_all_namespaces, namespace,
                            "listing endpointslices")
        return [slice_dict(item) for item in items]

    def nodes(self) -> list[dict]:
        items = self._json(self.core.list_node, doing="listing nodes").get("items")
        return [node_dict(item) for item in items or []]

    def service_pods(self, namespace: str, name: str) -> list[dict]:
        """The pods behind a Service: its EndpointSlices' pod references (ready or not),
        or, for a Service without slices, the pods its selector matches."""
        names = {ref for s in self.endpoint_slices(namespace) if s["service"] == name
                 for ref in s["pods"]}
        pods = self.pods(namespace)
        if names:
            return [pod for pod in pods if pod["name"] in names]
        selector = self.service(namespace, name)["selector"]
        return pods_matching(pods, selector) if selector else []

    def targets(self, namespaces: list[str] | None = None) -> list[dict]:
        """What the new-capture form offers: namespace → pods and Services, and the nodes.
        `namespaces` limits it to those a user may capture in (None: all)."""
        allowed = None if namespaces is None else set(namespaces)
        out = []
        for ns in self.namespaces():
            if allowed is not None and ns["name"] not in allowed:
                continue
            pods = self.pods(ns["name"])
            services = self.services(ns["name"])
            out.append({"namespace": ns["name"],
                        "pods": [{"name": p["name"], "ips": p["ips"], "node": p["node"],
                                  "owner": p["owner"], "containers": p["containers"],
                                  "phase": p["phase"]} for p in pods],
                        "services": [{"name": s["name"], "type": s["type"],
                                      "cluster_ips": s["cluster_ips"], "ports": s["ports"]}
                                     for s in services]})
        return out

    def inventory(self) -> dict:
        """The kviz.inventory/1 snapshot (docs/inventory.md) of the whole cluster, now."""
        endpoints: dict[tuple, dict] = {}
        for piece in self.endpoint_slices():
            key = (piece["namespace"], piece["service"])
            entry = endpoints.setdefault(key, {"namespace": key[0], "service": key[1],
                                               "addresses": [], "ports": piece["ports"]})
            entry["addresses"] += [a for a in piece["addresses"] if a not in entry["addresses"]]
        pods = [{k: p[k] for k in ("namespace", "name", "ips", "node", "host_network",
                                    "containers", "labels")} for p in self.pods()]
        services = [{k: s[k] for k in ("namespace", "name", "type", "cluster_ips", "ports")}
                    for s in self.services()]
        return {"schema": "kviz.inventory/1",
                "taken_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "cluster": self.name,
                "nodes": [{k: n[k] for k in ("name", "addresses", "pod_cidr")}
                          for n in self.nodes()],
                "pods": pods, "services": services,
                "endpoints": [e for e in endpoints.values() if e["service"]]}

    # -- capture containers --------------------------------------------------------------------

    def add_debug_container(self, namespace: str, pod: str, container: dict) -> None:
        """Add an ephemeral container to a running pod (it cannot be removed again)."""
        doing = f"adding a capture container to pod {namespace}/{pod}"
        body = {"spec": {"ephemeralContainers": [container]}}
        try:
            self.core.patch_namespaced_pod_ephemeralcontainers(
                pod, namespace, body, _content_type=STRATEGIC_MERGE,
                _request_timeout=REQUEST_TIMEOUT, _preload_content=False)
        except ApiException as exc:
            # The pod was just read, so a 404 here is the subresource that is missing.
            if exc.status == 404 or (exc.status == 422 and "ephemeral" in
                                     _status_message(exc).lower() and "forbidden" in
                                     _status_message(exc).lower()):
                raise NotSupported(f"{doing}: this cluster does not allow ephemeral containers "
                                   f"(Kubernetes 1.25+ has them on; {_status_message(exc)})"
                                   ) from None
            raise api_error(exc, doing) from None
        except urllib3.exceptions.HTTPError as exc:
            raise K8sError(f"{doing}: cannot reach the Kubernetes API ({exc})") from None

    def create_pod(self, namespace: str, manifest: dict) -> dict:
        name = manifest["metadata"]["name"]
        return self._json(self.core.create_namespaced_pod, namespace, manifest,
                          doing=f"creating capture pod {namespace}/{name}")

    def delete_pod(self, namespace: str, name: str) -> bool:
        """Delete now (grace 0: a capture pod holds nothing worth a graceful stop); a pod that
        is already gone is fine."""
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0,
                                            _request_timeout=REQUEST_TIMEOUT,
                                            _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise api_error(exc, f"deleting capture pod {namespace}/{name}") from None
        return True

    def managed_pods(self, namespace: str) -> list[dict]:
        items = self._json(self.core.list_namespaced_pod, namespace,
                           label_selector=f"{MANAGED_BY}=kviz",
                           doing=f"listing kviz capture pods in {namespace}").get("items")
        return items or []

    def cleanup_orphans(self, namespace: str, active_capture_ids) -> list[str]:
        """Delete kviz's node-capture pods whose capture is no longer running (its worker died
        mid-capture). The worker calls this at start and periodically. Returns what it deleted."""
        active = {str(capture_id) for capture_id in active_capture_ids}
        deleted = []
        for item in self.managed_pods(namespace):
            meta = item["metadata"]
            if (meta.get("labels") or {}).get(CAPTURE_LABEL) in active:
                continue
            if self.delete_pod(namespace, meta["name"]):
                deleted.append(meta["name"])
        return deleted

    def wait_running(self, namespace: str, pod: str, container: str, ephemeral: bool,
                     timeout: float) -> None:
        """Wait until `container` runs; fail with the kubelet's reason (image pull, ...)."""
        deadline = time.monotonic() + timeout
        key = "ephemeralContainerStatuses" if ephemeral else "containerStatuses"
        last = "not started yet"
        while time.monotonic() < deadline:
            raw = self._raw_pod(namespace, pod)
            status = raw.get("status") or {}
            if status.get("phase") in ("Failed", "Succeeded"):
                raise K8sError(f"pod {namespace}/{pod} ended ({status.get('phase')}: "
                               f"{status.get('reason') or status.get('message') or 'no reason'})")
            for entry in status.get(key) or []:
                if entry.get("name") != container:
                    continue
                state = entry.get("state") or {}
                if "running" in state:
                    return
                if "terminated" in state:
                    term = state["terminated"]
                    raise K8sError(f"capture container {container} ended at once: "
                                   f"{term.get('reason', '')} {term.get('message', '')}".strip())
                waiting = state.get("waiting") or {}
                last = " ".join(filter(None, (waiting.get("reason"), waiting.get("message"))))
                if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff",
                                             "InvalidImageName", "CreateContainerError",
                                             "CreateContainerConfigError"):
                    raise K8sError(f"capture container {container} cannot start: {last}")
            time.sleep(0.2)
        raise K8sError(f"capture container {container} in {namespace}/{pod} did not start within "
                       f"{timeout:.0f} s ({last})")

    def attach(self, namespace: str, pod: str, container: str) -> AttachedStream:
        """Attach to the capture container's stdin/stdout/stderr over the WebSocket, binary."""
        doing = f"attaching to {container} in pod {namespace}/{pod}"
        try:
            ws = ws_stream(self.core.connect_get_namespaced_pod_attach, pod, namespace,
                           container=container, stdin=True, stdout=True, stderr=True, tty=False,
                           binary=True, _preload_content=False)
        except (ApiException, AttributeError) as exc:
            # The client wraps a failed handshake in ApiException(status=0), whose missing body
            # then trips its own `e.body.decode()` (an AttributeError with the ApiException as
            # its context); either way the handshake's status line is in the reason.
            inner = exc if isinstance(exc, ApiException) else exc.__context__
            if not isinstance(inner, ApiException):
                raise
            reason = str(inner.reason or "")
            if "403" in reason:
                raise Forbidden(f"{doing}: missing permission: create pods/attach in "
                                f"{namespace} ({reason})", f"create pods/attach in {namespace}"
                                ) from None
            raise K8sError(f"{doing}: {reason}") from None
        return AttachedStream(ws)


# -- the API's objects as plain dicts ----------------------------------------------------------


def pod_dict(item: dict) -> dict:
    meta, spec, status = item["metadata"], item.get("spec") or {}, item.get("status") or {}
    ips = [entry["ip"] for entry in status.get("podIPs") or [] if entry.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    return {"namespace": meta.get("namespace", ""), "name": meta["name"], "ips": ips,
            "node": spec.get("nodeName", ""), "host_network": bool(spec.get("hostNetwork")),
            "containers": [c["name"] for c in spec.get("containers") or []],
            "ephemeral_containers": [c["name"] for c in spec.get("ephemeralContainers") or []],
            "labels": dict(meta.get("labels") or {}), "phase": status.get("phase", ""),
            "owner": {"kind": owner["kind"], "name": owner["name"]} if owner else None}


def service_dict(item: dict) -> dict:
    meta, spec = item["metadata"], item.get("spec") or {}
    ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip and ip != "None"]
    return {"namespace": meta.get("namespace", ""), "name": meta["name"],
            "type": spec.get("type", "ClusterIP"), "cluster_ips": ips,
            "ports": [{"name": p.get("name", ""), "port": p.get("port"),
                       "target_port": p.get("targetPort", p.get("port")),
                       "protocol": p.get("protocol", "TCP")} for p in spec.get("ports") or []],
            "selector": dict(spec.get("selector") or {})}


def slice_dict(item: dict) -> dict:
    meta = item["metadata"]
    endpoints = item.get("endpoints") or []
    return {"namespace": meta.get("namespace", ""), "name": meta["name"],
            "service": (meta.get("labels") or {}).get("kubernetes.io/service-name", ""),
            "addresses": [a for e in endpoints for a in e.get("addresses") or []],
            "pods": [e["targetRef"]["name"] for e in endpoints
                     if (e.get("targetRef") or {}).get("kind") == "Pod"],
            "ports": [{"name": p.get("name", ""), "port": p.get("port"),
                       "protocol": p.get("protocol", "TCP")} for p in item.get("ports") or []]}


def node_dict(item: dict) -> dict:
    status, spec = item.get("status") or {}, item.get("spec") or {}
    return {"name": item["metadata"]["name"],
            "addresses": [a["address"] for a in status.get("addresses") or []
                          if a.get("type") in ("InternalIP", "ExternalIP")],
            "pod_cidr": spec.get("podCIDR", ""),
            "taints": [t.get("key", "") for t in spec.get("taints") or []]}


def pods_matching(pods: list[dict], selector: dict) -> list[dict]:
    return [p for p in pods if all(p["labels"].get(k) == v for k, v in selector.items())]


# -- the attached capture stream ---------------------------------------------------------------


class AttachedStream:
    """stdout bytes of an attached container on a pipe the runner can select() on.

    A thread reads the WebSocket frame by frame (not WSClient.update(): it polls the raw socket,
    which misses frames already decrypted into the TLS buffer) and writes channel 1 to the pipe
    byte for byte; stderr lines and the final Status (channel 3) are kept for messages.
    """

    def __init__(self, ws):
        self.ws = ws
        read_fd, self._write_fd = os.pipe()
        self.stdout = os.fdopen(read_fd, "rb", buffering=0)
        self.stderr = b""
        self.status: dict | None = None
        self.error = ""
        self.ended = threading.Event()
        self._stderr_changed = threading.Condition()
        self._thread = threading.Thread(target=self._pump, name="kviz-k8s-attach", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        from websocket import ABNF, WebSocketException

        sock = self.ws.sock
        try:
            while True:
                opcode, frame = sock.recv_data_frame(True)
                if opcode == ABNF.OPCODE_CLOSE:
                    break
                if opcode not in (ABNF.OPCODE_BINARY, ABNF.OPCODE_TEXT) or not frame.data:
                    continue
                channel, data = frame.data[0], frame.data[1:]
                if channel == STDOUT:
                    _write_all(self._write_fd, data)
                elif channel == STDERR:
                    with self._stderr_changed:
                        self.stderr += data
                        self._stderr_changed.notify_all()
                elif channel == ERROR and data:
                    try:
                        self.status = json.loads(data)
                    except ValueError:
                        self.status = {"status": "Failure", "message": data.decode("utf-8",
                                                                                   "replace")}
        except (WebSocketException, OSError, ValueError) as exc:
            if not self.ended.is_set():
                self.error = f"the capture stream broke: {exc}"
        finally:
            os.close(self._write_fd)
            with self._stderr_changed:
                self.ended.set()
                self._stderr_changed.notify_all()

    def wait_stderr(self, marker: bytes, timeout: float) -> bool:
        """Wait until stderr contains `marker`; False if the stream ended or time ran out."""
        deadline = time.monotonic() + timeout
        with self._stderr_changed:
            while marker not in self.stderr:
                left = deadline - time.monotonic()
                if self.ended.is_set() or left <= 0:
                    return False
                self._stderr_changed.wait(left)
        return True

    def write_stdin(self, data: bytes) -> None:
        self.ws.write_stdin(data)

    def close_stdin(self) -> None:
        self.ws.close_channel(0)  # v5 only; on v4 the caller's stop line does the work

    def close(self) -> None:
        self.ended.set()
        with contextlib.suppress(Exception):  # closing a broken socket: nothing left to do
            self.ws.close()
        self.stdout.close()  # a pump blocked on a full pipe gets EPIPE and ends
        self._thread.join(5)

    def failure(self) -> str:
        """Why the container's process failed, from the final Status, or ''."""
        if self.status and self.status.get("status") not in (None, "Success"):
            return str(self.status.get("message") or self.status.get("reason") or "failed")
        return self.error


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        select.select([], [fd], [])
        written = os.write(fd, view)
        view = view[written:]
