"""A Service capture: every pod behind it at once, merged into one pcapng, analysed as one."""

from __future__ import annotations

import io
import json
import time

import pytest

from captures.adapters import k8s
from captures.analysis import CaptureFile, analyze_files
from captures.analysis.pcapfile import Warnings, read_frames
from captures.sources import kubernetes as ks
from tests.k8s.conftest import drain, settle


def test_a_service_capture_merges_its_pods_and_folds_copies_seen_at_both(cluster, apiserver,
                                                                        tmp_path):
    source = ks.ServiceSource("default", "nginx", "", cluster)
    source.open()
    assert sorted(s.pod for s in source.pods) == ["nginx-a", "nginx-b"]
    expected = sum(len(apiserver.recordings[p]) for p in ("nginx-a", "nginx-b"))
    got = b""
    while apiserver.sessions and sum(len(s.sent) for s in apiserver.sessions) < expected:
        got += source.stream.read(4096)  # wait until both pods streamed everything
    source.stop()
    got += drain(source)
    source.close()
    path = tmp_path / "service.pcapng"
    path.write_bytes(got)

    with open(path, "rb") as fp:
        frames = list(read_frames(fp, 0, Warnings())[1])
    assert {f.interface for f in frames} == {"nginx-a:any", "nginx-b:any"}
    assert [f.time for f in frames] == sorted(f.time for f in frames)  # merged in time order
    assert len(frames) == 29 + 17  # every packet of both recordings

    model = analyze_files([CaptureFile(path, source.vantage, source.interfaces)],
                          source.inventory())
    hops = _hop_labels(model)
    # nginx-a → nginx-b directly: one message per packet, seen leaving one pod, entering the other
    assert any({"nginx-a:eth0", "nginx-b:eth0"} <= labels for labels in hops)
    model.close()


def test_during_a_rollout_terminating_endpoints_are_skipped(cluster, apiserver):
    """Several slices per Service, one per address family (dual-stack): each pod once, the
    not-ready one kept (it is still the Service's), the terminating one left alone (the
    kubelet starts nothing in a pod that is shutting down)."""
    apiserver.add_rollout()
    assert [p["name"] for p in cluster.service_pods("default", "nginx")] == [
        "nginx-a", "nginx-b"]
    source = ks.ServiceSource("default", "nginx", "", cluster)
    source.open()
    source.stop()
    drain(source)
    source.close()
    assert sorted(s.pod for s in source.pods) == ["nginx-a", "nginx-b"]
    assert not [r for r in apiserver.requests if "nginx-old" in r.path]
    assert source.failure() == ""


def test_one_pod_that_cannot_be_captured_is_named_and_the_others_go_on(k8s_settings, cluster,
                                                                      apiserver):
    k8s_settings.KVIZ_K8S_START_TIMEOUT = 1
    apiserver.slow_pods["nginx-b"] = 30  # its debug container never starts in time
    source = ks.ServiceSource("default", "nginx", "", cluster)
    source.open()
    assert [s.pod for s in source.pods] == ["nginx-a"]
    source.stop()
    assert drain(source)
    source.close()
    assert source.failure().startswith("pod nginx-b: capture container")
    assert "did not start within 1 s" in source.failure()


def test_a_service_none_of_whose_pods_can_be_captured_fails_naming_each(k8s_settings, cluster,
                                                                       apiserver):
    apiserver.capture_failure = "any: That device is not up"
    with pytest.raises(k8s.K8sError) as raised:
        ks.ServiceSource("default", "nginx", "", cluster).open()
    message = str(raised.value)
    assert message.startswith("no pod of service default/nginx could be captured: ")
    assert "pod nginx-a: tcpdump did not start" in message
    assert "pod nginx-b: tcpdump did not start" in message
    assert settle(apiserver) == []


def test_every_stream_is_read_from_its_start(k8s_settings, cluster, apiserver):
    """nginx-a captures busy traffic while nginx-b is still pulling its image: a stream
    nobody reads backs up to tcpdump, and the kernel drops its packets."""
    apiserver.busy_seconds = 1.5
    apiserver.slow_pods["nginx-b"] = 1.2
    source = ks.ServiceSource("default", "nginx", "", cluster)
    started = time.monotonic()
    source.open()
    assert time.monotonic() - started >= 1.0  # open() waited for nginx-b
    source.stop()
    got = drain(source)
    source.close()
    sessions = {s.pod: s for s in apiserver.sessions}
    assert sessions["nginx-a"].dropped == 0
    # The busy traffic arrived, all of it: as pcapng each record only grows. (How much the
    # server sent in the second open() waited depends on the machine: 325 KB in one CI run.)
    assert sessions["nginx-a"].replayed > 100_000
    assert len(got) >= sessions["nginx-a"].replayed


def _hop_labels(model) -> list[set]:
    out = io.StringIO()
    model.write_json(out)
    document = json.loads(out.getvalue())
    labels = []
    for message in document["messages"]:
        labels.append({hop.get("interface") or hop.get("at") or str(hop)
                       for hop in message.get("hops") or []})
    return labels
