"""A node capture: the capture pod's spec, and its deletion however the capture ends."""

from __future__ import annotations

import pytest

from captures.adapters import k8s
from captures.sources import kubernetes as ks

CAPTURE_ID = "0f4c2d9e-1b2a-4c3d-9e8f-7a6b5c4d3e2f"


def _capture_pods(apiserver) -> list[str]:
    return [name for (ns, name) in apiserver.state["pods"] if ns == "kviz"]


def _drain(source) -> bytes:
    got = b""
    while chunk := source.stream.read(65536):
        got += chunk
    return got


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
        assert container["securityContext"] == {
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}}
        assert pod["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "kviz",
                                             "kviz.io/capture": CAPTURE_ID}
        assert container["command"][-2:] == ["--", "udp port 53"]
        assert source.vantage == "node/kviz-node"
        assert source.interfaces  # ifindex → name, for cooked v2
        assert _capture_pods(apiserver) == [pod["metadata"]["name"]]
    finally:
        source.stop()
        _drain(source)
        source.close()
    assert _capture_pods(apiserver) == []  # deleted when the capture ends


def test_privileged_only_when_the_cluster_requires_it(k8s_settings):
    k8s_settings.KVIZ_NODE_PRIVILEGED = True
    manifest = ks.node_pod_manifest("kviz-node", CAPTURE_ID, "")
    assert manifest["spec"]["containers"][0]["securityContext"] == {"privileged": True}


def test_the_capture_pod_is_deleted_when_the_capture_fails(k8s_settings, cluster, apiserver):
    apiserver.capture_failure = "any: That device is not up"
    with pytest.raises(k8s.K8sError, match="That device is not up"):
        ks.NodeSource("kviz-node", CAPTURE_ID, "", cluster).open()
    assert _capture_pods(apiserver) == []
    assert any(r.method == "DELETE" for r in apiserver.requests)


def test_the_capture_pod_is_deleted_when_attach_is_forbidden(k8s_settings, cluster, apiserver):
    apiserver.forbid("GET", "/attach$", "create", "pods/attach")
    with pytest.raises(k8s.Forbidden, match="missing permission: create pods/attach in kviz"):
        ks.NodeSource("kviz-node", CAPTURE_ID, "", cluster).open()
    assert _capture_pods(apiserver) == []


def test_orphans_of_a_dead_worker_are_found_by_label_and_deleted(k8s_settings, cluster,
                                                                 apiserver):
    """The worker died mid-capture: close() never ran. The next cleanup pass deletes its pod
    and leaves the pods of captures still running, and pods kviz did not make."""
    dead = ks.NodeSource("kviz-node", CAPTURE_ID, "", cluster)
    dead.open()
    dead.attached.stream.ws.close()  # the worker is gone: its connection drops
    alive_id = "11111111-2222-3333-4444-555555555555"
    alive = ks.NodeSource("kviz-node", alive_id, "", cluster)
    alive.open()
    try:
        assert len(_capture_pods(apiserver)) == 2
        deleted = ks.cleanup_orphans([alive_id])
        assert deleted == [dead.pod_name]
        assert _capture_pods(apiserver) == [alive.pod_name]
        assert ("default", "ubuntu") in apiserver.state["pods"]
        listing = [r for r in apiserver.requests if r.path == "/api/v1/namespaces/kviz/pods"
                   and r.method == "GET"]
        assert listing[-1].query["labelSelector"] == ["app.kubernetes.io/managed-by=kviz"]
    finally:
        alive.stop()
        _drain(alive)
        alive.close()
    assert _capture_pods(apiserver) == []
