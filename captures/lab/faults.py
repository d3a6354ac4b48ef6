"""Faults: one thing broken on purpose in the lab, recorded from two vantage points, with the truth.

A fault run is a scenario (captures.lab.scenarios) whose traffic breaks something first:

1. the lab comes up if needed, neighbour caches are flushed, and two captures start: the client
   pod's eth0 and the node's `-i any` (`fault-NAME-pod.pcapng`, `fault-NAME-node.pcapng`);
2. the fault's `drive` reads its evidence (iptables rule counters, a pod's TCP counters, a
   server's log offset), injects the fault, runs the failing request from the client pod (every
   command with a timeout), reads the evidence again, and removes the fault in a `finally`, so
   even a failed run leaves the lab as it was;
3. the captures stop; the fault's `after`, if any, destroys what it left half-open (a server's
   half of a connection whose client is gone, `ss -K`), which would otherwise close itself into
   the next recording; `inventory.json` is written (with any Service the fault added) and
   `truth.json`: what really happened, read from outside the captures, for the diagnosis code to
   be judged against (schema below, in `run`).

`run_together` records several faults (or one several times) in one capture, one after another.
The newer faults' stand-in servers and clients are in deploy/lab/faultkit.py.

Faults change only the lab's namespaces: iptables rules in the node's namespace, or a server
process in a pod swapped for a stand-in and restored afterwards (its new pid goes into the lab's
state file). Every address a fault sends to is a lab pod or a lab Service VIP.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from captures.lab import kubeproxy, netns, scenarios, workloads
from captures.lab.plan import INBOUND_PORT, Service, ServicePort
from captures.lab.scenarios import Scenario, Vantage
from captures.lab.topology import Lab, LabError

TRUTH_SCHEMA = "kviz.lab-fault-truth/1"
CLIENT_GRACE = 5.0  # on top of a command's own timeout, for `ip netns exec` and exit
OUTPUT_LIMIT = 4000  # characters of a client's stdout/stderr kept in truth.json
HTTP_REQUEST = "GET / HTTP/1.1\r\nHost: nginx\r\nConnection: close\r\n\r\n"

# Services some faults add (kube-proxy rules written at injection, listed in inventory.json).
NO_ENDPOINTS_SERVICE = Service("nginx-canary", "default", "10.0.201.17",
                               (ServicePort("http", 80, 80, "TCP"),), "canary")
CLOSED_PORT_SERVICE = Service("nginx-admin", "default", "10.0.142.9",
                              (ServicePort("admin", 8080, 8080, "TCP"),), "backend",
                              backends=("nginx-a",))
EXTERNAL_NAME = "api.example.org"
MTU_LIMIT = 1200  # bytes: IP packets longer than this vanish on the black-holed path
MTU_SERVER_PORT = 8080
BIG_FILE_SIZE = 256 * 1024
DNS_RESOLVER_TIMEOUT = 5  # glibc's default `options timeout:5`
FAULTKIT = workloads.DEPLOY_DIR / "faultkit.py"  # the faults' stand-in servers and clients
# A pod reaching itself through its own Service (kube-proxy's DNAT picks the caller).
HAIRPIN_SERVICE = Service("ubuntu", "default", "10.0.77.7",
                          (ServicePort("http", 80, 8080, "TCP"),), "client", backends=("ubuntu",))
# A server-first protocol (SMTP) behind a protocol-sniffing proxy in the backend pod.
MAIL_SERVICE = Service("mail", "default", "10.0.25.25", (ServicePort("smtp", 25, 25, "TCP"),),
                       "backend", backends=("nginx-b",))


@dataclass(frozen=True)
class Fault:
    name: str  # "fault-drop-after-dnat": the CLI's scenario name and the capture files' stem
    description: str
    drive: Callable[[Lab, dict], None]  # inject, drive, remove; fills the truth dict
    services: tuple[Service, ...] = ()  # Services the fault adds, for inventory.json
    # After the captures stopped: what the fault left behind that would otherwise send
    # packets into a later recording (a server's half of a connection its client forgot).
    after: Callable[[Lab, dict], None] | None = None


# -- evidence from outside the captures --------------------------------------------------------


def client_run(lab: Lab, argv: list[str], timeout: float, input: str | None = None,
               ns: str | None = None) -> dict:
    """Run `argv` in the client pod (with its resolv.conf), or in lab namespace `ns`; never
    raises on failure."""
    ns = ns or lab.plan.pod_ns(lab.plan.client)
    started = time.monotonic()
    result = {"argv": argv, "started_at": _now()}
    try:
        done = subprocess.run(netns.in_ns(ns, argv), input=input, capture_output=True,
                              text=True, timeout=timeout + CLIENT_GRACE, check=False)
        result.update(exit_code=done.returncode, timed_out=False,
                      stdout=done.stdout[-OUTPUT_LIMIT:], stderr=done.stderr[-OUTPUT_LIMIT:])
    except subprocess.TimeoutExpired as exc:
        result.update(exit_code=None, timed_out=True,
                      stdout=_text(exc.stdout)[-OUTPUT_LIMIT:],
                      stderr=_text(exc.stderr)[-OUTPUT_LIMIT:])
    result["elapsed_s"] = round(time.monotonic() - started, 3)
    return result


def curl_argv(url: str, max_time: float, *extra: str) -> list[str]:
    return ["curl", "-sS", "--max-time", f"{max_time:g}", "-o", "/dev/null", "-w",
            "%{http_code} %{size_download} %{time_namelookup} %{time_total}", *extra, url]


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def rule_packets(ns: str, table: str, chain: str, *needles: str) -> int:
    """Packets counted by the rules of `chain` whose saved text contains every needle."""
    saved = netns.ns_run(ns, ["iptables-save", "-c", "-t", table]).stdout
    total = 0
    for line in saved.splitlines():
        match = re.match(r"^\[(\d+):(\d+)\] -A (\S+) (.*)$", line)
        if match and match[3] == chain and all(n in match[4] for n in needles):
            total += int(match[1])
    return total


def tcp_counters(lab: Lab, pod_name: str, table: str = "snmp",
                 prefix: str = "Tcp:") -> dict[str, int]:
    """The pod namespace's own TCP MIB counters (/proc/net/snmp is per network namespace);
    `table="netstat", prefix="TcpExt:"` gives Linux's extended ones (ListenOverflows, ...)."""
    text = netns.ns_run(lab.plan.pod_ns(lab.plan.pod(pod_name)),
                        ["cat", f"/proc/net/{table}"]).stdout
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith(prefix)]
    return {key: int(value) for key, value in zip(rows[0], rows[1], strict=True)}


def tcp_ext_counters(lab: Lab, pod_name: str) -> dict[str, int]:
    return tcp_counters(lab, pod_name, "netstat", "TcpExt:")


def counter_deltas(before: dict[str, int], after: dict[str, int], *keys: str) -> dict[str, int]:
    return {key: after[key] - before[key] for key in keys}


