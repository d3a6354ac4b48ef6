"""Waiting for the capture container as kubectl debug waits: a watch, pulls the kubelet is
still retrying waited out, and the reasons a user can act on named."""

from __future__ import annotations

import pytest

from captures.adapters import k8s
from captures.sources import kubernetes as ks
from tests.k8s.conftest import drain


def test_a_transient_pull_failure_is_waited_out(cluster, apiserver):
    """The default image comes from a rate-limited public registry: ErrImagePull, then
    ImagePullBackOff, then the kubelet's retry succeeds."""
    apiserver.pull_failures = 3
    source = ks.PodSource("default", "ubuntu", "", cluster)
    source.open()
    source.stop()
    assert drain(source)
    source.close()
    session = apiserver.sessions[0]
    session.done.wait(10)  # the server's own account of how it ended, on its own thread
    # A stream the client gave up on (silent past its ping deadline on a loaded machine)
    # says so here rather than as an empty ended_by.
    assert session.ended_by == "stop-line", (session.ended_by, source.capture.stream.error)


def test_the_container_is_watched_not_polled(cluster, apiserver):
    apiserver.pull_failures = 3
    source = ks.PodSource("default", "ubuntu", "", cluster)
    source.open()
    source.stop()
    drain(source)
    source.close()
    watches = [r for r in apiserver.requests if r.query.get("watch")]
    assert watches and watches[0].query["fieldSelector"] == ["metadata.name=ubuntu"]
    reads = [r for r in apiserver.requests
             if r.method == "GET" and r.path == "/api/v1/namespaces/default/pods/ubuntu"]
    assert len(reads) <= 2  # the pod itself once; no read per status change
    assert len(watches) <= 2


def test_a_pull_that_never_succeeds_names_the_reason_and_what_to_do(k8s_settings, cluster,
                                                                    apiserver):
    k8s_settings.KVIZ_K8S_START_TIMEOUT = 1
    apiserver.pull_failures = -1
    with pytest.raises(k8s.K8sError) as raised:
        ks.PodSource("default", "ubuntu", "", cluster).open()
    message = str(raised.value)
    assert "did not start within 1 s" in message
    assert "ImagePullBackOff" in message or "ErrImagePull" in message
    assert "KVIZ_DEBUG_IMAGE" in message and "nicolaka/netshoot:v0.13" in message


def test_a_reason_no_retry_fixes_fails_at_once(k8s_settings, cluster, apiserver):
    k8s_settings.KVIZ_DEBUG_IMAGE = "Not A Valid/Image"
    k8s_settings.KVIZ_K8S_START_TIMEOUT = 30
    with pytest.raises(k8s.K8sError, match=r"InvalidImageName.*not a valid image reference"):
        ks.PodSource("default", "ubuntu", "", cluster).open()


def test_a_pod_deleted_while_kviz_waits_says_so(cluster, apiserver):
    apiserver.status_delay = 0.3
    source = ks.PodSource("default", "ubuntu", "", cluster)
    pod = apiserver.state["pods"][("default", "ubuntu")]
    import threading

    threading.Timer(0.15, lambda: apiserver.call(apiserver._remove, pod)).start()
    with pytest.raises(k8s.Gone, match="was deleted"):
        source.open()
