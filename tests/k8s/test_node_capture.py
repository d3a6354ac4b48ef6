"""A node capture: the capture pod's spec, and its deletion however the capture ends."""

from __future__ import annotations

import time

import pytest

from captures.adapters import k8s
from captures.sources import kubernetes as ks
from tests.k8s.conftest import drain, settle

CAPTURE_ID = "0f4c2d9e-1b2a-4c3d-9e8f-7a6b5c4d3e2f"


def _capture_pods(apiserver) -> list[str]:
    return [name for (ns, name) in apiserver.state["pods"] if ns == "kviz"]


def _gone(apiserver, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while _capture_pods(apiserver) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _capture_pods(apiserver)


def test_the_capture_pod_is_pinned_host_network_and_least_privileged(k8s_settings, cluster,
                                                                     apiserver):
    source = ks.NodeSource("kviz-node", CAPTURE_ID, "udp port 53", cluster)
    source.open()
    try:
        create = next(r for r in apiserver.requests if r.method == "POST")
        assert create.path == "/api/v1/namespaces/kviz/pods"
        pod = create.json
        spec, container = pod["spec"], pod["spec"]["containers"][0]
        assert spec["nodeName"] == "kviz-node"
        assert spec["hostNetwork"] is True
        assert spec["tolerations"] == [{"operator": "Exists"}]
        assert spec["activeDeadlineSeconds"] > 0
        assert spec["restartPolicy"] == "Never"
        # `-i any` needs NET_RAW only (no promiscuous mode, so no NET_ADMIN).
        assert container["securityContext"] == {
            "capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]}}
        assert pod["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "kviz",
                                             "kviz.io/capture": CAPTURE_ID}
        assert container["command"][3] == "kviz-hold" and not container["stdin"]
        [session] = apiserver.sessions
        assert session.kind == "exec" and session.command[-2:] == ["--", "udp port 53"]
        assert source.vantage == "node/kviz-node"
        assert source.interfaces  # ifindex → name, for cooked v2
        assert _capture_pods(apiserver) == [pod["metadata"]["name"]]
    finally:
        source.stop()
        drain(source)
        source.close()
    assert _gone(apiserver) == []  # deleted when the capture ends
    assert settle(apiserver) == []


def test_privileged_only_when_the_cluster_requires_it(k8s_settings):
    k8s_settings.KVIZ_NODE_PRIVILEGED = True
    manifest = ks.node_pod_manifest("kviz-node", CAPTURE_ID)
    assert manifest["spec"]["containers"][0]["securityContext"] == {"privileged": True}


def test_deletion_is_graceful_so_the_kubelet_stops_the_container_before_the_object_goes(
        k8s_settings, cluster, apiserver):
    """Grace 0 removes the object at once and leaves the kubelet to find the container later:
    kviz deletes with a short grace period, and the holder exits on SIGTERM."""
    manifest = ks.node_pod_manifest("kviz-node", CAPTURE_ID)
    assert manifest["spec"]["terminationGracePeriodSeconds"] == k8s.DELETE_GRACE > 0
    source = ks.NodeSource("kviz-node", CAPTURE_ID, "", cluster)
    source.open()
    source.close()  # mid-capture: the holder is still running
    [delete] = [r for r in apiserver.requests if r.method == "DELETE"]
    assert delete.query["gracePeriodSeconds"] == [str(k8s.DELETE_GRACE)]
    assert _gone(apiserver) == []
    assert settle(apiserver, 1.0) == []  # stopped before the object went, not FORCE_LAG later
    [container] = apiserver.containers
    assert container.state["terminated"]["exitCode"] in (0, 143)


def test_the_capture_pod_is_deleted_when_the_capture_fails(k8s_settings, cluster, apiserver):
    apiserver.capture_failure = "any: That device is not up"
    with pytest.raises(k8s.K8sError, match="That device is not up"):
        ks.NodeSource("kviz-node", CAPTURE_ID, "", cluster).open()
    assert _gone(apiserver) == []
    assert any(r.method == "DELETE" for r in apiserver.requests)
    assert settle(apiserver) == []


def test_the_capture_pod_is_deleted_when_exec_is_forbidden(k8s_settings, cluster, apiserver):
    apiserver.forbid("GET", "/exec$", "get", "pods/exec")
    with pytest.raises(k8s.Forbidden, match="missing permission: get pods/exec in kviz"):
        ks.NodeSource("kviz-node", CAPTURE_ID, "", cluster).open()
    assert _gone(apiserver) == []
    assert settle(apiserver) == []


def test_orphans_of_a_dead_worker_are_found_by_label_and_deleted(k8s_settings, cluster,
                                                                 apiserver):
    """The worker died mid-capture: close() never ran. The next cleanup pass deletes its pod
    and leaves the pods of captures still running, and pods kviz did not make."""
    dead = ks.NodeSource("kviz-node", CAPTURE_ID, "", cluster)
    dead.open()
    dead.capture.stream.drop()  # the worker is gone: its connection drops
    alive_id = "11111111-2222-3333-4444-555555555555"
    alive = ks.NodeSource("kviz-node", alive_id, "", cluster)
    alive.open()
    try:
        assert len(_capture_pods(apiserver)) == 2
        deleted = ks.cleanup_orphans([alive_id])
        assert deleted == [dead.pod_name]
        deadline = time.monotonic() + 5  # the holder exits on SIGTERM, then the pod goes
        while _capture_pods(apiserver) != [alive.pod_name] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _capture_pods(apiserver) == [alive.pod_name]
        assert ("default", "ubuntu") in apiserver.state["pods"]
        listing = [r for r in apiserver.requests if r.path == "/api/v1/namespaces/kviz/pods"
                   and r.method == "GET" and "labelSelector" in r.query]
        assert listing[-1].query["labelSelector"] == ["app.kubernetes.io/managed-by=kviz"]
    finally:
        alive.stop()
        drain(alive)
        alive.close()
    assert _gone(apiserver) == []
