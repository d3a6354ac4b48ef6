"""The diagnosis on real failures: each lab fault is run once, and what kviz says caused it is
checked against the truth the run recorded outside the captures (iptables counters, server
logs, the client's exit code), from the pod and the node together and from the pod alone.
Healthy lab scenarios get no cause at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captures.analysis import CaptureFile, analyze_files
from captures.lab import faults, scenarios
from tests.lab.conftest import requires_lab

pytestmark = requires_lab


def analyse(out_dir: Path, name: str, pod_only: bool) -> dict:
    files = [out_dir / f"{name}-pod.pcapng"] + ([] if pod_only else
                                                 [out_dir / f"{name}-node.pcapng"])
    inventory = json.loads((out_dir / "inventory.json").read_text())
    return analyze_files([CaptureFile.from_path(f) for f in files],
                         inventory=inventory).to_dict()


class Recorded:
    def __init__(self, out_dir: Path, name: str):
        self.truth = json.loads((out_dir / "truth.json").read_text())
        self.both = analyse(out_dir, name, pod_only=False)
        self.pod = analyse(out_dir, name, pod_only=True)


def causes(doc: dict, kind: str | None = None) -> list[dict]:
    return [a for a in doc["annotations"] if a.get("severity")
            and (kind is None or a["kind"] == kind)]


def kinds(doc: dict) -> set[str]:
    return {a["kind"] for a in doc["annotations"]}


@pytest.fixture(scope="module")
def recorded(lab, tmp_path_factory):
    done: dict[str, Recorded] = {}

    class Runs:
        def __getitem__(self, name: str) -> Recorded:
            if name not in done:
                out_dir = tmp_path_factory.mktemp(name)
                faults.run(lab, name, out_dir)
                done[name] = Recorded(out_dir, name)
            return done[name]

    return Runs()


def endpoint(ip: str, port: int) -> str:
    return f"{ip}:{port}"


def the_one(doc: dict, kind: str) -> dict:
    found = causes(doc, kind)
    assert len(found) == 1, [c["text"] for c in causes(doc)]
    return found[0]


def test_a_syn_dropped_after_the_dnat_is_lost_on_the_node_after_it(recorded):
    run = recorded["fault-drop-after-dnat"]
    truth = run.truth
    backend, node = truth["backend"], truth["lab"]["node"]
    lost = the_one(run.both, "lost")
    assert lost["severity"] == "error" and lost["after_nat"] is True
    assert lost["last_seen"]["vantage"] == f"node/{node}"
    assert backend["name"] in lost["next_expected"]["description"]
    assert f"after the DNAT to {backend['name']}" in lost["text"]
    assert f"node {node}" in lost["text"] and "NetworkPolicies" in lost["check"]
    dropped = truth["drop_rule"]["packets_after"] - truth["drop_rule"]["packets_before"]
    assert lost["attempts"] == dropped == len(lost["evidence"])
    conn = run.both["connections"][lost["connection"]]
    assert conn["outcome"] == "unanswered"
    assert conn["server"] == endpoint(truth["service"]["vip"], truth["service"]["port"])
    assert "kept_open" not in kinds(run.both)  # it never opened
    # From the pod alone the place cannot be seen, and kviz says so instead of guessing.
    alone = the_one(run.pod, "lost")
    assert alone["after_nat"] is False and "cannot be seen" in alone["text"]
    assert alone["attempts"] == dropped


def test_a_service_without_endpoints_is_named_as_such(recorded):
    run = recorded["fault-no-endpoints"]
    service = run.truth["service"]
    assert service["endpoints"] == [] and run.truth["reject_rule"]["packets_after"] >= 1
    for doc in (run.both, run.pod):
        found = the_one(doc, "no_endpoints")
        assert found["name"] == service["name"]
        assert found["service"] == endpoint(service["vip"], service["port"])
        assert found["rejected_by"] != service["vip"]  # the node answered, not a pod
        assert doc["connections"][found["connection"]]["outcome"] == "rejected"
        assert "kept_open" not in kinds(doc) and not causes(doc, "lost")


def test_a_closed_backend_port_is_refused_by_the_pod_not_the_vip(recorded):
    run = recorded["fault-closed-port"]
    truth = run.truth
    backend, service = truth["backend"], truth["service"]
    assert backend["listening"] is False
    refused = the_one(run.both, "refused")
    assert refused["by"] == endpoint(backend["ip"], backend["port"])
    assert refused["by_name"] == backend["name"]
    assert refused["via"] == endpoint(service["vip"], service["port"])
    # The pod alone sees the VIP answer, and says a backend or kube-proxy may have.
    alone = the_one(run.pod, "refused")
    assert alone["by"] == endpoint(service["vip"], service["port"])
    assert "cannot be told" in alone["text"]
    assert not causes(run.pod, "no_endpoints")


def test_a_walk_down_the_search_list_is_called_one_with_its_cost(recorded):
    run = recorded["fault-search-expansion"]
    truth = run.truth
    expanded = [q for q in truth["dns_queries"] if q["name"] != truth["name"]]
    assert expanded and all(q["reply"] == "NXDOMAIN" for q in expanded)
    for doc in (run.both, run.pod):
        found = the_one(doc, "dns_search_expansion")
        assert found["name"] == truth["name"]
        assert found["search"] == truth["search"]
        assert found["extra_queries"] == found["nxdomain"] == len(expanded)
        assert found["extra_ms"] > 0 and "ndots" in found["text"]


def test_a_lost_dns_query_is_a_retry_after_the_resolver_timeout(recorded):
    run = recorded["fault-dns-lost"]
    truth = run.truth
    assert truth["drop_rule"]["packets_after"] - truth["drop_rule"]["packets_before"] == 1
    retry = the_one(run.both, "dns_retry")
    assert retry["resolver_timeout"] is True and retry["waited_ms"] >= 4500
    assert retry["attempts"] == 2
    lost = retry["lost"]
    assert lost["last_seen"]["vantage"] == f"node/{truth['lab']['node']}"
    assert lost["after_nat"] is True
    assert truth["dns_pod"]["name"] in lost["next_expected"]["description"]
    alone = the_one(run.pod, "dns_retry")
    assert alone["lost"] is None and alone["resolver_timeout"] is True


def test_plaintext_to_a_mutual_tls_port_is_a_protocol_mismatch(recorded):
    run = recorded["fault-plaintext-to-mtls"]
    server = run.truth["server"]
    assert server["requires_client_cert"] and run.truth["client"]["exit_code"] != 0
    for doc in (run.both, run.pod):
        found = the_one(doc, "protocol_mismatch")
        assert found["server"] == endpoint(server["ip"], server["port"])
        assert "mutual TLS" in found["expected"] and found["seen"] == "plaintext HTTP"
        assert "mtls" not in kinds(doc)


def test_tls_without_a_client_certificate_is_refused_never_mutual_tls(recorded):
    run = recorded["fault-tls-no-client-cert"]
    versions = {a["version"]: a for a in run.truth["attempts"]}
    assert set(versions) == {"TLSv1.2", "TLSv1.3"}
    for doc in (run.both, run.pod):
        found = {c["inferred"]: c for c in causes(doc, "tls_rejected")}
        assert set(found) == {False, True}
        assert "client certificate and none was sent" in found[False]["reason"]
        assert "inference" in found[True]["text"]
        for cause in found.values():
            conn = doc["connections"][cause["connection"]]
            assert conn["tls"]["version"] in ("TLS 1.2", "TLS 1.3")
        assert "mtls" not in kinds(doc)  # a refused handshake is no mutual TLS


def test_an_mtu_black_hole_names_the_sizes(recorded):
    run = recorded["fault-mtu-blackhole"]
    truth = run.truth
    limit = truth["limit_bytes"]
    found = the_one(run.both, "mtu_blackhole")
    assert found["direction"] == "server-to-client"
    assert found["lost_size"] + 40 > limit >= found["largest_delivered"] + 40
    assert found["icmp_seen"] is truth["icmp_frag_needed_sent"] is False
    assert found["retransmissions"] >= 2
    # The pod alone sees nothing of the big segments: no black hole is claimed from there.
    assert not causes(run.pod, "mtu_blackhole")


@pytest.mark.parametrize("scenario", ["pod", "node", "mesh"])
def test_healthy_scenarios_have_no_cause(lab, tmp_path, scenario):
    paths = scenarios.run(lab, scenario, tmp_path)
    captures = [p for p in paths if p.suffix == ".pcapng"]
    inventory = json.loads((tmp_path / "inventory.json").read_text())
    doc = analyze_files([CaptureFile.from_path(p) for p in captures],
                        inventory=inventory).to_dict()
    assert [c for c in causes(doc) if c["severity"] != "note"] == []
    assert all(c["outcome"] == "answered" for c in doc["connections"])
    if scenario == "mesh":
        assert "mtls" in kinds(doc)  # real mutual TLS is still called so
