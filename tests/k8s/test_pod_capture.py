"""A pod capture end to end: debug container, exec'd tcpdump, binary stream, stop, clear errors."""

from __future__ import annotations

import hashlib
import threading

import pytest

from captures.adapters import k8s
from captures.jobs import runner
from captures.models import Capture, Status
from captures.sources import kubernetes as ks
from tests.k8s.conftest import drain, settle


def test_a_pod_capture_stores_exactly_the_bytes_tcpdump_streamed(
        k8s_settings, apiserver, transactional_db):
    """Through the runner, as a worker runs it: the stored file is tcpdump's pcap, unchanged."""
    from django.contrib.auth import get_user_model

    recording = apiserver.recordings["ubuntu"]
    with pytest.raises(UnicodeDecodeError):
        recording.decode("utf-8")  # the client's text mode would have mangled these bytes
    packets = 23  # frames in tests/k8s/fixtures/ubuntu.pcap: the limit stops the capture
    owner = get_user_model().objects.create_user("alice")
    capture = Capture.objects.create(
        name="pod", owner=owner, target_kind="pod",
        target_spec={"namespace": "default", "pod": "ubuntu"}, limit_seconds=30,
        limit_packets=packets, limit_bytes=10**7)

    assert runner.run(capture.id, "test:1") == Status.COMPLETED

    capture.refresh_from_db()
    [stored_file] = capture.stored_files()
    stored = stored_file.file.read_bytes()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(recording).hexdigest()
    assert capture.packets == packets
    assert capture.inventory["schema"] == "kviz.inventory/1"
    assert capture.summary["participants"] >= 3
    [session] = apiserver.sessions
    assert session.kind == "exec"
    assert session.ended_by == "stop-line"  # runner's stop() → the script SIGINTs tcpdump
    assert stored_file.file.name == "capture.pcap"  # tcpdump writes classic pcap
    assert stored_file.vantage == "pod/default/ubuntu" and stored_file.interfaces["2"] == "eth0"
    meta = stored_file.file.with_name("capture.pcap.meta.json").read_text()
    assert '"vantage": "pod/default/ubuntu"' in meta and '"2": "eth0"' in meta
    assert "source:" not in capture.log  # tcpdump ended as asked: nothing to report
    assert settle(apiserver) == []


def test_the_debug_container_holds_and_tcpdump_is_execd_with_the_filter(cluster, apiserver):
    source = ks.PodSource("default", "ubuntu", "tcp port 80 and host 10.0.185.118", cluster)
    source.open()
    source.stop()
    drain(source)
    source.close()
    patch = next(r for r in apiserver.requests if r.method == "PATCH")
    assert patch.path == "/api/v1/namespaces/default/pods/ubuntu/ephemeralcontainers"
    assert patch.headers["content-type"] == "application/strategic-merge-patch+json"
    [container] = patch.json["spec"]["ephemeralContainers"]
    assert container["targetContainerName"] == "ubuntu"
    assert container["image"] == "nicolaka/netshoot:v0.13"
    assert not container["stdin"] and not container["tty"]  # nothing attaches to it
    assert container["command"][:4] == ["sh", "-c", ks.HOLD_SCRIPT, "kviz-hold"]
    assert "tcpdump" not in container["command"]  # it only holds: the capture is exec'd
    [session] = apiserver.sessions
    command = session.command
    assert command[:4] == ["sh", "-c", ks.CAPTURE_SCRIPT, "kviz-capture"]
    # The filter is one argv item after "--": tcpdump reads it, no shell ever parses it.
    assert command[-2:] == ["--", "tcp port 80 and host 10.0.185.118"]
    assert command[command.index("tcpdump"):command.index("--")] == [
        "tcpdump", "-i", "any", "-y", "LINUX_SLL2", "-U", "--immediate-mode", "-n",
        "-s", "262144", "-w", "-"]
    assert '"$@"' in command[2] and "$1" not in command[2]
    assert session.container == container["name"]


def test_kill_drops_the_connection_and_stdin_closing_ends_tcpdump(cluster, apiserver):
    source = ks.PodSource("default", "nginx-a", "", cluster)
    source.open()
    source.kill()
    source.close()
    [session] = apiserver.sessions
    assert session.done.wait(5)
    assert session.ended_by == "disconnected"
    assert settle(apiserver) == []  # the holder saw the capture end


def test_a_forbidden_patch_names_the_missing_permission(cluster, apiserver):
    apiserver.forbid("PATCH", "/ephemeralcontainers$", "patch", "pods/ephemeralcontainers")
    source = ks.PodSource("default", "ubuntu", "", cluster)
    with pytest.raises(k8s.Forbidden) as raised:
        source.open()
    assert raised.value.permission == "patch pods/ephemeralcontainers in default"
    assert "missing permission: patch pods/ephemeralcontainers in default" in str(raised.value)


def test_a_forbidden_listing_names_the_missing_permission(cluster, apiserver):
    apiserver.forbid("GET", "^/api/v1/nodes$", "list", "nodes")
    with pytest.raises(k8s.Forbidden, match="missing permission: list nodes cluster-wide"):
        cluster.nodes()


def test_a_cluster_without_ephemeral_containers_says_so(cluster, apiserver):
    apiserver.no_ephemeral_containers = True
    with pytest.raises(k8s.NotSupported, match="ephemeral containers are disabled"):
        ks.PodSource("default", "ubuntu", "", cluster).open()


def test_a_pod_deleted_between_two_calls_is_not_taken_for_a_missing_feature(cluster,
                                                                            apiserver):
    """kubectl tells the two 404s apart by details.name: the pod's own 404 names it."""
    apiserver.delete_after_get.add(("default", "ubuntu"))
    with pytest.raises(k8s.Gone, match="the pod no longer exists") as raised:
        ks.PodSource("default", "ubuntu", "", cluster).open()
    assert "ephemeral" not in str(raised.value)


def test_tcpdump_failing_in_the_container_is_reported_with_its_words(cluster, apiserver):
    apiserver.capture_failure = "any: That device is not up"
    with pytest.raises(k8s.K8sError, match="That device is not up"):
        ks.PodSource("default", "ubuntu", "", cluster).open()
    assert settle(apiserver) == []


def test_the_stream_is_readable_while_the_capture_runs(cluster, apiserver):
    source = ks.PodSource("default", "nginx-b", "", cluster)
    source.open()
    recording = apiserver.recordings["nginx-b"]
    got = b""
    while len(got) < len(recording):
        got += source.stream.read(len(recording) - len(got))
    assert got == recording  # everything arrived before anyone asked to stop
    stopper = threading.Timer(0.1, source.stop)
    stopper.start()
    assert drain(source) == b""
    stopper.join()
    source.close()
    assert apiserver.sessions[0].ended_by == "stop-line"
