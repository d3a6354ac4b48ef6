"""deploy/kubernetes/: every manifest validates against the Kubernetes OpenAPI schemas (shipped
offline by kubernetes-validate, strict: unknown fields fail), and no role grants a wildcard."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33"  # the oldest minor kviz supports; newer ones accept these too


def documents() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path.name, document))
    return found


def resources() -> list[tuple[str, dict]]:
    return [(name, doc) for name, doc in documents()
            if not doc["apiVersion"].startswith("kustomize.config.k8s.io/")]


@pytest.mark.parametrize(("name", "document"), resources(),
                         ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_every_manifest_validates_against_the_schemas(name, document):
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    [kustomization] = [doc for _name, doc in documents() if doc["kind"] == "Kustomization"]
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}


def test_no_role_grants_a_wildcard():
    roles = [doc for _name, doc in resources() if doc["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
                assert not any("*" in item for item in rule.get(key, [])), (role["metadata"],
                                                                            rule)


def test_pods_are_created_and_deleted_only_in_kvizs_own_namespace():
    for _name, doc in resources():
        if doc["kind"] == "ClusterRole":
            for rule in doc["rules"]:
                if "pods" in rule["resources"]:
                    assert set(rule["verbs"]) <= {"get", "list", "watch"}
    [role] = [doc for _name, doc in resources() if doc["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "kviz"
    assert role["rules"][0] == {"apiGroups": [""], "resources": ["pods"],
                                "verbs": ["create", "delete", "watch"]}


def test_capture_rights_are_bound_per_namespace_never_cluster_wide():
    bindings = [doc for _name, doc in resources() if doc["kind"] == "ClusterRoleBinding"]
    assert {b["roleRef"]["name"] for b in bindings} == {"kviz-web", "kviz-inventory"}
    captures = [doc for _name, doc in resources()
                if doc["kind"] == "RoleBinding" and doc["roleRef"]["name"] == "kviz-capture"]
    assert [b["metadata"]["namespace"] for b in captures] == ["default"]


def test_the_web_and_the_worker_have_their_own_service_accounts():
    accounts = {doc["metadata"]["name"] for _name, doc in resources()
                if doc["kind"] == "ServiceAccount"}
    assert accounts == {"kviz-web", "kviz-worker"}
    deployments = {doc["metadata"]["name"]: doc for _name, doc in resources()
                   if doc["kind"] == "Deployment"}
    assert deployments["kviz-web"]["spec"]["template"]["spec"]["serviceAccountName"] == (
        "kviz-web")
    assert deployments["kviz-worker"]["spec"]["template"]["spec"]["serviceAccountName"] == (
        "kviz-worker")


def test_the_capture_pod_and_debug_container_kviz_sends_validate(k8s_settings):
    from captures.sources import kubernetes as ks

    kubernetes_validate.validate(ks.node_pod_manifest("worker-1", "0f4c2d9e"),
                                 KUBERNETES_VERSION, strict=True)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ubuntu"},
           "spec": {"containers": [{"name": "ubuntu", "image": "ubuntu"}],
                    "ephemeralContainers": [ks.debug_container("kviz-1", "ubuntu"),
                                            ks.debug_container("kviz-2", "ubuntu", True)]}}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    for binding in ks.capture_bindings(["default", "shop"]):
        kubernetes_validate.validate(binding, KUBERNETES_VERSION, strict=True)


def _granted(account: str, namespace: str) -> set[tuple[str, str]]:
    """(resource, verb) pairs the ServiceAccount kviz/<account> holds in `namespace`, from the
    bindings of these manifests (ClusterRoleBindings everywhere, RoleBindings in their own)."""
    roles = {(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"]): doc
             for _name, doc in resources() if doc["kind"] in ("Role", "ClusterRole")}
    pairs = set()
    for _name, doc in resources():
        if doc["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if doc["kind"] == "RoleBinding" and doc["metadata"]["namespace"] != namespace:
            continue
        if not any(s.get("kind") == "ServiceAccount" and s["name"] == account
                   and s.get("namespace") == "kviz" for s in doc["subjects"]):
            continue
        ref = doc["roleRef"]
        role = roles.get((ref["kind"], doc["metadata"].get("namespace")
                          if ref["kind"] == "Role" else None, ref["name"]))
        for rule in (role or {}).get("rules", []):
            pairs |= {(r, v) for r in rule["resources"] for v in rule["verbs"]}
    return pairs


def test_the_capture_worker_may_clean_up_the_capture_pods_it_leaves():
    # At start and after each capture it lists kviz's capture pods and deletes the orphans
    # (captures.adapters.k8s.Cluster.cleanup_orphans).
    assert {("pods", "list"), ("pods", "delete")} <= _granted("kviz-worker", "kviz")


def test_the_analysis_worker_has_no_cluster_identity():
    # It never calls the API: only capture-queue workers clean up pods (tasks.runs_captures),
    # which the web's identity could not have done anyway (no delete).
    [deployment] = [doc for _name, doc in resources() if doc["kind"] == "Deployment"
                    and doc["metadata"]["name"] == "kviz-analysis-worker"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    assert ("pods", "delete") not in _granted("kviz-web", "kviz")
