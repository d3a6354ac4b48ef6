"""The lab's faults, run for real: what truth.json says is checked against evidence outside the
captures (iptables counters, pod TCP counters, server logs, client exit codes), and the
captures are checked with tshark for the packets each fault must leave behind.

One bridge-mode lab serves the module; each fault runs once, on first use, into its own
directory. The last test checks the host's own namespace is as it was and the lab is whole.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from captures.lab import faults, netns
from captures.lab.plan import INBOUND_PORT
from tests.lab.conftest import requires_lab
from tests.support import tshark

pytestmark = requires_lab

PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


def host_state() -> dict:
    """The host's own network namespace, as far as a lab could have changed it."""
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout

    saved = [line for line in out("iptables-save").splitlines() if not line.startswith("#")]
    return {
        "iptables": saved,
        "links": sorted((link["ifname"], link.get("address")) for link in
                        json.loads(out("ip", "-j", "link", "show"))),
        "addresses": out("ip", "-br", "addr"),
        "routes": out("ip", "route", "show", "table", "all"),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
        "resolv_conf": hashlib.sha256(Path("/etc/resolv.conf").read_bytes()).hexdigest(),
    }


def node_rules(lab, table: str) -> list[str]:
    saved = netns.ns_run(lab.plan.node_ns, ["iptables-save", "-t", table]).stdout
    return [line for line in saved.splitlines() if not line.startswith("#")]


class FaultRun:
    def __init__(self, lab, name: str, out_dir: Path):
        self.name, self.out_dir = name, out_dir
        self.paths = faults.run(lab, name, out_dir)
        self.truth = json.loads((out_dir / "truth.json").read_text())
        self.inventory = json.loads((out_dir / "inventory.json").read_text())
        self.pod = out_dir / f"{name}-pod.pcapng"
        self.node = out_dir / f"{name}-node.pcapng"

    def frames(self, vantage: str, display_filter: str, *names: str, options=()) -> list:
        path = self.pod if vantage == "pod" else self.node
        return tshark.fields(path, display_filter, *(names or ("frame.number",)),
                             options=options)


@pytest.fixture(scope="module")
def baseline(lab):
    """The host and the lab's node rules before any fault ran."""
    return {"host": host_state(), "nat": node_rules(lab, "nat"),
            "filter": node_rules(lab, "filter")}


@pytest.fixture(scope="module")
def runs(lab, baseline, tmp_path_factory):
    """runs[name]: that fault, run once on first use."""
    done: dict[str, FaultRun] = {}

    class Runs:
        def __getitem__(self, name: str) -> FaultRun:
            if name not in done:
                done[name] = FaultRun(lab, name, tmp_path_factory.mktemp(name))
            return done[name]

    return Runs()


# -- every fault: two readable captures, an inventory, the truth -------------------------------


@pytest.mark.parametrize("name", list(faults.FAULTS))
def test_it_writes_both_captures_the_inventory_and_the_truth(lab, runs, name):
    run = runs[name]
    assert [p.name for p in run.paths] == [
        f"{name}-pod.pcapng", f"{name}-pod.pcapng.meta.json", f"{name}-node.pcapng",
        f"{name}-node.pcapng.meta.json", "inventory.json", "truth.json"]
    for path in (run.pod, run.node):
        assert path.read_bytes()[:4] == PCAPNG_MAGIC
        assert len(tshark.fields(path, None, "frame.number")) > 0
    truth = run.truth
    assert truth["schema"] == "kviz.lab-fault-truth/1"
    assert truth["fault"] == name and truth["removed"] is True
    assert truth["captures"] == {"pod": run.pod.name, "node": run.node.name}
    assert truth["lab"] == {"prefix": lab.prefix, "mode": lab.status()["mode"],
                            "node": lab.plan.node_name}
    assert truth["client_pod"]["ip"] == lab.plan.client.ip
    assert isinstance(truth["client"]["exit_code"], int)
    assert run.inventory["schema"] == "kviz.inventory/1"
    services = {s["name"] for s in run.inventory["services"]}
    assert {s.name for s in faults.FAULTS[name].services} <= services


