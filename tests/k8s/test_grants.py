"""Who may capture where: namespaces granted through groups, checked before the cluster is."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from captures.sources import kubernetes as ks
from captures.sources.base import TargetError


@pytest.fixture
def people(db):
    from django.contrib.auth import get_user_model

    model = get_user_model()
    alice = model.objects.create_user("alice")  # granted default
    alice.groups.add(Group.objects.create(name="k8s-ns:default"))
    bob = model.objects.create_user("bob")  # granted nothing
    root = model.objects.create_superuser("root")
    return {"alice": alice, "bob": bob, "root": root}


def test_a_namespace_not_granted_is_refused_before_any_api_call(k8s_settings, apiserver, people):
    with pytest.raises(TargetError, match="namespace 'kube-system' is not granted to you"):
        ks.resolve({"kind": "pod", "namespace": "kube-system", "pod": "coredns"},
                   people["alice"])
    with pytest.raises(TargetError, match="namespace 'default' is not granted"):
        ks.resolve({"kind": "service", "namespace": "default", "service": "nginx"},
                   people["bob"])
    with pytest.raises(TargetError, match="node captures are not granted"):
        ks.resolve({"kind": "node", "node": "kviz-node"}, people["alice"])
    assert apiserver.api_requests() == []  # nothing reached the cluster


def test_a_granted_namespace_is_resolved_against_the_cluster(k8s_settings, apiserver, people):
    target = ks.resolve({"kind": "pod", "namespace": "default", "pod": "ubuntu"},
                        people["alice"])
    assert (target.kind, target.spec, target.linktype) == (
        "pod", {"namespace": "default", "pod": "ubuntu"}, "LINUX_SLL2")
    assert apiserver.api_requests()
    assert ks.resolve({"kind": "node", "node": "kviz-node"}, people["root"]).spec == {
        "node": "kviz-node"}


def test_targets_that_do_not_exist_are_named(k8s_settings, apiserver, people):
    with pytest.raises(TargetError, match='pods "nope" not found'):
        ks.resolve({"kind": "pod", "namespace": "default", "pod": "nope"}, people["root"])
    with pytest.raises(TargetError, match="no node 'other-node'"):
        ks.resolve({"kind": "node", "node": "other-node"}, people["root"])


def test_hostile_names_are_refused_without_a_call(k8s_settings, apiserver, people):
    for target in ({"kind": "pod", "namespace": "default", "pod": "../x"},
                   {"kind": "pod", "namespace": "Default", "pod": "ubuntu"},
                   {"kind": "service", "namespace": "default", "service": "a b"},
                   {"kind": "node", "node": ""}):
        with pytest.raises(TargetError):
            ks.resolve(target, people["root"])
    assert apiserver.api_requests() == []


def test_the_picker_offers_only_granted_namespaces(k8s_settings, apiserver, people):
    [alice_view] = ks.targets(people["alice"])
    assert [ns["namespace"] for ns in alice_view["namespaces"]] == ["default"]
    assert alice_view["nodes"] == []
    [root_view] = ks.targets(people["root"])
    assert len(root_view["namespaces"]) == 4 and root_view["nodes"][0]["name"] == "kviz-node"


def test_the_api_refuses_an_ungranted_namespace_with_nothing_sent_or_stored(
        k8s_settings, apiserver, people, client):
    from captures.models import Capture

    client.force_login(people["bob"])
    response = client.post(
        "/api/captures/", {"name": "peek", "filter": "",
                           "target": {"kind": "pod", "namespace": "default", "pod": "ubuntu"},
                           "limits": {"seconds": 10}},
        content_type="application/json")
    assert response.status_code == 400
    assert "namespace 'default' is not granted" in response.json()["error"]
    assert not Capture.objects.exists()
    assert apiserver.api_requests() == []


def test_the_api_lists_the_granted_cluster_targets(k8s_settings, apiserver, people, client):
    client.force_login(people["alice"])
    targets = client.get("/api/targets/").json()["targets"]
    [cluster] = [t for t in targets if t["kind"] == "cluster"]
    assert [n["namespace"] for n in cluster["namespaces"]] == ["default"]
    assert cluster["nodes"] == []  # node captures are granted apart


def test_the_new_capture_page_offers_the_granted_namespace_pods_and_services(
        k8s_settings, apiserver, people, client):
    client.force_login(people["alice"])
    page = client.get("/captures/new/").content.decode()
    assert 'value="pod:default/ubuntu"' in page
    assert 'value="service:default/nginx"' in page
    assert "namespace kube-system" not in page  # not granted to alice
    assert "cannot remove it afterwards" in page


def test_the_new_capture_form_refuses_an_ungranted_pod_before_any_api_call(
        k8s_settings, apiserver, people, client):
    from captures.models import Capture

    client.force_login(people["bob"])
    response = client.post("/captures/new/", {"name": "peek", "target": "pod:default/ubuntu",
                                              "filter": "", "seconds": "10"})
    assert response.status_code == 400
    assert "not granted to you" in response.content.decode()
    assert not Capture.objects.exists()
    assert apiserver.api_requests() == []
