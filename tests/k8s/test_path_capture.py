"""A path capture on a cluster: the client pod, its node and every backend at once, one file
each, analysed as one capture; grants checked for every part before anything starts, and a
part that cannot start named while the others finish."""

from __future__ import annotations

import subprocess

import pytest
from django.contrib.auth.models import Group

from captures.jobs import actions, runner
from captures.models import Status
from tests.k8s.conftest import settle

PATH = {"kind": "path", "from": "pod/default/ubuntu", "to": "service/default/nginx",
        "where": "cluster"}


@pytest.fixture
def people(transactional_db):
    from django.contrib.auth import get_user_model

    model = get_user_model()
    alice = model.objects.create_user("alice")  # default, and node captures
    alice.groups.add(Group.objects.create(name="k8s-ns:default"),
                     Group.objects.create(name="k8s-nodes"))
    bob = model.objects.create_user("bob")  # default only: no node captures
    bob.groups.add(Group.objects.get(name="k8s-ns:default"))
    carol = model.objects.create_user("carol")  # nothing
    return {"alice": alice, "bob": bob, "carol": carol}


def packets_of(apiserver, *pods: str) -> int:
    frames = 0
    for pod in pods:
        out = subprocess.run(["tshark", "-r", "-", "-T", "fields", "-e", "frame.number"],
                             input=apiserver.recordings[pod], capture_output=True, check=True)
        frames += len(out.stdout.split())
    return frames


def start(user, limit_packets: int):
    return actions.start_capture(user, {"name": "path", "target": PATH,
                                        "limits": {"packets": limit_packets, "seconds": 30}})


def test_a_path_records_the_client_its_node_and_each_backend_as_one_capture(
        k8s_settings, apiserver, people):
    # The node's capture pod streams the test server's default recording (the client's).
    everything = packets_of(apiserver, "ubuntu", "ubuntu", "nginx-a", "nginx-b")
    capture = start(people["alice"], everything)
    parts = capture.target_spec["parts"]
    assert [(p["role"], p["vantage"], p["error"]) for p in parts] == [
        ("client pod", "pod/default/ubuntu", ""), ("client node", "node/kviz-node", ""),
        ("backend pod", "pod/default/nginx-a", ""), ("backend pod", "pod/default/nginx-b", "")]

    assert runner.run(capture.id, "test:1") == Status.COMPLETED

    capture.refresh_from_db()
    files = capture.stored_files()
    # Numbered as they started (in parallel): each file's index is its position.
    assert [f.position for f in files] == [0, 1, 2, 3]
    recorded = {"pod/default/ubuntu": "ubuntu", "node/kviz-node": "ubuntu",
                "pod/default/nginx-a": "nginx-a", "pod/default/nginx-b": "nginx-b"}
    assert sorted(f.vantage for f in files) == sorted(recorded)
    roles = {p["vantage"]: p["role"] for p in parts}
    for stored in files:
        pod = recorded[stored.vantage]
        assert stored.role == roles[stored.vantage]
        assert stored.file.read_bytes() == apiserver.recordings[pod]  # byte for byte
        assert stored.interfaces  # each part's interface names, from its own pod
        assert stored.packets == packets_of(apiserver, pod)
    assert capture.packets == everything
    assert capture.summary["packets"] == everything  # analysed together
    assert settle(apiserver) == []  # every capture container ended, the node's pod deleted


def test_a_part_not_granted_or_not_started_is_named_and_the_others_finish(
        k8s_settings, apiserver, people):
    k8s_settings.KVIZ_K8S_START_TIMEOUT = 1
    apiserver.slow_pods["nginx-b"] = 30  # its debug container never starts in time
    capture = start(people["bob"], packets_of(apiserver, "ubuntu", "nginx-a"))
    node = capture.target_spec["parts"][1]
    assert node["vantage"] == "node/kviz-node" and "not granted" in node["error"]

    assert runner.run(capture.id, "test:1") == Status.COMPLETED

    capture.refresh_from_db()
    assert sorted(f.vantage for f in capture.stored_files()) == ["pod/default/nginx-a",
                                                                 "pod/default/ubuntu"]
    files = list(capture.files.all())
    assert [f.path != "" for f in files] == [True, True, False, False]  # stored ones first
    missing = {f.vantage: f.error for f in files if not f.path}
    assert set(missing) == {"node/kviz-node", "pod/default/nginx-b"}
    assert "did not start within 1 s" in missing["pod/default/nginx-b"]
    assert any("not captured: pod/default/nginx-b" in line for line in capture.log)
    assert capture.analysis_path  # the parts that ran are analysed


def test_grants_are_checked_for_every_namespace_before_the_cluster_is_asked(
        k8s_settings, apiserver, people):
    with pytest.raises(actions.ActionError, match="namespace 'default' is not granted"):
        start(people["carol"], 10)
    elsewhere = dict(PATH, to="service/kube-system/kube-dns")
    with pytest.raises(actions.ActionError, match="namespace 'kube-system' is not granted"):
        actions.start_capture(people["alice"], {"name": "path", "target": elsewhere})
    assert apiserver.api_requests() == []


@pytest.mark.parametrize(("target", "message"), [
    ({"from": "service/default/nginx", "to": "pod/default/nginx-a"}, "from must be"),
    ({"from": "pod/default/ubuntu", "to": "node/kviz-node"}, "to must be"),
    ({"from": "pod/Default/ubuntu", "to": "pod/default/nginx-a"}, "DNS-1123"),
    ({"from": "pod/default/ubuntu", "to": "pod/default/nginx-a", "via": "x"}, "unknown path"),
    ({"from": "pod/default/ubuntu", "to": "pod/default/nginx-a", "where": "moon"}, "where must"),
])
def test_a_malformed_path_is_refused_with_its_shape(k8s_settings, apiserver, people, target,
                                                   message):
    with pytest.raises(actions.ActionError, match=message):
        actions.start_capture(people["alice"], {"name": "path", "target": {"kind": "path",
                                                                            **target}})


def test_a_gone_client_pod_refuses_the_path(k8s_settings, apiserver, people):
    gone = dict(PATH, **{"from": "pod/default/nobody"})
    with pytest.raises(actions.ActionError, match="nobody"):
        actions.start_capture(people["alice"], {"name": "path", "target": gone})