def log_offset(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def log_lines_since(path: Path, offset: int) -> list[str]:
    if not path.exists():
        return []
    with open(path, "rb") as fp:
        fp.seek(offset)
        return fp.read().decode(errors="replace").splitlines()


def access_log_offsets(lab: Lab) -> dict[str, int]:
    return {pod.name: log_offset(lab.access_log(pod.name)) for pod in lab.plan.backends}


def served_since(lab: Lab, offsets: dict[str, int]) -> dict[str, list[str]]:
    """New nginx access-log lines per backend pod: which backend really served."""
    return {name: log_lines_since(lab.access_log(name), offset)
            for name, offset in offsets.items()}


def dns_queries(lines: list[str]) -> list[dict]:
    """dnsmasq's --log-queries lines as queries in arrival order, each with its reply."""
    queries: list[dict] = []
    for line in lines:
        asked = re.search(r"query\[(\w+)\] (\S+) from (\S+)", line)
        if asked:
            queries.append({"type": asked[1], "name": asked[2], "from": asked[3], "reply": None})
            continue
        answered = re.search(r"(?:config|reply|cached) (\S+) is (\S+)", line)
        if answered:
            for query in queries:
                if query["name"] == answered[1] and query["reply"] is None:
                    query["reply"] = answered[2]
                    break
    return queries


def service_truth(service: Service, port: ServicePort) -> dict:
    return {"namespace": service.namespace, "name": service.name, "vip": service.cluster_ip,
            "port": port.port, "target_port": port.target_port,
            "protocol": port.protocol, "endpoints": list(service.backends)}


def pod_truth(lab: Lab, pod_name: str) -> dict:
    pod = lab.plan.pod(pod_name)
    return {"namespace": pod.namespace, "name": pod.name, "ip": pod.ip,
            "netns": lab.plan.pod_ns(pod)}


# -- injecting: iptables rules in a lab namespace ----------------------------------------------


@dataclass(frozen=True)
class Rules:
    """Rules added to one table of one lab namespace, and taken out again.

    `rules` are iptables-restore lines, "-I CHAIN N ..." or "-A CHAIN ..."; `chains` are the
    new chains they need. `--noflush` keeps everything else in the table as it is.
    """

    ns: str
    table: str
    chains: tuple[str, ...]
    rules: tuple[str, ...]

    def add(self) -> None:
        lines = [f"*{self.table}", *(f":{chain} - [0:0]" for chain in self.chains),
                 *self.rules, "COMMIT", ""]
        netns.ns_run(self.ns, ["iptables-restore", "--noflush"], input="\n".join(lines))

    def remove(self) -> None:
        deletes = [re.sub(r"^-[AI] (\S+)(?: \d+)? ", r"-D \1 ", rule) for rule in self.rules]
        # Rules in existing chains go first (some jump to the new chains), then the new chains
        # are flushed and deleted.
        outside = [d for d in deletes if d.split()[1] not in self.chains]
        lines = [f"*{self.table}", *outside, *(f"-F {c}" for c in self.chains),
                 *(f"-X {c}" for c in self.chains), "COMMIT", ""]
        netns.ns_run(self.ns, ["iptables-restore", "--noflush"], input="\n".join(lines))

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        self.add()
        try:
            yield
        finally:
            self.remove()

    def truth(self) -> dict:
        return {"netns": self.ns, "table": self.table, "chains": list(self.chains),
                "rules": list(self.rules)}


def fault_chain(lab: Lab, chain: str, rules: list[str], hook: str = "FORWARD") -> Rules:
    """Rules in a chain of their own, jumped to first from the node's filter `hook` chain."""
    return Rules(lab.plan.node_ns, "filter", (chain,),
                 (f"-I {hook} 1 -j {chain}", *(f"-A {chain} {rule}" for rule in rules)))


def kube_proxy_service(lab: Lab, service: Service) -> Rules:
    """kube-proxy's nat rules for one more Service, its KUBE-SERVICES jump put first (the
    chain's last rule must stay the NodePort one)."""
    chains, rules = [], []
    endpoints = [lab.plan.pod(name).ip for name in service.backends]
    for port in service.ports:
        chains.append(kubeproxy.svc_chain(service, port))
        chains += [kubeproxy.sep_chain(service, port, f"{ip}:{port.target_port}")
                   for ip in endpoints]
        for rule in kubeproxy._service_rules(service, port, endpoints):
            rules.append(rule.replace("-A KUBE-SERVICES ", "-I KUBE-SERVICES 1 ", 1))
    return Rules(lab.plan.node_ns, "nat", tuple(chains), tuple(rules))


# -- injecting: a pod's server swapped for a stand-in ------------------------------------------


@contextlib.contextmanager
def swapped_process(lab: Lab, key: str, stand_in: Callable[[], subprocess.Popen],
                    restore: Callable[[], workloads.Started]) -> Iterator[subprocess.Popen]:
    """Stop the lab's process `key` (state.json's name), run `stand_in` instead, and always
    start the real one again afterwards, recording its new pid (the caller holds the lock)."""
    netns.signal_and_wait(lab.read_state()["processes"][key])
    process = None
    try:
        process = stand_in()
        yield process
    finally:
        if process is not None and process.poll() is None:
            netns.signal_and_wait(process.pid)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        started = restore()
        state = lab.read_state()
        state["processes"][key] = started.pid
        lab.write_state(state)


def spawn_ready(lab: Lab, pod_name: str, argv: list[str], log_path: Path, port: int,
                proto: str = "tcp") -> subprocess.Popen:
    process = netns.spawn(lab.plan.pod_ns(lab.plan.pod(pod_name)), argv, log_path)
    try:
        workloads.wait_ready(f"{pod_name}/{Path(argv[0]).name}", process, port, proto, log_path)
    except BaseException:
        process.kill()
        process.wait(timeout=5)
        raise
    return process


# -- the faults ----------------------------------------------------------------------------------


def drop_after_dnat(lab: Lab, truth: dict) -> None:
    """A NetworkPolicy-style drop of SYNs to one backend pod, after kube-proxy's DNAT picked it.

    The DNAT is pinned: one rule first in the Service's KUBE-SVC chain sends the client to that
    backend's KUBE-SEP chain, so the drop is hit on every run, not one run in two. Pinning
    matters more than it seems: a SYN dropped in FORWARD never confirms its conntrack entry, so
    each retransmission is a new connection to netfilter and goes through the DNAT again (the
    nat counters count every SYN); unpinned, the retransmissions could reach the other backend.
    """
    plan = lab.plan
    service = plan.service("nginx")
    port = service.ports[0]
    backend = plan.backends[0]
    endpoint = f"{backend.ip}:{port.target_port}"
    svc, sep = kubeproxy.svc_chain(service, port), kubeproxy.sep_chain(service, port, endpoint)
    pin_comment = f"kviz fault: pin {plan.client.namespace}/{plan.client.name} to {endpoint}"
    pin = Rules(plan.node_ns, "nat", (), (
        f'-I {svc} 1 -s {plan.client.ip}/32 -m comment --comment "{pin_comment}" -j {sep}',))
    policy = f"{backend.namespace}/deny-ingress-{backend.name}"
    drop = fault_chain(lab, "KVIZ-NETPOL", [
        f"-d {backend.ip}/32 -p tcp -m tcp --dport {port.target_port} --syn "
        f'-m comment --comment "NetworkPolicy {policy}" -j DROP'])
    counts = {
        "drop": lambda: rule_packets(plan.node_ns, "filter", "KVIZ-NETPOL", policy),
        "pin": lambda: rule_packets(plan.node_ns, "nat", svc, pin_comment),
        "dnat": lambda: rule_packets(plan.node_ns, "nat", sep, "DNAT"),
    }
    served_from = access_log_offsets(lab)
    tcp_before = tcp_counters(lab, backend.name)
    with pin.installed(), drop.installed():
        before = {name: count() for name, count in counts.items()}
        truth["client"] = client_run(lab, curl_argv("http://nginx/", 4), 4)
        after = {name: count() for name, count in counts.items()}
    truth.update(
        service=service_truth(service, port),
        backend={**pod_truth(lab, backend.name), "port": port.target_port},
        dnat={"pinned": True, "svc_chain": svc, "sep_chain": sep, "to": endpoint,
              "pin_rule": pin.truth(), "pin_packets": after["pin"] - before["pin"],
              "dnat_packets": after["dnat"] - before["dnat"]},
        drop_rule={**drop.truth(), "policy": policy, "packets_before": before["drop"],
                   "packets_after": after["drop"]},
        backend_tcp=counter_deltas(tcp_before, tcp_counters(lab, backend.name),
                                   "PassiveOpens", "OutRsts"),
        served=served_since(lab, served_from),
    )


def no_endpoints(lab: Lab, truth: dict) -> None:
    """A Service with no endpoints: kube-proxy's REJECT in the filter table's KUBE-SERVICES."""
    plan = lab.plan
    service = NO_ENDPOINTS_SERVICE
    port = service.ports[0]
    comment = f"{kubeproxy.service_port_name(service, port)} has no endpoints"
    portal = '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals"'
    reject = Rules(plan.node_ns, "filter", ("KUBE-SERVICES",), (
        f"-I FORWARD 1 {portal} -j KUBE-SERVICES",
        f"-I OUTPUT 1 {portal} -j KUBE-SERVICES",
        f'-A KUBE-SERVICES -d {service.cluster_ip}/32 -p tcp -m comment --comment "{comment}" '
        f"-m tcp --dport {port.port} -j REJECT --reject-with icmp-port-unreachable",
    ))
    with reject.installed():
        before = rule_packets(plan.node_ns, "filter", "KUBE-SERVICES", comment)
        truth["client"] = client_run(
            lab, curl_argv(f"http://{service.cluster_ip}:{port.port}/", 3), 3)
        after = rule_packets(plan.node_ns, "filter", "KUBE-SERVICES", comment)
    truth.update(service=service_truth(service, port),
                 reject_rule={**reject.truth(), "comment": comment, "packets_before": before,
                              "packets_after": after})


def search_expansion(lab: Lab, truth: dict) -> None:
    """An outside name from a pod with ndots:5: glibc walks the search list first.

    kube-dns is swapped for a copy of itself (same command line, read from /proc) that also
    knows EXTERNAL_NAME (answering the nginx Service's VIP); the real one is restarted after.
    """
    plan = lab.plan
    dns_pod = plan.pods_with_role("dns")[0]
    key = f"{dns_pod.name}/dnsmasq"
    pid = lab.read_state()["processes"][key]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    answer = plan.service("nginx").cluster_ip
    log_path = workloads.pod_dir(lab.state_dir, dns_pod) / "fault-dnsmasq.log"
    offset = log_offset(log_path)
    resolv = lab.resolv_conf_path(plan.client).read_text()
    search = next((line.split()[1:] for line in resolv.splitlines()
                   if line.startswith("search ")), [])
    ndots = int(next(iter(re.findall(r"ndots:(\d+)", resolv)), "1"))
    served_from = access_log_offsets(lab)

    def stand_in() -> subprocess.Popen:
        return spawn_ready(lab, dns_pod.name, [*argv, f"--host-record={EXTERNAL_NAME},{answer}"],
                           log_path, 53, "udp")

    with swapped_process(lab, key, stand_in, lambda: workloads.start_dns(plan, lab.state_dir)):
        truth["client"] = client_run(lab, curl_argv(f"http://{EXTERNAL_NAME}/", 5), 5)
    expected = [f"{EXTERNAL_NAME}.{suffix}" for suffix in search] + [EXTERNAL_NAME]
    if EXTERNAL_NAME.count(".") >= ndots:
        expected = [EXTERNAL_NAME, *expected[:-1]]
    truth.update(
        name=EXTERNAL_NAME, answer=answer, resolv_conf=resolv, search=search, ndots=ndots,
        expected_names=expected, dns_server={"pod": pod_truth(lab, dns_pod.name),
                                            "argv_added": [f"--host-record={EXTERNAL_NAME},"
                                                           f"{answer}"]},
        dns_queries=dns_queries(log_lines_since(log_path, offset)),
        served=served_since(lab, served_from),
    )


def dns_lost(lab: Lab, truth: dict) -> None:
    """The first DNS query after kube-proxy's DNAT to the DNS pod is dropped on the node, once.

    `-m statistic --mode nth --every N --packet 0` matches the first packet it sees and then
    only every Nth: with N large, once. A counting rule before it sees every query.
    """
    plan = lab.plan
    dns_pod = plan.pods_with_role("dns")[0]
    every = 1000
    match = f"-d {dns_pod.ip}/32 -p udp -m udp --dport 53"
    rules = fault_chain(lab, "KVIZ-FAULT", [
        f'{match} -m comment --comment "kviz fault: DNS queries seen"',
        f"{match} -m statistic --mode nth --every {every} --packet 0 "
        '-m comment --comment "kviz fault: lose one DNS query" -j DROP',
    ])
    log_path = workloads.pod_dir(lab.state_dir, dns_pod) / "dnsmasq.log"
    offset = log_offset(log_path)
    served_from = access_log_offsets(lab)

    def count(comment: str) -> int:
        return rule_packets(plan.node_ns, "filter", "KVIZ-FAULT", comment)

    with rules.installed():
        before = count("lose one DNS query")
        truth["client"] = client_run(lab, curl_argv("http://nginx/", 15), 15)
        seen, dropped = count("DNS queries seen"), count("lose one DNS query")
    truth.update(
        dns_pod=pod_truth(lab, dns_pod.name),
        dns_service={"vip": plan.service("kube-dns").cluster_ip, "port": 53},
        drop_rule={**rules.truth(), "packets_before": before, "packets_after": dropped},
        queries_seen_on_node=seen,
        resolver_timeout_s=DNS_RESOLVER_TIMEOUT,
        dns_queries=dns_queries(log_lines_since(log_path, offset)),
        served=served_since(lab, served_from),
    )


def closed_port(lab: Lab, truth: dict) -> None:
    """A Service whose only endpoint has nothing listening on the target port: a RST."""
    plan = lab.plan
    service = CLOSED_PORT_SERVICE
    port = service.ports[0]
    backend = plan.pod(service.backends[0])
    nginx_pid = lab.read_state()["processes"][f"{backend.name}/nginx"]
    rules = kube_proxy_service(lab, service)
    sep = kubeproxy.sep_chain(service, port, f"{backend.ip}:{port.target_port}")
    tcp_before = tcp_counters(lab, backend.name)
    with rules.installed():
        truth["client"] = client_run(
            lab, curl_argv(f"http://{service.cluster_ip}:{port.port}/", 3), 3)
        dnat_packets = rule_packets(plan.node_ns, "nat", sep, "DNAT")
    truth.update(
        service=service_truth(service, port),
        backend={**pod_truth(lab, backend.name), "port": port.target_port,
                 "listening": netns.listening(nginx_pid, port.target_port)},
        kube_proxy_rules=rules.truth(),
        dnat={"sep_chain": sep, "to": f"{backend.ip}:{port.target_port}",
              "dnat_packets": dnat_packets},
        backend_tcp=counter_deltas(tcp_before, tcp_counters(lab, backend.name),
                                   "PassiveOpens", "OutRsts"),
    )


def plaintext_to_mtls(lab: Lab, truth: dict) -> None:
    """Plain HTTP to a backend sidecar's mTLS-only inbound port (as a pod without a sidecar
    reaching a STRICT-mTLS pod by its IP would)."""
    plan = lab.plan
    backend = plan.backends[0]
    key = f"{backend.name}/meshproxy-inbound"
    pid = lab.read_state()["processes"][key]
    log_path = workloads.pod_dir(lab.state_dir, backend) / "meshproxy-inbound.log"
    offset = log_offset(log_path)
    served_from = access_log_offsets(lab)
    tcp_before = tcp_counters(lab, backend.name)
    truth["client"] = client_run(lab, curl_argv(f"http://{backend.ip}:{INBOUND_PORT}/", 3), 3)
    truth.update(
        server={**pod_truth(lab, backend.name), "port": INBOUND_PORT, "process": key,
                "pid": pid, "listening": netns.listening(pid, INBOUND_PORT),
                "requires_client_cert": True,
                "log": log_lines_since(log_path, offset)},
        backend_tcp=counter_deltas(tcp_before, tcp_counters(lab, backend.name),
                                   "PassiveOpens", "OutRsts", "EstabResets"),
        served=served_since(lab, served_from),
    )


def tls_no_client_cert(lab: Lab, truth: dict) -> None:
    """TLS without a client certificate to the mTLS-only port, with TLS 1.2 and TLS 1.3.

    The lab's sidecar speaks TLS 1.2 at most (so its handshakes stay readable on the wire), so
    for this fault its inbound port is served by `openssl s_server` with the same certificate,
    CA and ALPN, requiring a client certificate, over TLS 1.2 and 1.3; it logs every refusal.
    """
    plan = lab.plan
    backend = plan.backends[0]
    key = f"{backend.name}/meshproxy-inbound"
    pki_dir = lab.state_dir / "pki"
    log_path = workloads.pod_dir(lab.state_dir, backend) / "fault-s_server.log"
    offset = log_offset(log_path)
    alpn = "istio-peer-exchange,istio-http/1.1,istio"
    nginx = plan.service("nginx")
    sni = f"outbound_.{nginx.ports[0].port}_._.{nginx.fqdn}"
    server_argv = [
        "openssl", "s_server", "-4", "-accept", str(INBOUND_PORT), "-www", "-alpn", alpn,
        "-cert", str(pki_dir / f"{backend.name}.crt"), "-key", str(pki_dir / f"{backend.name}.key"),
        "-CAfile", str(pki_dir / "ca.crt"), "-Verify", "1", "-verify_return_error",
    ]

    def stand_in() -> subprocess.Popen:
        return spawn_ready(lab, backend.name, server_argv, log_path, INBOUND_PORT)

    def restore() -> workloads.Started:
        return workloads.start_inbound(plan, lab.state_dir, backend)

    attempts = []
    with swapped_process(lab, key, stand_in, restore) as server:
        server_pid = server.pid
        for version, flag in (("TLSv1.2", "-tls1_2"), ("TLSv1.3", "-tls1_3")):
            argv = ["openssl", "s_client", "-connect", f"{backend.ip}:{INBOUND_PORT}", flag,
                    "-servername", sni, "-alpn", alpn, "-CAfile", str(pki_dir / "ca.crt"),
                    "-ign_eof"]
            before = log_offset(log_path)
            attempt = client_run(lab, argv, 5, input=HTTP_REQUEST)
            # s_server may log its error a moment after the client has gone: wait, bounded.
            netns.wait_until(lambda before=before: ":error:" in "\n".join(
                log_lines_since(log_path, before)), 1.0)
            alert = re.search(r"alert ([\w ]+?):.*SSL alert number (\d+)", attempt["stderr"])
            attempt.update(version=version, client_certificate=False,
                           alert={"description": alert[1], "number": int(alert[2])}
                           if alert else None,
                           server_errors=[line for line in log_lines_since(log_path, before)
                                          if ":error:" in line])
            attempts.append(attempt)
        server_log = log_lines_since(log_path, offset)
    truth.update(
        server={**pod_truth(lab, backend.name), "port": INBOUND_PORT,
                "process": "openssl s_server (stand-in for the sidecar's inbound listener)",
                "pid": server_pid, "argv": server_argv, "versions": ["TLSv1.2", "TLSv1.3"],
                "requires_client_cert": True, "log": server_log,
                "errors": [line for line in server_log if ":error:" in line],
                "restored": {"process": key, "pid": lab.read_state()["processes"][key]}},
        sni=sni, alpn=alpn.split(","), attempts=attempts, client=attempts[-1],
    )


def mtu_blackhole(lab: Lab, truth: dict) -> None:
    """A path MTU black hole: IP packets longer than MTU_LIMIT from a backend to the client
    vanish on the node and no ICMP "fragmentation needed" comes back, so small responses pass
    and a download's full-size segments are retransmitted until the client gives up.

    The backend sends wire-sized segments meanwhile (gso_max_segs 1 on its eth0), so both
    captures show 1500-byte packets rather than 64 KB offload bursts.
    """
    plan = lab.plan
    backend = plan.backends[1]
    backend_ns = plan.pod_ns(backend)
    directory = workloads.pod_dir(lab.state_dir, backend) / "fault-www"
    directory.mkdir(exist_ok=True)
    (directory / "small.txt").write_text("small enough for any path\n")
    (directory / "big.bin").write_bytes(bytes(range(256)) * (BIG_FILE_SIZE // 256))
    log_path = directory.parent / "fault-http.log"
    link = json.loads(netns.ip(backend_ns, "-d", "-j", "link", "show", "eth0").stdout)[0]
    gso = {"gso_max_segs": str(link["gso_max_segs"]), "gso_max_size": str(link["gso_max_size"])}
    comment = f"kviz fault: path MTU black hole above {MTU_LIMIT} bytes"
    rules = fault_chain(lab, "KVIZ-FAULT", [
        f"-s {backend.ip}/32 -d {plan.client.ip}/32 -p tcp -m tcp --sport {MTU_SERVER_PORT} "
        f'-m length --length {MTU_LIMIT + 1}:65535 -m comment --comment "{comment}" -j DROP'])
    base = f"http://{backend.ip}:{MTU_SERVER_PORT}"
    server_argv = [sys.executable, "-m", "http.server", str(MTU_SERVER_PORT), "--bind",
                   backend.ip, "--directory", str(directory)]
    server = None
    try:
        netns.ip(backend_ns, "link", "set", "eth0", "gso_max_segs", "1", "gso_max_size", "1500")
        server = spawn_ready(lab, backend.name, server_argv, log_path, MTU_SERVER_PORT)
        offset = log_offset(log_path)
        with rules.installed():
            before = rule_packets(plan.node_ns, "filter", "KVIZ-FAULT", comment)
            small = client_run(lab, curl_argv(f"{base}/small.txt", 3), 3)
            big = client_run(lab, curl_argv(f"{base}/big.bin", 4), 4)
            dropped = rule_packets(plan.node_ns, "filter", "KVIZ-FAULT", comment)
    finally:
        if server is not None:
            netns.signal_and_wait(server.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=5)
        netns.ip(backend_ns, "link", "set", "eth0", "gso_max_segs", gso["gso_max_segs"],
                 "gso_max_size", gso["gso_max_size"])
    truth.update(
        server={**pod_truth(lab, backend.name), "port": MTU_SERVER_PORT,
                "process": "python -m http.server", "log": log_lines_since(log_path, offset),
                "gso_during_fault": {"gso_max_segs": 1, "gso_max_size": 1500},
                "gso_restored": gso},
        files={"small.txt": (directory / "small.txt").stat().st_size,
               "big.bin": BIG_FILE_SIZE},
        limit_bytes=MTU_LIMIT,
        drop_rule={**rules.truth(), "comment": comment, "packets_before": before,
                   "packets_after": dropped},
        icmp_frag_needed_sent=False,
        small=small, big=big, client=big,
    )


# -- faults with stand-ins (deploy/lab/faultkit.py) ----------------------------------------------


def faultkit_argv(command: str, *args) -> list[str]:
    return [sys.executable, str(FAULTKIT), command, *(str(a) for a in args)]


def json_lines(text: str) -> list[dict]:
    """The JSON lines a faultkit program printed (anything else is skipped)."""
    found = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return found


@contextlib.contextmanager
def stand_in(lab: Lab, pod_name: str, argv: list[str], log_path: Path,
             port: int) -> Iterator[subprocess.Popen]:
    """A faultkit server in a pod while the fault lasts, always stopped afterwards."""
    process = spawn_ready(lab, pod_name, argv, log_path, port)
    try:
        yield process
    finally:
        netns.signal_and_wait(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def forget_sockets(ns: str, *expression: str) -> list[str]:
    """Destroy the TCP sockets of namespace `ns` that match an `ss` filter expression (`ss -K`,
    SOCK_DESTROY): the half of a connection whose other end is gone. Its last words (a reset
    to an end that no longer listens) fall after the captures. Returns what was destroyed."""
    done = netns.ns_run(ns, ["ss", "-K", "-tnH", *expression], check=False)
    return [" ".join(line.split()) for line in done.stdout.splitlines() if line.strip()]


def listen_queue(ns: str, port: int) -> dict | None:
    """A listener's accept queue as `ss -ltn` shows it: Recv-Q connections waiting to be
    accepted, Send-Q the backlog it was given."""
    rows = netns.ns_run(ns, ["ss", "-ltnH", f"sport = :{port}"]).stdout.split()
    return {"recv_q": int(rows[1]), "send_q": int(rows[2])} if len(rows) >= 3 else None


OVERFLOW_PORT = 9090
OVERFLOW_BACKLOG = 1
OVERFLOW_CONNECTIONS = 6
OVERFLOW_ACCEPT_AFTER = 1.5  # seconds after the first connection arrived
OVERFLOW_WAIT = 8.0  # the clients' patience: long enough for two SYN-ACKs resent (at 1 s, 3 s)


def listen_overflow(lab: Lab, truth: dict) -> None:
    """A server's accept queue overflows: the kernel drops the last ACK of handshakes that
    complete while the queue is full, and re-sends its SYN-ACK to clients that think they are
    connected and have sent their request.

    Why the numbers: listen(1) queues two connections, and the SYNs of the other four of six
    opened at once are dropped (the queue is full). Their retransmission timers were armed
    together, so each round of retransmissions leaves in one batch and reaches the server
    before any answer goes back: the first round (1 s) finds the queue still full; the server
    then accepts one connection (at 1.5 s), and the second round (3 s) is answered: the first
    handshake to complete fills the queue again, and the next one's ACK overflows it. (The
    SYN queue is as short as the backlog, so the rest of that round get SYN cookies: their
    ACKs are dropped too, but no SYN-ACK is resent for them.)
    """
    plan = lab.plan
    server = plan.backends[1]
    ns = plan.pod_ns(server)
    log_path = workloads.pod_dir(lab.state_dir, server) / "fault-backlog-server.log"
    offset = log_offset(log_path)
    argv = faultkit_argv("backlog-server", server.ip, OVERFLOW_PORT, OVERFLOW_BACKLOG,
                         OVERFLOW_ACCEPT_AFTER)
    with stand_in(lab, server.name, argv, log_path, OVERFLOW_PORT) as process:
        before = tcp_ext_counters(lab, server.name)
        truth["client"] = client_run(
            lab, faultkit_argv("burst-client", server.ip, OVERFLOW_PORT, OVERFLOW_CONNECTIONS,
                               OVERFLOW_WAIT), OVERFLOW_WAIT + 2)
        after = tcp_ext_counters(lab, server.name)
        queue = listen_queue(ns, OVERFLOW_PORT)
        pid = process.pid
    reported = json_lines(truth["client"]["stdout"])
    logged = json_lines("\n".join(log_lines_since(log_path, offset)))
    truth.update(
        server={**pod_truth(lab, server.name), "port": OVERFLOW_PORT, "pid": pid,
                "process": "faultkit backlog-server (listen(1), one accept())",
                "backlog": OVERFLOW_BACKLOG, "accept_after_s": OVERFLOW_ACCEPT_AFTER,
                "accepted": [e["peer"] for e in logged if e.get("event") == "accepted"]},
        listen_queue_after=queue,
        server_tcp_ext=counter_deltas(before, after, "ListenOverflows", "ListenDrops",
                                      "SyncookiesSent", "TCPReqQFullDoCookies"),
        connections=reported[-1]["connections"] if reported else {},
    )


def listen_overflow_after(lab: Lab, truth: dict) -> None:
    """The client's unanswered connections would go on resending their data (backing off,
    for seconds after the client exited) into the next recording: forget them."""
    server = lab.plan.backends[1]
    truth["afterwards"] = {"forgotten": forget_sockets(
        lab.plan.pod_ns(lab.plan.client), "dst", server.ip, "and", "dport", "=",
        f":{OVERFLOW_PORT}")}


def injected_reset(lab: Lab, truth: dict) -> None:
    """A reset the server never sent: a firewall rule on the node (`-j REJECT --reject-with
    tcp-reset`, as a policy engine or a WAF-like filter writes it) rejects requests for /admin
    on their way to nginx-a, and the node's own stack answers the client with a RST in
    nginx-a's name. nginx-a never sees the request and sends no reset (its OutRsts stays).

    The client calls the pod's own address (a headless Service, a pod-to-pod call): with a
    Service VIP the forged reset would carry the pod's address, which the client ignores.
    """
    plan = lab.plan
    backend = plan.backends[0]
    comment = "kviz fault: reject GET /admin with a forged reset"
    rules = fault_chain(lab, "KVIZ-FAULT", [
        f'-d {backend.ip}/32 -p tcp -m tcp --dport 80 -m string --string "GET /admin" '
        f'--algo bm -m comment --comment "{comment}" -j REJECT --reject-with tcp-reset'])
    served_from = access_log_offsets(lab)
    tcp_before = tcp_counters(lab, backend.name)
    with rules.installed():
        before = rule_packets(plan.node_ns, "filter", "KVIZ-FAULT", comment)
        truth["client"] = client_run(lab, curl_argv(f"http://{backend.ip}/admin", 3), 3)
        after = rule_packets(plan.node_ns, "filter", "KVIZ-FAULT", comment)
    truth.update(
        server={**pod_truth(lab, backend.name), "port": 80},
        reject_rule={**rules.truth(), "comment": comment, "packets_before": before,
                     "packets_after": after},
        forged_by={"node": plan.node_name, "netns": plan.node_ns},
        backend_tcp=counter_deltas(tcp_before, tcp_counters(lab, backend.name),
                                   "PassiveOpens", "OutRsts", "EstabResets"),
        served=served_since(lab, served_from),
    )


HAIRPIN_LOCAL_PORT = 41001
HAIRPIN_ATTEMPTS = (  # (what, hairpin_mode on the client's bridge port, hairpin masquerade)
    ("the bridge port's hairpin_mode off (the CNI bridge plugin without hairpinMode)", 0, True),
    ("hairpin_mode on, but no masquerade for the pod reaching itself", 1, False),
    ("hairpin_mode on and kube-proxy's masquerade: the working case", 1, True),
)


def injected_reset_after(lab: Lab, truth: dict) -> None:
    """nginx-a never heard of the reset and keeps its half of the connection until its own
    timeout (60 s), then closes it into whatever is recorded next: forget it now."""
    backend = lab.plan.backends[0]
    truth["afterwards"] = {"forgotten": forget_sockets(
        lab.plan.pod_ns(backend), "dst", lab.plan.client.ip, "and", "sport", "=", ":80")}


def hairpin(lab: Lab, truth: dict) -> None:
    """A pod calls its own Service and kube-proxy's DNAT picks the pod itself.

    Three attempts, one connection each: (1) the bridge does not send a frame back out of
    the port it came in on (hairpin_mode 0, the lab's default), so the DNATed SYN never comes
    back; (2) with hairpin_mode on but no masquerade, the SYN comes back from the pod's own
    address and the pod drops it (a packet from itself arriving on eth0 is a martian); (3) both
    on: it works, and no cause may be claimed for it.
    """
    if (lab.read_state() or {}).get("mode") != "bridge":
        raise LabError("fault-hairpin needs the bridge-mode lab (a bridge port's hairpin_mode)")
    plan = lab.plan
    client = plan.client
    service = HAIRPIN_SERVICE
    port = service.ports[0]
    endpoint = f"{client.ip}:{port.target_port}"
    sep = kubeproxy.sep_chain(service, port, endpoint)
    full = kube_proxy_service(lab, service)
    unmasqueraded = Rules(full.ns, full.table, full.chains,
                          tuple(r for r in full.rules if "KUBE-MARK-MASQ" not in r
                                or not r.startswith(f"-A {sep} ")))
    hairpin_path = f"/sys/class/net/cbr0/brif/{client.veth}/hairpin_mode"
    directory = workloads.pod_dir(lab.state_dir, client) / "fault-www"
    directory.mkdir(exist_ok=True)
    (directory / "index.html").write_text("hello from ubuntu itself\n")
    log_path = directory.parent / "fault-http.log"
    server_argv = [sys.executable, "-m", "http.server", str(port.target_port), "--bind",
                   client.ip, "--directory", str(directory)]

    def set_hairpin(value: int) -> int:
        netns.ns_run(plan.node_ns, ["sh", "-c", f"echo {value} > {hairpin_path}"])
        return int(netns.ns_run(plan.node_ns, ["cat", hairpin_path]).stdout)

    original = int(netns.ns_run(plan.node_ns, ["cat", hairpin_path]).stdout)
    attempts = []
    offset = log_offset(log_path)
    try:
        with stand_in(lab, client.name, server_argv, log_path, port.target_port):
            for number, (what, mode, masquerade) in enumerate(HAIRPIN_ATTEMPTS):
                rules = full if masquerade else unmasqueraded
                # A fixed source port per attempt: curl reports none for a connection that
                # never opened, and the truth must say which connection was which.
                local_port = HAIRPIN_LOCAL_PORT + number
                mode_set = set_hairpin(mode)
                opens = tcp_counters(lab, client.name)
                before = log_offset(log_path)
                with rules.installed():
                    dnat_before = rule_packets(plan.node_ns, "nat", sep, "DNAT")
                    result = client_run(lab, ["curl", "-sS", "--max-time", "2", "-o",
                                              "/dev/null", "-w", "%{http_code}", "--local-port",
                                              str(local_port),
                                              f"http://{service.cluster_ip}:{port.port}/"], 2)
                    dnat = rule_packets(plan.node_ns, "nat", sep, "DNAT") - dnat_before
                attempts.append({
                    **result, "what": what, "hairpin_mode": mode_set,
                    "masquerade_rule": masquerade, "dnat_packets": dnat,
                    "local_port": local_port,
                    "client_tcp": counter_deltas(opens, tcp_counters(lab, client.name),
                                                 "PassiveOpens", "ActiveOpens"),
                    "server_log": [line for line in log_lines_since(log_path, before)
                                   if '"GET ' in line],
                })
    finally:
        set_hairpin(original)
    truth.update(
        service=service_truth(service, port), dnat={"sep_chain": sep, "to": endpoint},
        bridge={"port": client.veth, "hairpin_mode_before": original},
        server={**pod_truth(lab, client.name), "port": port.target_port,
                "process": "python -m http.server (in the client pod itself)",
                "log": log_lines_since(log_path, offset)},
        attempts=attempts, client=attempts[-1],
    )


CONNTRACK_ESTABLISHED_TIMEOUT = 2  # seconds, in the node's namespace while the fault lasts
IDLE_GAP = 5.0  # seconds between the two requests on the one connection
IDLE_REQUEST_TIMEOUT = 3.0


def idle_reset(lab: Lab, truth: dict) -> None:
    """A pooled connection idle longer than the node's conntrack timeout: the next request on
    it is no longer DNATed and is dropped, resent, and never answered.

    The node's `nf_conntrack_tcp_timeout_established` (per network namespace) is lowered to a
    few seconds, as an idle timeout on the path would be. With Linux's default
    `nf_conntrack_tcp_loose=1` a mid-stream packet would start a new conntrack entry and be
    DNATed afresh, to whichever backend the dice pick; loose=0 makes it INVALID, and
    kube-proxy's own rule for those (`--ctstate INVALID -j DROP`) drops it: the silent case,
    the same on every run. Its counter tells how many copies of the request were dropped.
    """
    plan = lab.plan
    service = plan.service("nginx")
    port = service.ports[0]
    keys = ("net.netfilter.nf_conntrack_tcp_timeout_established",
            "net.netfilter.nf_conntrack_tcp_loose")
    comment = "kubernetes forwarding conntrack rule"
    invalid = fault_chain(lab, "KVIZ-FAULT", [
        f'-m conntrack --ctstate INVALID -m comment --comment "{comment}" -j DROP'])
    original = {key: netns.ns_run(plan.node_ns, ["sysctl", "-n", key]).stdout.strip()
                for key in keys}
    served_from = access_log_offsets(lab)
    try:
        netns.sysctl(plan.node_ns, {keys[0]: str(CONNTRACK_ESTABLISHED_TIMEOUT), keys[1]: "0"})
        with invalid.installed():
            before = rule_packets(plan.node_ns, "filter", "KVIZ-FAULT", comment)
            truth["client"] = client_run(
                lab, faultkit_argv("keepalive-client", service.cluster_ip, port.port, IDLE_GAP,
                                   IDLE_REQUEST_TIMEOUT), IDLE_GAP + 2 * IDLE_REQUEST_TIMEOUT)
            dropped = rule_packets(plan.node_ns, "filter", "KVIZ-FAULT", comment) - before
    finally:
        netns.sysctl(plan.node_ns, original)
    reported = json_lines(truth["client"]["stdout"])
    truth.update(
        service=service_truth(service, port),
        conntrack={"established_timeout_s": CONNTRACK_ESTABLISHED_TIMEOUT, "tcp_loose": 0,
                   "restored": original},
        invalid_rule={**invalid.truth(), "comment": comment, "dropped": dropped},
        idle_s=IDLE_GAP, connection=reported[-1] if reported else None,
        served=served_since(lab, served_from),
    )


def idle_reset_after(lab: Lab, truth: dict) -> None:
    """The client's reset was dropped too, so the backend still holds the kept-alive
    connection (nginx: for an hour): forget it, in whichever backend served it."""
    port = (truth.get("connection") or {}).get("local_port")
    forgotten = []
    if port:
        for backend in lab.plan.backends:
            forgotten += forget_sockets(lab.plan.pod_ns(backend), "dst", lab.plan.client.ip,
                                        "and", "dport", "=", f":{port}")
    truth["afterwards"] = {"forgotten": forgotten}


MAIL_UPSTREAM_PORT = 2525  # the real (banner) server, on the pod's loopback
GREETING_WAIT = 3.0


def server_first_stall(lab: Lab, truth: dict) -> None:
    """A server-first protocol behind a protocol-sniffing proxy: the client connects to the
    mail Service's port 25 and waits for the greeting; the proxy in the backend pod waits for
    the client's first bytes to tell the protocol before it even connects to the mail server.
    Both wait until the client gives up (the classic sidecar-meets-SMTP/MySQL hang)."""
    plan = lab.plan
    service = MAIL_SERVICE
    port = service.ports[0]
    backend = plan.pod(service.backends[0])
    rules = kube_proxy_service(lab, service)
    directory = workloads.pod_dir(lab.state_dir, backend)
    banner_log = directory / "fault-banner-server.log"
    proxy_log = directory / "fault-sniffing-proxy.log"
    offsets = {path: log_offset(path) for path in (banner_log, proxy_log)}
    banner_argv = faultkit_argv("banner-server", "127.0.0.1", MAIL_UPSTREAM_PORT)
    proxy_argv = faultkit_argv("sniffing-proxy", backend.ip, port.target_port, "127.0.0.1",
                               MAIL_UPSTREAM_PORT)
    with (stand_in(lab, backend.name, banner_argv, banner_log, MAIL_UPSTREAM_PORT),
          stand_in(lab, backend.name, proxy_argv, proxy_log, port.target_port),
          rules.installed()):
        truth["client"] = client_run(
            lab, faultkit_argv("greeting-client", service.cluster_ip, port.port, GREETING_WAIT),
            GREETING_WAIT + 2)
        # The proxy notices the client leaving a moment later: wait for its line, bounded.
        netns.wait_until(lambda: "before speaking" in "\n".join(
            log_lines_since(proxy_log, offsets[proxy_log])), 2.0)
    reported = json_lines(truth["client"]["stdout"])
    truth.update(
        service=service_truth(service, port),
        server={**pod_truth(lab, backend.name), "port": port.target_port,
                "protocol": "SMTP", "greeting_sent_first": True,
                "upstream": f"127.0.0.1:{MAIL_UPSTREAM_PORT}"},
        proxy={"process": "faultkit sniffing-proxy (waits for the client's first bytes)",
               "log": json_lines("\n".join(log_lines_since(proxy_log, offsets[proxy_log])))},
        banner_server={"log": json_lines("\n".join(log_lines_since(banner_log,
                                                                   offsets[banner_log])))},
        connection=reported[-1] if reported else None,
    )


def mtu_blackhole_after(lab: Lab, truth: dict) -> None:
    """The backend's half of the download outlives the stand-in (LAST-ACK, its unsent bytes
    resent for minutes) and the client's sits in FIN-WAIT-2: forget both, or their packets
    land in the next recording."""
    plan = lab.plan
    backend = plan.backends[1]
    truth["afterwards"] = {"forgotten": [
        *forget_sockets(plan.pod_ns(backend), "dst", plan.client.ip, "and", "sport", "=",
                        f":{MTU_SERVER_PORT}"),
        *forget_sockets(plan.pod_ns(plan.client), "dst", backend.ip, "and", "dport", "=",
                        f":{MTU_SERVER_PORT}")]}


FAULTS = {
    f.name: f for f in (
        Fault("fault-drop-after-dnat", "a NetworkPolicy-style drop of the SYN to the backend "
              "kube-proxy's DNAT chose (pinned to nginx-a)", drop_after_dnat),
        Fault("fault-no-endpoints", "a Service without endpoints: kube-proxy's REJECT "
              "(icmp-port-unreachable)", no_endpoints, (NO_ENDPOINTS_SERVICE,)),
        Fault("fault-search-expansion", f"curl http://{EXTERNAL_NAME} with ndots:5: the "
              "search list's NXDOMAINs before the answer", search_expansion),
        Fault("fault-dns-lost", "one DNS query lost after the DNAT to the DNS pod; glibc "
              f"retries after {DNS_RESOLVER_TIMEOUT} s", dns_lost),
        Fault("fault-closed-port", "a Service whose endpoint has nothing on the target port: "
              "RST", closed_port, (CLOSED_PORT_SERVICE,)),
        Fault("fault-plaintext-to-mtls", "plain HTTP to a sidecar's mTLS-only port 15006",
              plaintext_to_mtls),
        Fault("fault-tls-no-client-cert", "TLS 1.2 and TLS 1.3 without a client certificate "
              "to the mTLS-only port", tls_no_client_cert),
        Fault("fault-mtu-blackhole", "a path MTU black hole: full-size segments from a backend "
              "vanish, small responses pass", mtu_blackhole, after=mtu_blackhole_after),
        Fault("fault-listen-overflow", "a server's accept queue overflows (listen(1), no "
              "accept()): ACKs dropped, SYN-ACKs resent", listen_overflow,
              after=listen_overflow_after),
        Fault("fault-injected-reset", "a reset forged by the node (iptables REJECT "
              "--reject-with tcp-reset) in nginx-a's name", injected_reset,
              after=injected_reset_after),
        Fault("fault-hairpin", "a pod calling its own Service: DNAT back to itself, without "
              "hairpin mode, without masquerade, and with both", hairpin, (HAIRPIN_SERVICE,)),
        Fault("fault-idle-reset", "a keep-alive connection idle longer than the node's "
              "conntrack timeout: the next request is dropped", idle_reset,
              after=idle_reset_after),
        Fault("fault-server-first-stall", "SMTP behind a protocol-sniffing proxy: client and "
              "proxy each wait for the other to speak first", server_first_stall,
              (MAIL_SERVICE,)),
    )
}


def fault(name: str) -> Fault:
    try:
        return FAULTS[name]
    except KeyError:
        raise LabError(f"unknown fault {name!r} (choose from {', '.join(FAULTS)})") from None


def run(lab: Lab, name: str, out_dir: Path) -> list[Path]:
    """Run fault `name`; writes its two captures, meta files, inventory.json and truth.json.

    truth.json (schema kviz.lab-fault-truth/1) always holds: schema, fault, description,
    lab {prefix, mode, node}, client_pod, captures {pod, node}, started_at, finished_at,
    removed (the fault was taken out again) and `client` (the failing command: argv, exit_code,
    timed_out, stdout, stderr, elapsed_s, started_at; where a fault runs several, the last, all
    of them under their own keys); each fault adds its own evidence.
    """
    chosen = fault(name)
    truth: dict = {"schema": TRUTH_SCHEMA, "fault": chosen.name,
                   "description": chosen.description, "started_at": _now()}

    def after(lab: Lab) -> None:
        if chosen.after is not None:
            chosen.after(lab, truth)

    return _record(lab, chosen.name, chosen.description, lambda lab: chosen.drive(lab, truth),
                   after, chosen.services, Path(out_dir), truth)


def run_together(lab: Lab, names: list[str], out_dir: Path, stem: str) -> list[Path]:
    """Several faults, or one several times, one after the other during one recording (files
    `STEM-pod.pcapng`, `STEM-node.pcapng`): a capture with several causes, each with its own
    evidence. truth.json holds what `run` writes, with `fault` the stem, `faults` the names,
    and `runs`: each fault's own truth, in order (`client` is the last one's)."""
    chosen = [fault(name) for name in names]
    runs: list[dict] = []
    description = " then ".join(f.description for f in chosen)
    truth: dict = {"schema": TRUTH_SCHEMA, "fault": stem, "faults": list(names),
                   "description": description, "started_at": _now(), "runs": runs}

    def drive(lab: Lab) -> None:
        for one in chosen:
            runs.append({"fault": one.name})
            one.drive(lab, runs[-1])
        truth["client"] = runs[-1].get("client")

    def after(lab: Lab) -> None:
        for one, its_truth in zip(chosen, runs, strict=False):
            if one.after is not None:
                one.after(lab, its_truth)

    services = tuple(dict.fromkeys(s for f in chosen for s in f.services))
    return _record(lab, stem, description, drive, after, services, Path(out_dir), truth)


def _record(lab: Lab, stem: str, description: str, drive: Callable[[Lab], None],
            after: Callable[[Lab], None], services: tuple[Service, ...], out_dir: Path,
            truth: dict) -> list[Path]:
    plan = lab.plan
    vantages = (Vantage(f"{stem}-pod.pcapng", "pod", "eth0", plan.client.name),
                Vantage(f"{stem}-node.pcapng", "node", "any"))
    scenario = Scenario(stem, description, False, vantages, drive)
    with lab.locked():
        try:
            written = scenarios.run(lab, scenario, out_dir)
        finally:
            after(lab)
        inventory_path = out_dir / "inventory.json"
        if services:
            document = json.loads(inventory_path.read_text())
            add_services(document, services, lab)
            inventory_path.write_text(json.dumps(document, indent=2) + "\n")
        state = lab.read_state() or {}
    client = plan.client
    truth = {
        **truth, "finished_at": _now(), "removed": True,
        "lab": {"prefix": lab.prefix, "mode": state.get("mode"), "node": plan.node_name},
        "client_pod": {"namespace": client.namespace, "name": client.name, "ip": client.ip},
        "captures": {"pod": vantages[0].file_name, "node": vantages[1].file_name},
    }
    truth_path = out_dir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=2) + "\n")
    return [*written, truth_path]


def add_services(document: dict, services: tuple[Service, ...], lab: Lab) -> None:
    """Add a fault's Services (and their endpoints, maybe none) to an inventory document."""
    for service in services:
        document["services"].append({
            "namespace": service.namespace, "name": service.name, "type": "ClusterIP",
            "cluster_ips": [service.cluster_ip],
            "ports": [{"name": p.name, "port": p.port, "target_port": p.target_port,
                       "protocol": p.protocol} for p in service.ports]})
        document["endpoints"].append({
            "namespace": service.namespace, "service": service.name,
            "addresses": [lab.plan.pod(name).ip for name in service.backends],
            "ports": [{"name": p.name, "port": p.target_port, "protocol": p.protocol}
                      for p in service.ports]})
