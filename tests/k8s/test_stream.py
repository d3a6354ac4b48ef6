"""The exec stream as a real API server speaks it: the 1.30+ translator's opening frame, v4
from older servers, pings through idle-cutting proxies, and how tcpdump ended."""

from __future__ import annotations

from captures.sources import kubernetes as ks
from tests.k8s.conftest import drain


def _capture(cluster, apiserver, pod="ubuntu") -> tuple[bytes, object]:
    source = ks.PodSource("default", pod, "", cluster)
    source.open()
    recording = apiserver.recordings[pod]
    got = b""
    while len(got) < len(recording):
        chunk = source.stream.read(len(recording) - len(got))
        if not chunk:
            break
        got += chunk
    source.stop()
    got += drain(source)
    source.close()
    return got, source


def test_the_translators_empty_opening_frame_is_no_data(cluster, apiserver):
    assert apiserver.translator  # v5 only, an empty frame on stdout first
    got, source = _capture(cluster, apiserver)
    assert got == apiserver.recordings["ubuntu"]
    assert apiserver.sessions[0].subprotocol == "v5.channel.k8s.io"
    assert source.failure() == ""


def test_an_api_server_before_the_translator_speaks_v4(cluster, apiserver):
    apiserver.translator = False
    got, _source = _capture(cluster, apiserver)
    assert got == apiserver.recordings["ubuntu"]
    assert apiserver.sessions[0].subprotocol == "v4.channel.k8s.io"


def test_a_quiet_capture_survives_a_proxy_that_cuts_idle_connections(k8s_settings, cluster,
                                                                     apiserver):
    """No packet for a while, a load balancer with a short idle timeout on the way: the pings
    (client-go sends one every 5 s; here every 0.2 s) keep the connection in use."""
    apiserver.idle_timeout = 0.6
    apiserver.quiet = 1.5
    got, source = _capture(cluster, apiserver)
    [session] = apiserver.sessions
    assert session.pings >= 3
    assert session.ended_by == "stop-line"  # not "idle-timeout"
    assert got == apiserver.recordings["ubuntu"]
    assert source.failure() == ""


def test_tcpdump_dying_mid_capture_is_reported_with_its_exit_code(cluster, apiserver):
    apiserver.die_after = 500
    source = ks.PodSource("default", "ubuntu", "", cluster)
    source.open()
    drain(source)
    failure = source.failure()
    source.close()
    assert "exited with code 1" in failure
    assert "The interface disappeared" in failure


def test_a_stream_cut_before_its_status_is_explained_by_the_containers_state(cluster,
                                                                            apiserver):
    """No Status arrived (the connection was cut on the way): the container's
    state.terminated, where the holder left tcpdump's exit code, tells what happened."""
    apiserver.die_after = 500
    apiserver.drop_status = True
    source = ks.PodSource("default", "ubuntu", "", cluster)
    source.open()
    drain(source)
    failure = source.failure()
    source.close()
    assert source.capture.stream.status is None
    assert "exited with code 1" in failure and "tcpdump exited with code 1" in failure