# -- one fault each ------------------------------------------------------------------------------


def test_it_drops_the_syn_after_the_dnat_chose_the_backend(lab, runs):
    run = runs["fault-drop-after-dnat"]
    truth = run.truth
    backend = lab.plan.pod(truth["backend"]["name"])
    vip = lab.plan.service("nginx").cluster_ip
    assert truth["client"]["exit_code"] == 28 and "timed out" in truth["client"]["stderr"]
    dropped = truth["drop_rule"]["packets_after"] - truth["drop_rule"]["packets_before"]
    assert dropped >= 2  # the SYN and its retransmissions
    # The SYN was never confirmed in conntrack, so every retransmission went through the DNAT
    # again: the pin made each one pick the same backend.
    assert truth["dnat"]["pinned"] and truth["dnat"]["dnat_packets"] == dropped
    assert truth["dnat"]["to"] == f"{backend.ip}:80"
    assert truth["backend_tcp"]["PassiveOpens"] == 0
    assert truth["served"] == {"nginx-a": [], "nginx-b": []}

    syns = run.frames("pod", f"ip.dst == {vip} && tcp.dstport == 80 && tcp.flags.syn == 1",
                      "tcp.srcport", "tcp.analysis.retransmission")
    assert len(syns) == dropped
    assert len({port for port, _ in syns}) == 1
    assert [flag for _, flag in syns[1:]] == ["1"] * (dropped - 1)
    assert not run.frames("pod", f"ip.src == {vip} && tcp.flags.syn == 1 && tcp.flags.ack == 1")
    assert not run.frames("node", f"ip.src == {backend.ip} && tcp.srcport == 80")


def test_it_rejects_a_service_without_endpoints_with_port_unreachable(lab, runs):
    run = runs["fault-no-endpoints"]
    truth = run.truth
    vip = truth["service"]["vip"]
    assert truth["service"]["endpoints"] == []
    assert truth["client"]["exit_code"] == 7
    assert truth["reject_rule"]["packets_after"] - truth["reject_rule"]["packets_before"] >= 1
    assert "-j REJECT --reject-with icmp-port-unreachable" in truth["reject_rule"]["rules"][-1]
    endpoints = {e["service"]: e["addresses"] for e in run.inventory["endpoints"]}
    assert endpoints[truth["service"]["name"]] == []

    unreachable = run.frames("pod", f"icmp.type == 3 && icmp.code == 3 && ip.dst == {vip}")
    assert len(unreachable) >= 1
    assert run.frames("pod", f"ip.dst == {vip} && tcp.flags.syn == 1")


def test_it_walks_the_search_list_before_the_name_answers(lab, runs):
    run = runs["fault-search-expansion"]
    truth = run.truth
    assert truth["ndots"] == 5
    assert truth["search"] == ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert truth["client"]["exit_code"] == 0 and truth["client"]["stdout"].startswith("200 ")
    names = list(dict.fromkeys(q["name"] for q in truth["dns_queries"]))
    assert names == truth["expected_names"]
    assert names[-1] == "api.example.org"
    assert {q["reply"] for q in truth["dns_queries"] if q["name"] != names[-1]} == {"NXDOMAIN"}
    assert [q["reply"] for q in truth["dns_queries"]
            if q["name"] == names[-1] and q["type"] == "A"] == [truth["answer"]]
    assert sum(len(lines) for lines in truth["served"].values()) == 1

    nxdomain = run.frames("pod", "dns.flags.response == 1 && dns.flags.rcode == 3",
                          "dns.qry.name")
    assert {row[0] for row in nxdomain} == set(truth["expected_names"][:-1])
    assert len(nxdomain) == 6  # A and AAAA for each search suffix
    answers = run.frames("pod", "dns.flags.response == 1 && dns.qry.name == \"api.example.org\""
                         " && dns.a", "dns.a")
    assert [row[0] for row in answers] == [truth["answer"]]


