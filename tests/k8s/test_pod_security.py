"""Pod Security: no capability is added at first (baseline, the usual namespace level,
refuses NET_ADMIN and NET_RAW), NET_RAW only where the runtime withholds it and the level
allows it, and otherwise a message naming the level."""

from __future__ import annotations

import pytest

from captures.adapters import k8s
from captures.sources import kubernetes as ks
from tests.k8s.conftest import drain, settle


def _level(apiserver, namespace: str, level: str) -> None:
    labels = apiserver.state["namespaces"][namespace]["metadata"]["labels"]
    labels["pod-security.kubernetes.io/enforce"] = level


def _added(apiserver) -> list:
    return [((c.spec.get("securityContext") or {}).get("capabilities") or {}).get("add")
            for c in apiserver.containers]


def test_a_baseline_namespace_on_containerd_is_captured_with_nothing_added(cluster, apiserver):
    assert apiserver.state["namespaces"]["default"]["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"] == "baseline"
    source = ks.PodSource("default", "ubuntu", "", cluster)
    source.open()
    source.stop()
    assert drain(source)
    source.close()
    assert _added(apiserver) == [None]  # a root container on containerd has NET_RAW


def test_net_raw_is_added_alone_where_the_runtime_withholds_it_and_the_level_allows(
        cluster, apiserver):
    apiserver.runtime = "cri-o"
    _level(apiserver, "default", "privileged")
    source = ks.PodSource("default", "ubuntu", "", cluster)
    source.open()
    source.stop()
    assert drain(source)
    source.close()
    assert _added(apiserver) == [None, ["NET_RAW"]]
    assert settle(apiserver) == []  # the first attempt's container ended too


def test_a_level_that_forbids_net_raw_is_named_precisely(cluster, apiserver):
    apiserver.runtime = "cri-o"
    with pytest.raises(k8s.PodSecurity) as raised:
        ks.PodSource("default", "ubuntu", "", cluster).open()
    message = str(raised.value)
    assert 'Pod Security level "baseline" forbids adding it' in message
    assert "needs the NET_RAW capability" in message
    assert 'must not include "NET_RAW" in securityContext.capabilities.add' in message
    assert settle(apiserver) == []


def test_restricted_refuses_even_the_plain_container_and_says_restricted(cluster, apiserver):
    _level(apiserver, "default", "restricted")
    with pytest.raises(k8s.PodSecurity, match=r'Pod Security level "restricted" forbids the '
                                              r'capture container: .*runAsNonRoot != true'):
        ks.PodSource("default", "ubuntu", "", cluster).open()
    assert apiserver.containers == []


def test_the_admission_wording_is_the_api_servers(cluster, apiserver):
    """pod-security-admission's message, verbatim, for a container adding NET_ADMIN."""
    with pytest.raises(k8s.PodSecurity) as raised:
        cluster.add_debug_container("default", "ubuntu", {
            "name": "x", "image": "busybox", "targetContainerName": "ubuntu",
            "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}})
    assert str(raised.value).endswith(
        'non-default capabilities (container "x" must not include "NET_ADMIN", "NET_RAW" in '
        'securityContext.capabilities.add)')
