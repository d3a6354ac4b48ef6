"""Whatever step a pod capture fails at, no capture container is left running (an ephemeral
container cannot be removed; one left running would hold its capture capability for the
pod's life). Before the exec, during the capture, after it."""

from __future__ import annotations

import time

import pytest

from captures.adapters import k8s
from captures.sources import kubernetes as ks
from tests.k8s.conftest import drain, settle


def _holders(apiserver) -> list:
    return [c for c in apiserver.containers if c.mark == "kviz-hold"]


def test_a_start_timeout_with_the_image_pulled_later_ends_by_itself(k8s_settings, cluster,
                                                                    apiserver):
    """The kubelet keeps pulling after kviz gave up; the container starts with nobody there."""
    k8s_settings.KVIZ_K8S_START_TIMEOUT = 1
    apiserver.pull_failures = 15  # about 1.6 s of failed pulls, then the image comes
    with pytest.raises(k8s.K8sError, match="did not start within 1 s"):
        ks.PodSource("default", "ubuntu", "", cluster).open()
    deadline = time.monotonic() + 5
    while not any(c.running for c in apiserver.containers) and time.monotonic() < deadline:
        time.sleep(0.05)
    [holder] = _holders(apiserver)
    assert "running" in holder.state or "terminated" in holder.state  # it did start, late
    assert settle(apiserver) == []  # and ended after KVIZ_K8S_HOLD_WAIT with no capture
    assert holder.state["terminated"]["exitCode"] == 0


def test_a_refused_exec_leaves_nothing_running(cluster, apiserver):
    apiserver.forbid("GET", "/exec$", "get", "pods/exec")
    with pytest.raises(k8s.Forbidden):
        ks.PodSource("default", "ubuntu", "", cluster).open()
    assert settle(apiserver) == []  # even the cleanup exec was refused: the holder's timeout


def test_a_worker_dying_between_the_patch_and_the_exec_leaves_nothing_running(cluster,
                                                                             apiserver):
    cluster.add_debug_container("default", "ubuntu", ks.debug_container("kviz-dead", "ubuntu"))
    # ... and the worker is gone: nobody waits, nobody execs.
    deadline = time.monotonic() + 5
    while not apiserver.running_containers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert apiserver.running_containers()
    assert settle(apiserver) == []


def test_tcpdump_refusing_to_start_leaves_nothing_running(cluster, apiserver):
    apiserver.capture_failure = "any: That device is not up"
    with pytest.raises(k8s.K8sError):
        ks.PodSource("default", "ubuntu", "", cluster).open()
    assert settle(apiserver, 0.5) == []  # ended with tcpdump, not after a timeout


def test_a_connection_dropped_mid_capture_leaves_nothing_running(cluster, apiserver):
    source = ks.PodSource("default", "ubuntu", "", cluster)
    source.open()
    source.capture.stream.drop()  # the worker died mid-capture
    source.close()
    assert settle(apiserver, 0.5) == []


def test_tcpdump_dying_mid_capture_leaves_nothing_running(cluster, apiserver):
    apiserver.die_after = 500
    source = ks.PodSource("default", "ubuntu", "", cluster)
    source.open()
    drain(source)
    source.close()
    assert settle(apiserver, 0.5) == []
    [holder] = _holders(apiserver)
    assert holder.state["terminated"]["exitCode"] == 1  # tcpdump's code, for the record


def test_a_capture_that_ended_normally_leaves_nothing_running(cluster, apiserver):
    source = ks.PodSource("default", "ubuntu", "", cluster)
    source.open()
    source.stop()
    drain(source)
    source.close()
    assert settle(apiserver, 0.5) == []
    [holder] = _holders(apiserver)
    assert holder.state["terminated"]["exitCode"] == 0