def test_it_loses_one_dns_query_and_the_resolver_retries_after_its_timeout(lab, runs):
    run = runs["fault-dns-lost"]
    truth = run.truth
    assert truth["drop_rule"]["packets_after"] == 1
    assert truth["queries_seen_on_node"] >= 3  # the lost one, its retry, and the AAAA
    client = truth["client"]
    assert client["exit_code"] == 0 and client["stdout"].startswith("200 ")
    namelookup = float(client["stdout"].split()[2])
    assert truth["resolver_timeout_s"] - 0.5 <= namelookup <= client["elapsed_s"]
    # The DNS pod never saw the lost query: it logged fewer queries than the node counted.
    assert len(truth["dns_queries"]) == truth["queries_seen_on_node"] - 1

    name = "nginx.default.svc.cluster.local"
    queries = run.frames("pod", f"dns.flags.response == 0 && dns.qry.name == \"{name}\" && "
                         "dns.qry.type == 1", "frame.time_relative", "dns.id")
    assert len(queries) == 2 and queries[0][1] == queries[1][1]
    assert float(queries[1][0]) - float(queries[0][0]) >= truth["resolver_timeout_s"] - 0.5
    # On the node, the query reaches the DNS pod's veth only after the timeout. (The
    # lost one may show once on cbr0 with the pod IP: DNATed, it waited there for ARP before
    # the FORWARD chain dropped it.)
    meta = json.loads(run.node.with_name(run.node.name + ".meta.json").read_text())
    dns_veth = lab.plan.pod(truth["dns_pod"]["name"]).veth
    index = next(i for i, name in meta["interfaces"].items() if name == dns_veth)
    delivered = run.frames("node", f"sll.ifindex == {index} && dns.id == {queries[0][1]} && "
                           "dns.qry.type == 1", "frame.time_relative")
    first_sent = float(run.frames("node", f"dns.id == {queries[0][1]} && dns.qry.type == 1",
                                  "frame.time_relative")[0][0])
    assert delivered
    assert all(float(t) - first_sent >= truth["resolver_timeout_s"] - 0.5 for (t,) in delivered)


def test_it_resets_a_connection_to_a_port_nobody_listens_on(lab, runs):
    run = runs["fault-closed-port"]
    truth = run.truth
    backend, vip = truth["backend"], truth["service"]["vip"]
    assert truth["client"]["exit_code"] == 7
    assert backend["listening"] is False
    assert truth["backend_tcp"]["OutRsts"] >= 1 and truth["backend_tcp"]["PassiveOpens"] == 0
    assert truth["dnat"]["dnat_packets"] == 1

    assert run.frames("pod", f"ip.src == {vip} && tcp.srcport == 8080 && tcp.flags.reset == 1")
    assert run.frames("node", f"ip.src == {backend['ip']} && tcp.srcport == 8080 && "
                      "tcp.flags.reset == 1")


def test_it_shows_plain_http_refused_by_the_mtls_port(lab, runs):
    run = runs["fault-plaintext-to-mtls"]
    truth = run.truth
    server = truth["server"]
    assert truth["client"]["exit_code"] in (52, 56), truth["client"]
    assert server["listening"] and server["port"] == INBOUND_PORT
    assert truth["backend_tcp"]["PassiveOpens"] >= 1  # the sidecar accepted, then gave up
    assert truth["served"] == {"nginx-a": [], "nginx-b": []}

    to_server = f"ip.dst == {server['ip']} && tcp.dstport == {INBOUND_PORT}"
    assert run.frames("pod", f'{to_server} && tcp.payload contains "GET / HTTP/1.1"')
    from_server = f"ip.src == {server['ip']} && tcp.srcport == {INBOUND_PORT}"
    assert not run.frames("pod", f"{from_server} && tcp.len > 0")
    assert run.frames("pod", f"{from_server} && (tcp.flags.fin == 1 || tcp.flags.reset == 1)")


