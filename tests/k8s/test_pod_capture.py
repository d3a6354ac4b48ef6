"""A pod capture end to end: debug container, binary attach stream, stop, clear errors."""

from __future__ import annotations

import hashlib
import threading

import pytest

from captures.adapters import k8s
from captures.jobs import runner
from captures.models import Capture, Status
from captures.sources import kubernetes as ks


def _drain(source) -> bytes:
    got = b""
    while chunk := source.stream.read(65536):
        got += chunk
    return got


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
    stored = capture.pcap_file.read_bytes()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(recording).hexdigest()
    assert capture.packets == packets
    assert capture.inventory["schema"] == "kviz.inventory/1"
    assert capture.summary["participants"] >= 3
    [session] = apiserver.sessions
    assert session.ended_by == "stop-line"  # runner's stop() → the script SIGINTs tcpdump
    assert capture.pcap_file.name == "capture.pcap"  # tcpdump writes classic pcap
    meta = capture.pcap_file.with_name("capture.pcap.meta.json").read_text()
    assert '"vantage": "pod/default/ubuntu"' in meta and '"2": "eth0"' in meta


def test_the_debug_container_targets_the_pod_and_hands_the_filter_to_tcpdump(cluster, apiserver):
    source = ks.PodSource("default", "ubuntu", "tcp port 80 and host 10.0.185.118", cluster)
    source.open()
    source.stop()
    _drain(source)
    source.close()
    patch = next(r for r in apiserver.requests if r.method == "PATCH")
    assert patch.path == "/api/v1/namespaces/default/pods/ubuntu/ephemeralcontainers"
    assert patch.headers["content-type"] == "application/strategic-merge-patch+json"
    [container] = patch.json["spec"]["ephemeralContainers"]
    assert container["targetContainerName"] == "ubuntu"
    assert container["image"] == "nicolaka/netshoot:v0.13"
    assert container["stdin"] and container["stdinOnce"] and not container["tty"]
    command = container["command"]
    assert command[:2] == ["sh", "-c"]
    # The filter is one argv item after "--": tcpdump reads it, no shell ever parses it.
    assert command[-2:] == ["--", "tcp port 80 and host 10.0.185.118"]
    assert command[command.index("tcpdump"):command.index("--")] == [
        "tcpdump", "-i", "any", "-y", "LINUX_SLL2", "-U", "--immediate-mode", "-n",
        "-s", "262144", "-w", "-"]
    assert '"$@"' in command[2] and "$1" not in command[2]


def test_kill_drops_the_connection_and_stdin_closing_ends_tcpdump(cluster, apiserver):
    source = ks.PodSource("default", "nginx-a", "", cluster)
    source.open()
    source.kill()
    source.close()
    [session] = apiserver.sessions
    assert session.done.wait(5)
    assert session.ended_by == "disconnected"


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


def test_pod_security_rejection_says_so(cluster, apiserver):
    apiserver.pod_security_violation = ('unrestricted capabilities (container "kviz-1" must not '
                                        'include "NET_ADMIN", "NET_RAW" in '
                                        'securityContext.capabilities.add)')
    with pytest.raises(k8s.PodSecurity, match="Pod Security level forbids the capture"):
        ks.PodSource("default", "ubuntu", "", cluster).open()


def test_a_cluster_without_ephemeral_containers_says_so(cluster, apiserver):
    apiserver.no_ephemeral_containers = True
    with pytest.raises(k8s.NotSupported, match="does not allow ephemeral containers"):
        ks.PodSource("default", "ubuntu", "", cluster).open()


def test_tcpdump_failing_in_the_container_is_reported_with_its_words(cluster, apiserver):
    apiserver.capture_failure = "any: You don't have permission to perform this capture"
    with pytest.raises(k8s.K8sError, match="You don't have permission"):
        ks.PodSource("default", "ubuntu", "", cluster).open()


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
    assert _drain(source) == b""
    stopper.join()
    source.close()
    assert apiserver.sessions[0].ended_by == "stop-line"
