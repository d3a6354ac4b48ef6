"""Captured packets never reach the node's container logs: the runtime logs a container's own
process (/var/log/pods, and whatever ships node logs), and kviz's capture runs as an exec."""

from __future__ import annotations

from captures.sources import kubernetes as ks
from tests.k8s.conftest import drain, settle


def _leaked(apiserver, recording: bytes) -> bool:
    logs = apiserver.container_logs()
    # Any 32 bytes of the recording's packets in a log would be a leak.
    return any(recording[at:at + 32] in logs for at in range(24, len(recording) - 32, 16))


def test_a_pod_capture_writes_nothing_of_the_packets_to_container_logs(cluster, apiserver):
    source = ks.PodSource("default", "ubuntu", "", cluster)
    source.open()
    recording = apiserver.recordings["ubuntu"]
    got = b""
    while len(got) < len(recording):
        got += source.stream.read(len(recording) - len(got))
    source.stop()
    drain(source)
    source.close()
    assert got == recording  # the packets did go to kviz
    assert settle(apiserver) == []
    assert apiserver.container_logs() == b""
    assert not _leaked(apiserver, apiserver.recordings["ubuntu"])


def test_a_node_capture_writes_nothing_of_the_packets_to_container_logs(k8s_settings, cluster,
                                                                        apiserver):
    source = ks.NodeSource("kviz-node", "0f4c2d9e-1b2a-4c3d-9e8f-7a6b5c4d3e2f", "", cluster)
    source.open()
    source.stop()
    assert drain(source)
    source.close()
    assert apiserver.container_logs() == b""


def test_the_test_server_does_log_what_an_attached_process_writes(cluster, apiserver):
    """The model's other half: output of a container's own process, which an attach
    streams, is logged. The former attach-style capture leaked every packet this way."""
    from captures.adapters import k8s  # noqa: F401  (the adapter's client, unpatched)

    cluster.add_debug_container("default", "ubuntu", {
        "name": "kviz-attach", "image": "nicolaka/netshoot:v0.13", "stdin": True,
        "stdinOnce": True, "targetContainerName": "ubuntu",
        "command": ["sh", "-c", "read -r _; exec \"$@\"", "old", "tcpdump", "-w", "-"]})
    cluster.wait_running("default", "ubuntu", "kviz-attach", 5)
    from kubernetes.stream import stream

    ws = stream(cluster.core.connect_get_namespaced_pod_attach, "ubuntu", "default",
                container="kviz-attach", stdin=True, stdout=True, stderr=True, tty=False,
                binary=True, _preload_content=False)
    ws.write_stdin(b"start\n")
    ws.run_forever(timeout=1)
    ws.close()
    assert _leaked(apiserver, apiserver.recordings["ubuntu"])
