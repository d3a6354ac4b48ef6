"""deploy/kubernetes's RBAC, enforced by the test server: the web reads, the worker captures
where a namespace is bound, and every verb granted is one kviz uses."""

from __future__ import annotations

import pytest

from captures.adapters import k8s
from captures.sources import kubernetes as ks
from tests.k8s.conftest import drain
from tests.k8s.fake_apiserver import USER, WEB_TOKEN, WEB_USER

CAPTURE_ID = "0f4c2d9e-1b2a-4c3d-9e8f-7a6b5c4d3e2f"


def _run(source) -> None:
    source.open()
    source.stop()
    drain(source)
    source.close()


def _granted(apiserver, user: str) -> set[tuple[str, str]]:
    rbac = apiserver.rbac
    granted = set()
    for binding in rbac["bindings"]:
        subjects = {f"system:serviceaccount:{s['namespace']}:{s['name']}"
                    for s in binding["subjects"]}
        if user not in subjects:
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace", "") if ref["kind"] == "Role" else ""
        for rule in rbac["roles"][(ref["kind"], scope, ref["name"])]:
            for group in rule["apiGroups"]:
                granted |= {(verb, f"{resource}.{group}" if group else resource)
                            for verb in rule["verbs"] for resource in rule["resources"]}
    return granted


def test_the_worker_captures_with_exactly_the_verbs_it_is_granted(k8s_settings, cluster,
                                                                 apiserver):
    """Pod, Service and node captures, the orphan cleanup and a Service without slices, on a
    1.35 API server (a WebSocket needs `get` and `create`): every verb the worker's roles
    grant was needed, and nothing was refused."""
    apiserver.load_rbac()
    apiserver.websocket_create = True
    _run(ks.PodSource("default", "ubuntu", "", cluster))
    _run(ks.ServiceSource("default", "nginx", "", cluster))
    _run(ks.NodeSource("kviz-node", CAPTURE_ID, "", cluster))
    ks.cleanup_orphans([])
    del apiserver.state["endpointslices"][("default", "nginx-abcde")]
    assert cluster.service_pods("default", "nginx")  # the selector's pods: get services
    used = {(verb, resource) for user, verb, resource, _ns in apiserver.authorized
            if user == USER}
    assert ("create", "pods/exec") in used and ("watch", "pods") in used
    assert used == _granted(apiserver, USER)


def test_the_worker_cannot_capture_where_no_binding_allows(cluster, apiserver):
    apiserver.load_rbac()
    with pytest.raises(k8s.Forbidden) as raised:
        ks.PodSource("kube-system", "coredns", "", cluster).open()
    assert raised.value.permission == "patch pods/ephemeralcontainers in kube-system"


def test_the_web_reads_the_picker_and_can_change_nothing(k8s_settings, apiserver, tmp_path):
    apiserver.load_rbac()
    web = k8s.Cluster.connect(str(apiserver.kubeconfig(tmp_path / "web", token=WEB_TOKEN)))
    try:
        listing = web.targets(None)
        assert {entry["namespace"] for entry in listing} >= {"default", "kube-system"}
        assert web.nodes() and web.pod("default", "ubuntu")
        assert web.service_pods("default", "nginx")
        with pytest.raises(k8s.Forbidden, match="missing permission: patch "
                                                "pods/ephemeralcontainers in default"):
            web.add_debug_container("default", "ubuntu", ks.debug_container("x", "ubuntu"))
        with pytest.raises(k8s.Forbidden, match="missing permission: get pods/exec in default"):
            web.exec("default", "ubuntu", "ubuntu", ["true"], 0)
        with pytest.raises(k8s.Forbidden, match="missing permission: create pods in kviz"):
            web.create_pod("kviz", ks.node_pod_manifest("kviz-node", CAPTURE_ID))
    finally:
        web.close()
    assert {verb for user, verb, _r, _ns in apiserver.authorized if user == WEB_USER} <= {
        "get", "list"}


def test_a_websocket_needs_get_before_1_35_and_create_as_well_from_it(k8s_settings, cluster,
                                                                     apiserver):
    """Every API server authorizes the upgrade as `get`; 1.35 requires `create` too. A role
    with `get` alone works before 1.35, and the refusal after names `create`, not a guess."""
    apiserver.load_rbac()
    [exec_rule] = [rule for rule in apiserver.rbac["roles"][("Role", "kviz", "kviz-node-capture")]
                   if rule["resources"] == ["pods/exec"]]
    exec_rule["verbs"] = ["get"]
    _run(ks.NodeSource("kviz-node", CAPTURE_ID, "", cluster))  # a 1.34 API server
    apiserver.websocket_create = True  # 1.35
    with pytest.raises(k8s.Forbidden) as raised:
        ks.NodeSource("kviz-node", CAPTURE_ID, "", cluster).open()
    assert raised.value.permission == "create pods/exec in kviz"
    exec_rule["verbs"] = ["create"]
    with pytest.raises(k8s.Forbidden) as raised:
        ks.NodeSource("kviz-node", CAPTURE_ID, "", cluster).open()
    assert raised.value.permission == "get pods/exec in kviz"


def test_capture_bindings_follow_the_namespaces_granted_in_kviz(k8s_settings, db):
    from django.contrib.auth.models import Group

    Group.objects.create(name="k8s-ns:shop")
    Group.objects.create(name="k8s-ns:default")
    Group.objects.create(name="k8s-nodes")
    bindings = ks.capture_bindings()
    assert [b["metadata"]["namespace"] for b in bindings] == ["default", "shop"]
    assert bindings[0]["subjects"] == [{"kind": "ServiceAccount", "name": "kviz-worker",
                                        "namespace": "kviz"}]
    assert "kind: RoleBinding" in ks.capture_bindings_yaml()