def test_it_rejects_tls_without_a_client_certificate_in_both_versions(lab, runs):
    run = runs["fault-tls-no-client-cert"]
    truth = run.truth
    attempts = {a["version"]: a for a in truth["attempts"]}
    assert set(attempts) == {"TLSv1.2", "TLSv1.3"}
    assert attempts["TLSv1.2"]["alert"] == {"description": "handshake failure", "number": 40}
    assert attempts["TLSv1.3"]["alert"] == {"description": "certificate required", "number": 116}
    for attempt in attempts.values():
        assert attempt["exit_code"] != 0
        assert any("peer did not return a certificate" in line
                   for line in attempt["server_errors"])
    assert len(truth["server"]["errors"]) == 2
    restored = truth["server"]["restored"]
    assert lab.read_state()["processes"][restored["process"]] == restored["pid"]
    assert netns.listening(restored["pid"], INBOUND_PORT)

    server_ip = truth["server"]["ip"]
    decode = ("-d", f"tcp.port=={INBOUND_PORT},tls")
    hellos = run.frames("pod", f"ip.src == {server_ip} && tls.handshake.type == 2",
                        "tls.handshake.extensions.supported_version", options=decode)
    assert sorted(row[0] for row in hellos) == ["", "0x0304"]  # 1.2 has no such extension
    empty = run.frames("pod", f"ip.src == {lab.plan.client.ip} && tls.handshake.type == 11",
                       "tls.handshake.certificates_length", options=decode)
    assert [row[0] for row in empty] == ["0"]  # TLS 1.2: in clear; TLS 1.3's is encrypted
    alerts = run.frames("pod", f"ip.src == {server_ip} && tls.alert_message.desc",
                        "tls.alert_message.desc", options=decode)
    assert [row[0] for row in alerts] == ["40"]  # TLS 1.3's alert is encrypted


def test_it_black_holes_full_size_segments_while_small_responses_pass(lab, runs):
    run = runs["fault-mtu-blackhole"]
    truth = run.truth
    assert truth["small"]["exit_code"] == 0 and truth["small"]["stdout"].startswith("200 26 ")
    assert truth["big"]["exit_code"] == 28
    assert truth["drop_rule"]["packets_after"] >= 2
    assert any("GET /big.bin" in line for line in truth["server"]["log"])
    server = truth["server"]
    link = json.loads(netns.ip(server["netns"], "-d", "-j", "link", "show", "eth0").stdout)[0]
    assert str(link["gso_max_segs"]) == server["gso_restored"]["gso_max_segs"]

    large = f"ip.src == {server['ip']} && tcp.srcport == {server['port']} && ip.len > " \
            f"{truth['limit_bytes']}"
    assert not run.frames("pod", large)
    at_node = run.frames("node", large, "ip.len", "tcp.analysis.retransmission")
    assert at_node and max(int(length) for length, _ in at_node) == 1500
    assert any(flag == "1" for _, flag in at_node)
    assert not run.frames("pod", "icmp.type == 3 && icmp.code == 4")
    assert run.frames("pod", f"ip.src == {server['ip']} && http.response.code == 200")


def interface_index(run, vantage: str, name: str) -> str:
    """The `sll.ifindex` of interface `name` in a `-i any` capture (its meta file)."""
    path = run.pod if vantage == "pod" else run.node
    meta = json.loads(path.with_name(path.name + ".meta.json").read_text())
    return next(index for index, interface in meta["interfaces"].items() if interface == name)


