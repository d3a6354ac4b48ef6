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
from urllib.parse import urlencode

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

MANAGED_BY = "app.kubernetes.io/managed-by"
CAPTURE_LABEL = "kviz.io/capture"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
REQUEST_TIMEOUT = 30  # seconds for one API call; a capture's stream has none
STDIN, STDOUT, STDERR, ERROR = 0, 1, 2, 3
PING_PERIOD = 5.0  # client-go's pingPeriod for remote command WebSockets
DELETE_GRACE = 5  # seconds the kubelet has to stop a capture pod before it is removed

# Waiting reasons (kubelet pkg/kubelet/images, kuberuntime) no retry fixes without a change of
# spec or node; anything else (ErrImagePull, ImagePullBackOff, ContainerCreating, ...) is waited
# out until the start timeout, as kubectl debug waits them out.
FATAL_WAITING = ("InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError")
WAITING_HINTS = {
    "ErrImagePull": "The node could not pull {image}; mirror it to a registry the nodes reach "
                    "(a public registry may be rate-limiting) and set KVIZ_DEBUG_IMAGE",
    "ImagePullBackOff": "The node could not pull {image} and is backing off; mirror it to a "
                        "registry the nodes reach and set KVIZ_DEBUG_IMAGE",
    "InvalidImageName": "KVIZ_DEBUG_IMAGE ({image}) is not a valid image reference",
    "ErrImageNeverPull": "{image} is not on the node and the pull policy forbids pulling it",
    "CreateContainerConfigError": "The kubelet cannot build the container's configuration",
    "CreateContainerError": "The container runtime could not create the container",
    "RunContainerError": "The container runtime could not start the container",
    "ContainerCreating": "The node is still creating the container (a slow image pull?)",
    "PodInitializing": "The node is still creating the container (a slow image pull?)",
}

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

    level = ""


class NotSupported(K8sError):
    """The cluster has no ephemeral containers (older than 1.23, or turned off)."""


class Gone(K8sError):
    """The pod was deleted (between two calls, or while kviz waited)."""


