"""The diagnosis on real failures: each lab fault is run once, and what kviz says caused it is
checked against the truth the run recorded outside the captures (iptables counters, server
logs, the client's exit code), from the pod and the node together and from the pod alone.
Healthy lab scenarios get no cause at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captures.analysis import CaptureFile, analyze_files, happened, narrative
from captures.lab import faults, scenarios
from captures.render.export import render
from tests.lab.conftest import requires_lab

pytestmark = requires_lab


def model_of(out_dir: Path, name: str, pod_only: bool):
    files = [out_dir / f"{name}-pod.pcapng"] + ([] if pod_only else
                                                 [out_dir / f"{name}-node.pcapng"])
    inventory = json.loads((out_dir / "inventory.json").read_text())
    return analyze_files([CaptureFile.from_path(f) for f in files], inventory=inventory)


def analyse(out_dir: Path, name: str, pod_only: bool) -> dict:
    return model_of(out_dir, name, pod_only).to_dict()


class Recorded:
    def __init__(self, out_dir: Path, name: str):
        self.truth = json.loads((out_dir / "truth.json").read_text())
        self.both = analyse(out_dir, name, pod_only=False)
        self.pod = analyse(out_dir, name, pod_only=True)


def causes(doc: dict, kind: str | None = None) -> list[dict]:
    return [a for a in doc["annotations"] if a.get("severity")
            and (kind is None or a["kind"] == kind)]


def failures(doc: dict) -> set[str]:
    """The kinds of the causes that are failures (notes about the capture left out)."""
    return {a["kind"] for a in causes(doc) if a["severity"] != "note"}


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
    assert [c for c in doc["connections"] if c["outcome"] != "answered"] == []
    if scenario == "mesh":
        assert "mtls" in kinds(doc)  # real mutual TLS is still called so


# -- the faults added with issue 10 ---------------------------------------------------------------


def client_port(doc: dict, cause: dict) -> str:
    return doc["connections"][cause["connection"]]["client"].rpartition(":")[2]


def test_a_full_accept_queue_is_a_listen_overflow(recorded, lab):
    run = recorded["fault-listen-overflow"]
    truth = run.truth
    server = truth["server"]
    assert truth["server_tcp_ext"]["ListenOverflows"] >= 1
    for doc in (run.both, run.pod):
        found = causes(doc, "listen_overflow")
        assert found and failures(doc) == {"listen_overflow"}
        for cause in found:
            # Only connections the client never got an answer on, to the stand-in server.
            assert truth["connections"][client_port(doc, cause)] == "no answer"
            assert cause["server"] == endpoint(server["ip"], server["port"])
            assert cause["synack_resent"] >= 1 and cause["served"] is False
            assert cause["severity"] == "error" and len(cause["evidence"]) >= 3
    # With the node: the client's data reached the server's own veth, so its kernel dropped it.
    for cause in causes(run.both, "listen_overflow"):
        assert cause["delivered"] is True
        assert f"reached {server['name']}'s own interface" in cause["text"]
    # From the client's pod alone, lost packets would look the same, and it says so.
    for cause in causes(run.pod, "listen_overflow"):
        assert cause["delivered"] is None and "cannot be ruled out" in cause["text"]


def test_a_reset_forged_on_the_node_names_the_node_not_the_server(recorded, lab):
    run = recorded["fault-injected-reset"]
    truth = run.truth
    server, node = truth["server"], truth["forged_by"]["node"]
    assert truth["backend_tcp"]["OutRsts"] == 0
    assert truth["reject_rule"]["packets_after"] - truth["reject_rule"]["packets_before"] == 1
    forged = the_one(run.both, "injected_reset")
    assert forged["claimed"] == endpoint(server["ip"], 80)
    assert forged["sent_by_node"] == node and f"node {node}'s own network stack" in forged["text"]
    assert forged["origin"]["interface"] == lab.plan.pod(server["name"]).veth
    assert forged["origin"]["direction"] == "in"
    assert forged["first_seen"]["interface"] == lab.plan.client.veth
    assert forged["request_delivered"] is False and "never saw it" in forged["text"]
    assert f"did not come from {server['name']}" in forged["text"]
    assert run.both["messages"][forged["reset"]]["flags"] == "R"
    assert failures(run.both) == {"injected_reset"}
    # From the client's eth0 a forged reset looks like a real one: nothing is claimed.
    assert causes(run.pod) == []


def test_a_pod_sent_back_to_itself_is_a_hairpin_and_not_a_lost_syn(recorded, lab):
    run = recorded["fault-hairpin"]
    truth = run.truth
    attempts = {str(a["local_port"]): a for a in truth["attempts"]}
    found = {client_port(run.both, c): c for c in causes(run.both, "hairpin")}
    failed = {port for port, a in attempts.items() if a["exit_code"] != 0}
    assert set(found) == failed and len(failed) == 2
    assert not causes(run.both, "lost")  # the hairpin explains them
    for port, cause in found.items():
        assert cause["dnat_to"] == truth["dnat"]["to"]
        assert cause["service"] == endpoint(truth["service"]["vip"], truth["service"]["port"])
        assert "picked the calling pod" in cause["text"]
        if attempts[port]["hairpin_mode"] == 0:
            assert cause["returned"] is False and "hairpin mode" in cause["text"]
        else:
            assert cause["returned"] is True and cause["masqueraded"] is False
            assert "not masqueraded" in cause["text"]
    working = next(port for port, a in attempts.items() if a["exit_code"] == 0)
    conn = next(c for c in run.both["connections"]
                if c["client"].endswith(f":{working}"))
    assert conn["outcome"] == "answered"
    # The pod's own capture shows the DNAT only when the packet came back to it (hairpin
    # mode on): the same packet out to the VIP and in again to itself. Never otherwise.
    from_pod = {client_port(run.pod, c): c for c in causes(run.pod, "hairpin")}
    came_back = {port for port in failed if attempts[port]["hairpin_mode"] != 0}
    assert set(from_pod) == came_back
    for cause in from_pod.values():
        assert cause["returned"] is True and cause["dnat_to"] == truth["dnat"]["to"]


def test_a_connection_forgotten_while_idle_is_an_idle_reset(recorded, lab):
    run = recorded["fault-idle-reset"]
    truth = run.truth
    connection = truth["connection"]
    for doc in (run.both, run.pod):
        idle = the_one(doc, "idle_reset")
        assert client_port(doc, idle) == str(connection["local_port"])
        assert abs(idle["idle_s"] - truth["idle_s"]) < 0.5
        assert idle["outcome"] == "unanswered" and idle["retransmissions"] >= 1
        assert idle["retransmissions"] < truth["invalid_rule"]["dropped"]
        assert idle["timeouts"] == []  # 5 s is shorter than every known one
        assert failures(doc) == {"idle_reset"}
    both = the_one(run.both, "idle_reset")
    assert both["conntrack_forgot"] is True and "conntrack had forgotten" in both["text"]
    assert both["last_seen"]["vantage"] == f"node/{truth['lab']['node']}"
    alone = the_one(run.pod, "idle_reset")
    assert alone["conntrack_forgot"] is False and alone["last_seen"] is None
    assert "Most likely" in alone["text"]


def test_a_server_first_protocol_nobody_starts_is_a_stall(recorded, lab):
    run = recorded["fault-server-first-stall"]
    truth = run.truth
    connection, service = truth["connection"], truth["service"]
    for doc in (run.both, run.pod):
        stall = the_one(doc, "server_first_stall")
        assert stall["server"] == endpoint(service["vip"], service["port"])
        assert stall["port"] == 25 and stall["protocol"] == truth["server"]["protocol"]
        assert stall["closed_by"] == "client"
        assert abs(stall["waited_s"] - connection["waited_s"]) < 0.5
        assert client_port(doc, stall) == str(connection["local_port"])
        assert failures(doc) == {"server_first_stall"}


# The causes each fault may give (besides notes about the capture): a new kind must not fire
# where its fault was not injected.
EXPECTED_KINDS = {
    "fault-drop-after-dnat": {"lost"}, "fault-no-endpoints": {"no_endpoints"},
    "fault-search-expansion": {"dns_search_expansion"}, "fault-dns-lost": {"dns_retry"},
    "fault-closed-port": {"refused"}, "fault-plaintext-to-mtls": {"protocol_mismatch"},
    "fault-tls-no-client-cert": {"tls_rejected"}, "fault-mtu-blackhole": {"mtu_blackhole"},
    "fault-listen-overflow": {"listen_overflow"}, "fault-injected-reset": {"injected_reset"},
    "fault-hairpin": {"hairpin", "lost"},  # lost: from the pod, which cannot see the DNAT
    "fault-idle-reset": {"idle_reset"}, "fault-server-first-stall": {"server_first_stall"},
}


@pytest.mark.parametrize("name", list(faults.FAULTS))
def test_each_fault_gives_only_its_own_causes(recorded, name):
    run = recorded[name]
    for doc in (run.both, run.pod):
        assert failures(doc) <= EXPECTED_KINDS[name], [c["text"] for c in causes(doc)]


# -- several connections, several faults ----------------------------------------------------------


def test_the_same_cause_on_several_connections_is_said_once_with_the_list(lab, tmp_path):
    from captures.render.describe import describe

    stem = "closed-port-x3"
    faults.run_together(lab, ["fault-closed-port"] * 3, tmp_path, stem)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert [r["client"]["exit_code"] for r in truth["runs"]] == [7, 7, 7]
    for pod_only in (False, True):
        model = model_of(tmp_path, stem, pod_only)
        doc = model.to_dict()
        refused = causes(doc, "refused")
        ids = sorted(c["connection"] for c in refused)
        assert len(set(ids)) == 3 and len({c["group"] for c in refused}) == 1
        items = [i for i in happened.causes(doc["annotations"]) if i["kind"] == "refused"]
        assert len(items) == 1
        item = items[0]
        assert item["count"] == 3 and item["connections"] == ids
        assert item["text"] == f"3 connections: {refused[0]['group']} ({happened.ranges(ids)})"
        assert {c["evidence"][0] for c in refused} <= set(item["evidence"])
        # Said once in the text, the Markdown and the page, never once per connection.
        text = "\n".join(narrative.narrate(model))
        assert text.count(item["text"]) == 1
        assert not any(c["text"] in text for c in refused)
        markdown = render("markdown", model)
        part = markdown.split("## What happened", 1)[1].split("\n## ", 1)[0]
        assert part.count("3 connections:") == 1 and part.count("**Error**") == 1
        page = describe(doc)
        assert [c["text"] for c in page["causes"]] == [item["text"]]
    both = causes(analyse(tmp_path, stem, pod_only=False), "refused")
    assert "were refused by nginx-a" in both[0]["group"]


def test_two_faults_in_one_capture_are_two_causes_each_with_its_own_evidence(lab, tmp_path):
    stem = "drop-after-dnat-and-dns-lost"
    faults.run_together(lab, ["fault-drop-after-dnat", "fault-dns-lost"], tmp_path, stem)
    truth = json.loads((tmp_path / "truth.json").read_text())
    drop, dns = truth["runs"]
    assert drop["fault"] == "fault-drop-after-dnat" and dns["fault"] == "fault-dns-lost"
    dropped = drop["drop_rule"]["packets_after"] - drop["drop_rule"]["packets_before"]
    assert dropped >= 2 and dns["drop_rule"]["packets_after"] == 1
    for pod_only in (False, True):
        doc = analyse(tmp_path, stem, pod_only)
        assert failures(doc) == {"lost", "dns_retry"}
        lost, retry = the_one(doc, "lost"), the_one(doc, "dns_retry")
        assert lost["attempts"] == dropped
        conn = doc["connections"][lost["connection"]]
        assert conn["server"] == endpoint(drop["service"]["vip"], drop["service"]["port"])
        assert retry["resolver_timeout"] is True and retry["attempts"] == 2
        # Each its own proof: the lost SYNs are its connection's, the queries are DNS.
        messages = {m["id"]: m for m in doc["messages"]}
        assert {messages[i]["connection"] for i in lost["evidence"]} == {lost["connection"]}
        assert all(messages[i]["label"].startswith("DNS") for i in retry["evidence"])
        assert not set(lost["evidence"]) & set(retry["evidence"])
        # Ranked: the connection that failed (an error) before the lookup that recovered.
        order = [c["kind"] for c in happened.causes(doc["annotations"])
                 if c["severity"] != "note"]
        assert order == ["lost", "dns_retry"]
        assert lost["severity"] == "error" and retry["severity"] == "warning"
    both = analyse(tmp_path, stem, pod_only=False)
    node = f"node/{truth['lab']['node']}"
    assert the_one(both, "lost")["after_nat"] is True
    assert the_one(both, "lost")["last_seen"]["vantage"] == node
    # The lost query: on the node, never on the DNS pod's veth. (Whether its DNATed copy shows
    # depends on ARP: the first fault's traffic warmed the cache, so it may not.)
    lost_query = the_one(both, "dns_retry")["lost"]
    assert lost_query["last_seen"]["vantage"] == node
    assert dns["dns_pod"]["name"] in lost_query["next_expected"]["description"]