def test_it_overflows_the_accept_queue_and_resends_syn_acks(lab, runs):
    run = runs["fault-listen-overflow"]
    truth = run.truth
    server = truth["server"]
    counters = truth["server_tcp_ext"]
    assert counters["ListenOverflows"] >= 1 and counters["ListenDrops"] >= 1
    queue = truth["listen_queue_after"]
    assert queue["send_q"] == server["backlog"] and queue["recv_q"] > queue["send_q"]  # full
    assert len(server["accepted"]) == 1
    outcomes = truth["connections"]
    assert len(outcomes) == faults.OVERFLOW_CONNECTIONS
    assert [port for port, outcome in outcomes.items() if outcome.startswith("answered")] == [
        server["accepted"][0].rpartition(":")[2]]

    # The server's kernel re-sent SYN-ACKs the client had acknowledged (tshark: a
    # retransmission, answered by a duplicate ACK), to clients that never got an answer.
    to_server = f"ip.dst == {server['ip']} && tcp.dstport == {server['port']}"
    resent = run.frames("pod", f"ip.src == {server['ip']} && tcp.flags.syn == 1 && "
                        "tcp.flags.ack == 1 && tcp.analysis.retransmission", "tcp.dstport")
    assert resent
    assert {outcomes[port] for (port,) in resent} == {"no answer"}
    duplicates = run.frames("pod", f"{to_server} && tcp.analysis.duplicate_ack", "tcp.srcport")
    assert {port for (port,) in resent} <= {port for (port,) in duplicates}
    # Their data reached the server pod's veth on the node, and was never acknowledged there.
    veth = interface_index(run, "node", lab.plan.pod(server["name"]).veth)
    for port in {port for (port,) in resent}:
        assert run.frames("node", f"{to_server} && tcp.srcport == {port} && tcp.len > 0 && "
                          f"sll.ifindex == {veth}")


def test_it_forges_a_reset_on_the_node_in_the_servers_name(lab, runs):
    run = runs["fault-injected-reset"]
    truth = run.truth
    server = truth["server"]
    assert truth["client"]["exit_code"] == 56 and "reset" in truth["client"]["stderr"]
    assert truth["reject_rule"]["packets_after"] - truth["reject_rule"]["packets_before"] == 1
    assert truth["backend_tcp"]["OutRsts"] == 0  # nginx-a itself sent no reset
    assert truth["served"] == {"nginx-a": [], "nginx-b": []}

    reset = f"ip.src == {server['ip']} && tcp.srcport == 80 && tcp.flags.reset == 1"
    assert len(run.frames("pod", reset)) == 1
    server_veth = interface_index(run, "node", lab.plan.pod(server["name"]).veth)
    client_veth = interface_index(run, "node", lab.plan.client.veth)
    assert run.frames("node", f"{reset} && sll.ifindex == {client_veth}")
    assert not run.frames("node", f"{reset} && sll.ifindex == {server_veth}")
    # nginx-a's own packets of the connection do come from its veth.
    assert run.frames("node", f"ip.src == {server['ip']} && tcp.flags.syn == 1 && "
                      f"sll.ifindex == {server_veth}")