# `pods "x" is forbidden: violates PodSecurity "baseline:latest": non-default capabilities
# (container "c" must not include "NET_RAW" in securityContext.capabilities.add)`: the admission
# plugin's wording (pod-security-admission admission.go and policy/check_*.go).
POD_SECURITY = re.compile(r'violates PodSecurity "(?P<level>[a-z]+):(?P<version>[^"]+)": '
                          r'(?P<violations>.*)')


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
    found = POD_SECURITY.search(message)
    if found:
        error = PodSecurity(f"{doing}: the namespace's Pod Security level "
                            f"\"{found['level']}\" forbids the capture container: "
                            f"{found['violations']}")
        error.level = found["level"]
        return error
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
        """The pods behind a Service: every EndpointSlice of it (a Service may have several,
        and a dual-stack one has one per address family, naming the same pods) minus the
        endpoints that are terminating (a rollout's old pods: the kubelet starts no new
        container in a pod that is shutting down) and pods being deleted. Not-ready pods stay:
        they are still the Service's. A Service without slices: the pods its selector matches.
        """
        slices = [s for s in self.endpoint_slices(namespace) if s["service"] == name]
        names = {ref for s in slices for ref in s["pods"]}
        pods = [pod for pod in self.pods(namespace) if not pod["deleting"]]
        if slices:
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
            # kubectl (pkg/cmd/debug/debug.go, debugByEphemeralContainer): a 404 whose Status
            # has no details.name is the missing subresource (the feature is off); a 404 naming
            # the pod is the pod itself, deleted since it was read.
            if exc.status == 404:
                details = _status(exc).get("details") or {}
                if details.get("name"):
                    raise Gone(f"{doing}: the pod no longer exists (deleted since kviz read "
                               f"it: {_status_message(exc)})") from None
                raise NotSupported(f"{doing}: ephemeral containers are disabled for this "
                                   f"cluster (error from server: {_status_message(exc)})"
                                   ) from None
            raise api_error(exc, doing) from None
        except urllib3.exceptions.HTTPError as exc:
            raise K8sError(f"{doing}: cannot reach the Kubernetes API ({exc})") from None

    def create_pod(self, namespace: str, manifest: dict) -> dict:
        name = manifest["metadata"]["name"]
        return self._json(self.core.create_namespaced_pod, namespace, manifest,
                          doing=f"creating capture pod {namespace}/{name}")

    def delete_pod(self, namespace: str, name: str, grace: int = DELETE_GRACE) -> bool:
        """Delete with a short grace period: the kubelet stops the container (its script exits
        on SIGTERM) before the object goes, where grace 0 would remove the object first and
        leave the container to be found later. A pod that is already gone is fine."""
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace,
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
            if meta.get("deletionTimestamp"):
                continue  # already going
            if self.delete_pod(namespace, meta["name"]):
                deleted.append(meta["name"])
        return deleted

    def container_state(self, namespace: str, pod: str, container: str) -> dict:
        """The container's state as the kubelet last reported it ({} when it has none)."""
        try:
            raw = self._raw_pod(namespace, pod)
        except K8sError:
            return {}
        entry = _container_status(raw, container)
        return (entry or {}).get("state") or {}

    def watch_pod(self, namespace: str, pod: str, timeout: float):
        """The pod as it changes, for `timeout` seconds: a list, then a watch from its
        resourceVersion (client-go's UntilWithSync, as kubectl's waitForContainer). Yields
        the pod dict; a deleted pod raises Gone."""
        doing = f"watching pod {namespace}/{pod}"
        deadline = time.monotonic() + timeout
        selector = f"metadata.name={pod}"
        listing = self._json(self.core.list_namespaced_pod, namespace, field_selector=selector,
                             doing=doing)
        items = listing.get("items") or []
        if not items:
            raise Gone(f"pod {namespace}/{pod} no longer exists")
        yield items[0]
        version = (listing.get("metadata") or {}).get("resourceVersion", "")
        while (left := deadline - time.monotonic()) > 0:
            try:
                response = self.core.list_namespaced_pod(
                    namespace, field_selector=selector, watch=True, resource_version=version,
                    allow_watch_bookmarks=True, timeout_seconds=max(1, int(left)),
                    _preload_content=False, _request_timeout=(REQUEST_TIMEOUT, left + 1))
            except ApiException as exc:
                raise api_error(exc, doing) from None
            except urllib3.exceptions.HTTPError as exc:
                raise K8sError(f"{doing}: cannot reach the Kubernetes API ({exc})") from None
            try:
                for event in _events(response):
                    kind, obj = event.get("type"), event.get("object") or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if kind == "DELETED":
                        raise Gone(f"pod {namespace}/{pod} was deleted")
                    if kind == "ERROR":
                        if obj.get("code") == 410:  # too old: list again, from now
                            yield from self.watch_pod(namespace, pod, deadline - time.monotonic())
                            return
                        raise K8sError(f"{doing}: {obj.get('message') or obj}")
                    if kind in ("ADDED", "MODIFIED"):
                        yield obj
            except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
                return  # the time is up (or the server ended the watch early: the loop decides)
            finally:
                response.release_conn()

    def wait_running(self, namespace: str, pod: str, container: str, timeout: float,
                     image: str = "") -> None:
        """Watch until `container` runs. Like kubectl, a pull the kubelet is still retrying
        (ErrImagePull, ImagePullBackOff: the default image comes from a rate-limited public
        registry) is waited out; only what no retry can fix fails at once. At the timeout the
        error names the kubelet's last reason and what to do about it."""
        last = "the kubelet has not reported the container yet"
        reason = ""
        for raw in self.watch_pod(namespace, pod, timeout):
            status = raw.get("status") or {}
            if status.get("phase") in ("Failed", "Succeeded"):
                raise K8sError(f"pod {namespace}/{pod} ended ({status.get('phase')}: "
                               f"{status.get('reason') or status.get('message') or 'no reason'})")
            entry = _container_status(raw, container)
            if entry is None:
                continue  # no status yet: the kubelet has not seen the container
            state = entry.get("state") or {}
            if "running" in state:
                return
            if "terminated" in state:
                term = state["terminated"]
                raise K8sError(f"capture container {container} ended at once: exit code "
                               f"{term.get('exitCode')} {term.get('reason', '')} "
                               f"{term.get('message', '')}".strip())
            waiting = state.get("waiting") or {}
            reason = waiting.get("reason") or ""
            last = " ".join(filter(None, (reason, waiting.get("message"))))
            if reason in FATAL_WAITING:
                raise K8sError(f"capture container {container} cannot start: {last}. "
                               f"{WAITING_HINTS[reason].format(image=image)}")
        hint = WAITING_HINTS.get(reason, "")
        raise K8sError(f"capture container {container} in {namespace}/{pod} did not start within "
                       f"{timeout:.0f} s ({last})" + (f". {hint.format(image=image)}"
                                                      if hint else ""))

    def exec(self, namespace: str, pod: str, container: str, command: list[str],
             ping_period: float = PING_PERIOD) -> ExecStream:
        """Run `command` in the container over the exec WebSocket (binary channel frames,
        v5.channel.k8s.io then v4). An exec'd process's output goes to kviz only: the runtime
        logs a container's main process, never an exec."""
        from kubernetes.stream.ws_client import create_websocket
        from websocket import WebSocketBadStatusException, WebSocketException

        doing = f"running the capture in {container} of pod {namespace}/{pod}"
        query = [("container", container), ("stdin", "true"), ("stdout", "true"),
                 ("stderr", "true"), ("tty", "false")] + [("command", c) for c in command]
        configuration = self.api_client.configuration
        url = (configuration.host.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
               + f"/api/v1/namespaces/{namespace}/pods/{pod}/exec?{urlencode(query)}")
        if configuration.refresh_api_key_hook:
            configuration.refresh_api_key_hook(configuration)
        # The same credentials the client's own calls carry (a bearer token, refreshed by
        # an exec plugin or in-cluster projection; client certificates go with the TLS).
        headers = {entry["key"].lower(): entry["value"]
                   for entry in configuration.auth_settings().values()
                   if entry.get("in") == "header" and entry.get("value")}
        try:
            ws = create_websocket(configuration, url, headers)
        except WebSocketBadStatusException as exc:
            body = exc.resp_body or b""
            try:
                status = json.loads(body)
            except ValueError:
                status = {"message": body.decode("utf-8", "replace")[:300]}
            message = str(status.get("message") or exc)
            if exc.status_code == 403:
                # The upgrade is authorized as `get` (a WebSocket is a GET) and, from 1.35,
                # `create` as well: the denial names the verb that was missing.
                permission = missing_permission(message)
                raise Forbidden(f"{doing}: missing permission: {permission} ({message})"
                                if permission else f"{doing}: forbidden ({message})",
                                permission) from None
            raise K8sError(f"{doing}: {exc.status_code} {message}") from None
        except (WebSocketException, OSError) as exc:
            host = configuration.host
            raise K8sError(f"{doing}: cannot reach the Kubernetes API at {host} ({exc})"
                           ) from None
        return ExecStream(ws, ping_period)


