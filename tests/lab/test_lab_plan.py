"""What the lab would build, checked without root: names, rules, inventory, dumpcap flags."""

from __future__ import annotations

import pytest

from captures.lab import InvalidPrefix, LabPlan, inventory, kubeproxy, sidecar
from captures.lab.capture import dumpcap_argv


def test_it_names_every_namespace_after_the_prefix():
    plan = LabPlan("kvz")
    assert plan.node_ns == "kvz-node"
    assert all(ns.startswith("kvz-") for ns in plan.namespaces)
    assert len(set(plan.namespaces)) == len(plan.namespaces)


@pytest.mark.parametrize("prefix", ["", "Kviz", "kviz-lab", "k" * 11, "1abc", "a b"])
def test_it_rejects_prefixes_that_could_collide_or_break_names(prefix):
    with pytest.raises(InvalidPrefix):
        LabPlan(prefix)


def test_it_gives_each_pod_a_short_unique_veth():
    plan = LabPlan("kviz")
    veths = [pod.veth for pod in plan.pods]
    assert len(set(veths)) == len(veths)
    assert all(v.startswith("veth") and len(v) == 8 for v in veths)


def test_it_writes_kube_proxy_rules_in_iptables_mode_shape():
    plan = LabPlan("kviz")
    rules = kubeproxy.nat_rules(plan)
    nginx = plan.service("nginx")
    port = nginx.ports[0]
    svc = kubeproxy.svc_chain(nginx, port)
    assert "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES" \
        in rules
    assert "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES" \
        in rules
    assert f"-d {nginx.cluster_ip}/32 -p tcp" in rules and f"-j {svc}" in rules
    assert "-m statistic --mode random --probability 0.50000000000" in rules
    for name in nginx.backends:
        ip = plan.pod(name).ip
        sep = kubeproxy.sep_chain(nginx, port, f"{ip}:80")
        assert f"-A {sep} -s {ip}/32" in rules and "-j KUBE-MARK-MASQ" in rules
        assert f"-A {sep} -p tcp" in rules and f"--to-destination {ip}:80" in rules
    dns = plan.service("kube-dns")
    assert f"-d {dns.cluster_ip}/32 -p udp" in rules and f"-d {dns.cluster_ip}/32 -p tcp" in rules
    assert rules.startswith("*nat\n") and rules.rstrip().endswith("COMMIT")


def test_it_redirects_outbound_tcp_except_the_proxy_uid_and_loopback():
    rules = sidecar.redirect_rules()
    assert "-m owner ! --uid-owner 1337" in rules
    assert "-d 127.0.0.0/8 -j RETURN" in rules
    assert "REDIRECT --to-ports 15001" in rules


def test_it_describes_the_lab_as_an_inventory():
    plan = LabPlan("kviz")
    document = inventory.build(plan, {1: "lo", 3: "cbr0"}, sidecar=True)
    assert document["schema"] == "kviz.inventory/1"
    assert document["nodes"][0]["interfaces"] == {"1": "lo", "3": "cbr0"}
    ubuntu = next(p for p in document["pods"] if p["name"] == "ubuntu")
    assert "istio-proxy" in ubuntu["containers"]
    endpoints = {e["service"]: e["addresses"] for e in document["endpoints"]}
    assert endpoints["nginx"] == ["10.244.10.90", "10.244.10.91"]


def test_it_captures_without_promiscuous_mode_and_keeps_interface_indexes_on_any():
    assert dumpcap_argv("eth0", "x.pcapng")[:2] == ["dumpcap", "-p"]
    argv = dumpcap_argv("any", "-")
    assert argv[argv.index("-y") + 1] == "LINUX_SLL2"
    assert argv[-2:] == ["-w", "-"]


def test_it_passes_a_capture_filter_as_one_argument():
    argv = dumpcap_argv("eth0", "-", "tcp port 80 or udp port 53")
    assert argv[argv.index("-f") + 1] == "tcp port 80 or udp port 53"
    assert "-f" not in dumpcap_argv("eth0", "-")