def test_it_sends_a_pod_back_to_itself_through_its_own_service(lab, runs):
    run = runs["fault-hairpin"]
    truth = run.truth
    client = lab.plan.client
    attempts = truth["attempts"]
    assert [(a["hairpin_mode"], a["masquerade_rule"]) for a in attempts] == [
        (0, True), (1, False), (1, True)]
    assert [a["exit_code"] for a in attempts] == [28, 28, 0]
    assert [a["client_tcp"]["PassiveOpens"] for a in attempts] == [0, 0, 1]
    assert [len(a["server_log"]) for a in attempts] == [0, 0, 1]
    assert all(a["dnat_packets"] >= 1 for a in attempts)
    assert truth["dnat"]["to"] == f"{client.ip}:8080"
    hairpin_path = f"/sys/class/net/cbr0/brif/{client.veth}/hairpin_mode"
    now = netns.ns_run(lab.plan.node_ns, ["cat", hairpin_path]).stdout.strip()
    assert int(now) == truth["bridge"]["hairpin_mode_before"]

    veth = interface_index(run, "node", client.veth)
    dnated = f"ip.dst == {client.ip} && tcp.dstport == 8080 && tcp.flags.syn == 1 && " \
             "tcp.flags.ack == 0"
    first, second = (a["local_port"] for a in attempts[:2])
    # Without hairpin mode the DNATed SYN never goes back out of the port it came in on.
    assert run.frames("node", f"{dnated} && tcp.srcport == {first}")
    assert not run.frames("node", f"{dnated} && tcp.srcport == {first} && sll.ifindex == {veth}")
    # With it but without masquerade it does, from the pod's own address.
    assert run.frames("node", f"{dnated} && tcp.srcport == {second} && sll.ifindex == {veth}"
                      f" && ip.src == {client.ip}")
    assert run.frames("pod", f"{dnated} && tcp.srcport == {second} && ip.src == {client.ip}")


def test_it_forgets_an_idle_connection_on_the_node(lab, runs):
    run = runs["fault-idle-reset"]
    truth = run.truth
    connection = truth["connection"]
    first, second = connection["requests"]
    assert first["answer"].startswith("HTTP/1.1 200") and second["answer"] == "no answer"
    assert truth["idle_s"] > truth["conntrack"]["established_timeout_s"]
    assert truth["invalid_rule"]["dropped"] >= 2  # the request and its retransmissions
    assert sum(len(lines) for lines in truth["served"].values()) == 1
    for key, value in truth["conntrack"]["restored"].items():
        assert netns.ns_run(lab.plan.node_ns, ["sysctl", "-n", key]).stdout.strip() == value

    port, vip = connection["local_port"], truth["service"]["vip"]
    requests = run.frames("pod", f"tcp.srcport == {port} && http.request", "frame.time_relative")
    assert len(requests) == 2
    assert float(requests[1][0]) - float(requests[0][0]) >= truth["idle_s"] - 0.5
    assert run.frames("pod", f"tcp.srcport == {port} && tcp.analysis.retransmission")
    # On the node only the first request was DNATed to a backend; the second never was.
    dnated = run.frames("node", f"tcp.srcport == {port} && tcp.len > 0 && ip.dst != {vip}")
    assert len(dnated) == 1


def test_it_leaves_a_server_first_protocol_waiting_behind_a_sniffing_proxy(lab, runs):
    run = runs["fault-server-first-stall"]
    truth = run.truth
    connection = truth["connection"]
    assert connection["greeting"] is None
    assert connection["waited_s"] >= faults.GREETING_WAIT - 0.5
    events = {entry.get("event"): entry for entry in truth["proxy"]["log"]}
    gave_up = events["client closed before speaking"]
    assert gave_up["upstream_connected"] is False
    assert gave_up["peer"].endswith(f":{connection['local_port']}")
    assert not [e for e in truth["banner_server"]["log"] if e.get("event") == "greeted"]

    port = connection["local_port"]
    assert run.frames("pod", f"tcp.srcport == {port} && tcp.flags.syn == 1")
    assert not run.frames("pod", f"tcp.port == {port} && tcp.len > 0")
    assert run.frames("pod", f"tcp.srcport == {port} && tcp.flags.fin == 1")


# -- afterwards (runs last) ----------------------------------------------------------------------


def test_it_leaves_the_host_and_the_lab_as_they_were(lab, runs, baseline):
    for name in faults.FAULTS:
        runs[name]  # every fault has run by now
    assert host_state() == baseline["host"]
    assert node_rules(lab, "nat") == baseline["nat"]
    assert node_rules(lab, "filter") == baseline["filter"]
    assert lab.status()["status"] == "up"
    assert all(p["alive"] for p in lab.status()["processes"].values())
