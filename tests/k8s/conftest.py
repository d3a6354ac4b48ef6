"""The fake API server and a kubeconfig that points the unpatched client at it."""

from __future__ import annotations

import pytest

from tests.k8s.fake_apiserver import FakeApiServer


@pytest.fixture
def apiserver():
    server = FakeApiServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(apiserver, tmp_path):
    return apiserver.kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def cluster(kubeconfig):
    from captures.adapters import k8s

    connected = k8s.Cluster.connect(str(kubeconfig), "fake")
    try:
        yield connected
    finally:
        connected.close()


@pytest.fixture
def k8s_settings(settings, kubeconfig, tmp_path):
    """Django settings for the Kubernetes sources: this kubeconfig, kviz's own namespace."""
    settings.KVIZ_KUBECONFIG = str(kubeconfig)
    settings.KVIZ_KUBE_CONTEXT = "fake"
    settings.KVIZ_K8S_NAMESPACE = "kviz"
    settings.KVIZ_DEBUG_IMAGE = "nicolaka/netshoot:v0.13"
    settings.DATA_DIR = tmp_path / "data"
    return settings


@pytest.fixture(autouse=True)
def quick_timeouts(settings):
    """Timeouts scaled for tests: the test server's kubelet takes fractions of a second."""
    settings.KVIZ_K8S_START_TIMEOUT = 5
    settings.KVIZ_K8S_LISTEN_TIMEOUT = 5
    settings.KVIZ_K8S_HOLD_WAIT = 1
    settings.KVIZ_K8S_PING_PERIOD = 0.2
    return settings


def drain(source) -> bytes:
    got = b""
    while chunk := source.stream.read(65536):
        got += chunk
    return got


def settle(apiserver, timeout: float = 5.0) -> list:
    """Wait until no container kviz made is running; returns those still running after
    `timeout` (none, when every holder ended as it should)."""
    import time

    deadline = time.monotonic() + timeout
    while apiserver.running_containers() and time.monotonic() < deadline:
        time.sleep(0.05)
    return apiserver.running_containers()