def _status(exc: ApiException) -> dict:
    try:
        found = json.loads(exc.body or b"{}")
    except (ValueError, TypeError):
        return {}
    return found if isinstance(found, dict) else {}


def _container_status(raw: dict, container: str) -> dict | None:
    status = raw.get("status") or {}
    for key in ("ephemeralContainerStatuses", "containerStatuses", "initContainerStatuses"):
        for entry in status.get(key) or []:
            if entry.get("name") == container:
                return entry
    return None


def _events(response):
    """Watch events from a streamed response, one JSON object per line."""
    pending = b""
    for chunk in response.stream(64 * 1024, decode_content=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)


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
            "deleting": bool(meta.get("deletionTimestamp")),
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
            # EndpointConditions: `terminating` absent means false (discovery.k8s.io/v1).
            "pods": [e["targetRef"]["name"] for e in endpoints
                     if (e.get("targetRef") or {}).get("kind") == "Pod"
                     and not (e.get("conditions") or {}).get("terminating")],
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


# -- the exec'd capture stream -----------------------------------------------------------------


class ExecStream:
    """stdout bytes of an exec'd process on a pipe the runner can select() on.

    A thread reads the WebSocket frame by frame (not WSClient.update(): it polls the raw socket,
    which misses frames already decrypted into the TLS buffer) and writes channel 1 to the pipe
    byte for byte; stderr and the final Status (channel 3) are kept for messages. Empty frames
    are skipped: the API server's stream translator (1.30+) opens with an empty frame on the
    lowest writable channel (apiserver pkg/util/proxy/websocket.go, createWebSocketStreams).

    Another thread pings every `ping_period` seconds (client-go tools/remotecommand/websocket.go:
    pingPeriod 5 s), so a quiet capture survives proxies and load balancers that cut idle
    connections; like client-go's pingReadDeadline (12 periods + 1 s), a connection that
    answers nothing for that long is taken as broken.
    """

    def __init__(self, ws, ping_period: float = PING_PERIOD):
        self.ws = ws
        self.subprotocol = ws.getsubprotocol() or ""
        read_fd, self._write_fd = os.pipe()
        self.stdout = os.fdopen(read_fd, "rb", buffering=0)
        self.stderr = b""
        self.status: dict | None = None
        self.error = ""
        self.ended = threading.Event()
        self._closing = False
        self._stderr_changed = threading.Condition()
        self.ping_period = ping_period
        if ping_period:
            ws.settimeout(ping_period * 12 + 1)
        self._thread = threading.Thread(target=self._pump, name="kviz-k8s-exec", daemon=True)
        self._thread.start()
        self._pinger = threading.Thread(target=self._ping, name="kviz-k8s-ping", daemon=True)
        if ping_period:
            self._pinger.start()

    def _ping(self) -> None:
        while not self.ended.wait(self.ping_period):
            try:
                self.ws.ping()
            except Exception:  # the pump sees the broken connection and reports it
                return

    def _pump(self) -> None:
        from websocket import ABNF, WebSocketException, WebSocketTimeoutException

        try:
            while True:
                opcode, frame = self.ws.recv_data_frame(True)
                if opcode == ABNF.OPCODE_CLOSE:
                    break
                if opcode not in (ABNF.OPCODE_BINARY, ABNF.OPCODE_TEXT) or len(frame.data) < 2:
                    continue  # pings, pongs, the translator's empty opening frame
                channel, data = frame.data[0], frame.data[1:]
                if channel == STDOUT:
                    _write_all(self._write_fd, data)
                elif channel == STDERR:
                    with self._stderr_changed:
                        self.stderr += data
                        self._stderr_changed.notify_all()
                elif channel == ERROR:
                    try:
                        self.status = json.loads(data)
                    except ValueError:
                        self.status = {"status": "Failure", "message": data.decode("utf-8",
                                                                                   "replace")}
        except WebSocketTimeoutException:
            if not self._closing:
                self.error = (f"the capture stream went silent: no answer to pings for "
                              f"{self.ping_period * 12 + 1:.0f} s")
        except (WebSocketException, OSError, ValueError) as exc:
            if not self._closing:
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
        self.ws.send_binary(bytes([STDIN]) + data)

    def drop(self) -> None:
        """Drop the connection: the process's stdin closes, which ends kviz's scripts."""
        self._closing = True
        with contextlib.suppress(Exception):
            self.ws.sock.shutdown(2)

    def close(self) -> None:
        self._closing = True
        self.ended.set()
        with contextlib.suppress(Exception):  # closing a broken socket: nothing left to do
            self.ws.close(timeout=1)
        self.stdout.close()  # a pump blocked on a full pipe gets EPIPE and ends
        self._thread.join(5)

    def exit_code(self) -> int | None:
        """The process's exit code from the final Status (kubelet exec.go: NonZeroExitCode
        with an ExitCode cause; Success is 0), or None without a Status."""
        if not self.status:
            return None
        if self.status.get("status") == "Success":
            return 0
        for cause in (self.status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode" or cause.get("type") == "ExitCode":
                with contextlib.suppress(ValueError, TypeError):
                    return int(cause.get("message"))
        return None

    def failure(self) -> str:
        """Why the process failed, from the final Status, or the broken stream, or ''."""
        if self.status and self.status.get("status") not in (None, "Success"):
            return str(self.status.get("message") or self.status.get("reason") or "failed")
        return self.error


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        select.select([], [fd], [])
        written = os.write(fd, view)
        view = view[written:]
