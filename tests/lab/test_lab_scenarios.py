"""The lab's scenarios, judged by what the analysis engine reads in their fresh captures.

One lab (bridge mode) serves the whole module: the three scenarios run once into temporary
directories, each test asserts on one view, and the last tests take the lab down.
Which backend served a request is read from the nginx access logs, never from the capture, so
the DNAT the analysis reports is checked against what really happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from captures.analysis import CaptureFile, analyze_files
from captures.lab import netns, scenarios
from tests.lab.conftest import requires_lab

pytestmark = requires_lab

REPO = Path(__file__).resolve().parents[2]


def access_log_lines(lab) -> dict[str, list[str]]:
    logs = {}
    for pod in lab.plan.backends:
        path = lab.access_log(pod.name)
        logs[pod.name] = path.read_text().splitlines() if path.exists() else []
    return logs


def new_requests(before: dict, after: dict) -> dict[str, list[str]]:
    return {pod: after[pod][len(before[pod]):] for pod in after}


class Run:
    def __init__(self, lab, name: str, out_dir: Path):
        before = access_log_lines(lab)
        self.paths = scenarios.run(lab, name, out_dir)
        self.served = new_requests(before, access_log_lines(lab))
        self.out_dir = out_dir
        self.inventory = json.loads((out_dir / "inventory.json").read_text())

    def analyze(self, *file_names: str) -> dict:
        files = [CaptureFile.from_path(self.out_dir / name) for name in file_names]
        return analyze_files(files, inventory=self.inventory).to_dict()


@pytest.fixture(scope="module")
def runs(lab, tmp_path_factory) -> dict[str, Run]:
    return {name: Run(lab, name, tmp_path_factory.mktemp(name)) for name in ("pod", "node", "mesh")}


def annotations(doc: dict, kind: str) -> list[dict]:
    return [a for a in doc["annotations"] if a["kind"] == kind]


def vip(lab, service: str = "nginx") -> str:
    return lab.plan.service(service).cluster_ip


# -- what the scenarios write ------------------------------------------------------------------


def test_it_writes_captures_meta_files_and_an_inventory(lab, runs):
    expected = {"pod": ["pod.pcapng"], "node": ["node.pcapng"],
                "mesh": ["mesh-node.pcapng", "mesh-pod.pcapng"]}
    for name, files in expected.items():
        run = runs[name]
        written = [p.name for p in run.paths]
        for file_name in files:
            assert file_name in written and f"{file_name}.meta.json" in written
            meta = json.loads((run.out_dir / f"{file_name}.meta.json").read_text())
            assert meta["schema"] == "kviz.capture-meta/1"
            assert meta["vantage"] in (f"node/{lab.plan.node_name}", "pod/default/ubuntu")
            assert "eth0" in meta["interfaces"].values()
        assert written[-1] == "inventory.json"
    node_meta = json.loads((runs["node"].out_dir / "node.pcapng.meta.json").read_text())
    assert {"cbr0", lab.plan.client.veth} <= set(node_meta["interfaces"].values())
    inventory = runs["node"].inventory
    assert inventory["schema"] == "kviz.inventory/1"
    assert {p["name"] for p in inventory["pods"]} >= {"ubuntu", "nginx-a", "nginx-b"}
    assert {s["name"]: s["cluster_ips"] for s in inventory["services"]}["nginx"] == [vip(lab)]


# -- pod view: DNS, handshake, HEAD, FIN; only the VIP ----------------------------------------


def test_it_shows_the_pod_view_by_service_name_through_the_vip(lab, runs):
    doc = runs["pod"].analyze("pod.pcapng")
    answers = [d for d in doc["dns"]
               if d["name"] == "nginx.default.svc.cluster.local" and d["type"] == "A"]
    assert answers and vip(lab) in answers[0]["answers"]
    assert answers[0]["rcode"] == "NOERROR"

    to_vip = [c for c in doc["connections"] if c["server"] == f"{vip(lab)}:80"]
    assert len(to_vip) == 1
    connection = to_vip[0]
    assert connection["client"].startswith(f"{lab.plan.client.ip}:")
    assert connection["handshake"] == "complete"
    assert connection["closed"] == "fin"

    heads = [h for h in doc["http"] if h["connection"] == connection["id"]]
    assert [(h["method"], h["status"]) for h in heads] == [("HEAD", 200)]
    assert annotations(doc, "dnat") == []
    backend_ips = {pod.ip for pod in lab.plan.backends}
    seen = {m[key].rsplit(":", 1)[0] for m in doc["messages"] for key in ("src", "dst")}
    assert not seen & backend_ips, "the pod's own eth0 never sees a backend pod IP"


# -- node view: the DNAT, where it happens ----------------------------------------------------


def test_it_shows_the_node_rewriting_the_vip_to_the_backend_that_served(lab, runs):
    run = runs["node"]
    served = [pod for pod, lines in run.served.items() for _ in lines]
    assert len(served) == 1, run.served
    backend_ip = lab.plan.pod(served[0]).ip

    doc = run.analyze("node.pcapng")
    dnats = [a for a in annotations(doc, "dnat") if a["before"] == f"{vip(lab)}:80"]
    assert dnats, annotations(doc, "dnat")
    dnat = dnats[0]
    assert dnat["after"] == f"{backend_ip}:80"
    # What this kernel does (bridge + br_netfilter, neighbour caches flushed): the SYN enters
    # on the client's veth with the VIP, is DNATed in the bridge's PREROUTING hook, waits for
    # ARP on the routed path and leaves through cbr0 with the pod IP; later packets of the
    # connection are bridged veth → veth without crossing cbr0.
    assert dnat["where"] == f"{lab.plan.client.veth} → cbr0"
    connection = next(c for c in doc["connections"] if c["id"] == dnat["connection"])
    assert connection["server_after_nat"] == f"{backend_ip}:80"


def test_it_names_node_interfaces_from_the_inventory_when_the_capture_has_no_meta(lab, runs):
    run = runs["node"]
    bare = CaptureFile(run.out_dir / "node.pcapng")  # no .meta.json read: indexes only
    doc = analyze_files([bare], inventory=run.inventory).to_dict()
    interfaces = {hop["interface"] for m in doc["messages"] for hop in m["hops"]}
    assert {"cbr0", lab.plan.client.veth} <= interfaces
    assert not [name for name in interfaces if name.startswith("if")]
    without = analyze_files([bare]).to_dict()
    assert all(hop["interface"].startswith("if") for m in without["messages"]
               for hop in m["hops"])


def test_it_shows_each_node_packet_on_several_interfaces(lab, runs):
    doc = runs["node"].analyze("node.pcapng")
    syn = next(m for m in doc["messages"] if m["dst"] == f"{vip(lab)}:80" and m["flags"] == "S")
    interfaces = [hop["interface"] for hop in syn["hops"]]
    assert interfaces[0] == lab.plan.client.veth
    assert len(interfaces) >= 2


# -- mesh view: sidecar, mTLS, pooling ---------------------------------------------------------


def test_it_reaches_both_backends_through_the_sidecar(lab, runs):
    served = runs["mesh"].served
    assert sum(len(lines) for lines in served.values()) == scenarios.MESH_REQUESTS
    assert all(served[pod.name] for pod in lab.plan.backends), served


def test_it_keeps_the_nginx_vip_off_the_node_wire_in_the_mesh(lab, runs):
    doc = runs["mesh"].analyze("mesh-node.pcapng")
    assert not [m for m in doc["messages"] if m["dst"].startswith(f"{vip(lab)}:")]


def test_it_shows_the_sidecar_redirect_in_the_client_pod(lab, runs):
    doc = runs["mesh"].analyze("mesh-pod.pcapng")
    redirects = [a for a in annotations(doc, "sidecar")
                 if a["port"] == 15001 and a["direction"] == "outbound"]
    assert len(redirects) >= scenarios.MESH_REQUESTS // 2


def test_it_shows_mutual_tls_to_pod_ips_on_15006_kept_open(lab, runs):
    doc = runs["mesh"].analyze("mesh-node.pcapng", "mesh-pod.pcapng")
    backend_ips = {pod.ip for pod in lab.plan.backends}
    upstream = [c for c in doc["connections"] if c["server"].endswith(":15006")]
    assert {c["server"].rsplit(":", 1)[0] for c in upstream} == backend_ips
    assert all(c["closed"] == "open" for c in upstream), upstream
    mtls = {a["connection"]: a for a in annotations(doc, "mtls")}
    for connection in upstream:
        evidence = mtls[connection["id"]]["evidence"]
        assert "client-certificate" in evidence and "istio-sni" in evidence


def test_it_shows_the_upstream_connections_pooled(lab, runs):
    doc = runs["mesh"].analyze("mesh-node.pcapng", "mesh-pod.pcapng")
    upstream_ids = {c["id"] for c in doc["connections"] if c["server"].endswith(":15006")}
    pooled = [a for a in annotations(doc, "pooled") if a["connection"] in upstream_ids]
    assert pooled, annotations(doc, "pooled")
    assert sum(a["requests"] for a in pooled) == scenarios.MESH_REQUESTS


# -- capture targets (the dashboard's adapter) -------------------------------------------------


@pytest.fixture
def adapter_settings(lab, lab_root, settings):
    settings.DATA_DIR = lab_root.parent
    settings.KVIZ_LAB_PREFIX = lab.prefix


def test_it_lists_the_pods_and_the_node_as_targets(lab, adapter_settings):
    from captures.sources import lab as source

    targets = {t.id: t for t in source.list_targets()}
    assert targets[f"node/{lab.plan.node_name}"].netns == lab.plan.node_ns
    assert targets["pod/default/ubuntu"].netns == lab.plan.pod_ns(lab.plan.client)
    assert {"pod/default/nginx-a", "pod/default/nginx-b"} <= set(targets)


def test_it_streams_pcapng_from_a_pod_target(lab, adapter_settings, tmp_path):
    from captures.sources import lab as source

    capture = source.start_capture("pod/default/ubuntu")
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(
        lambda: capture.process.stdout.read(4096), b"")))
    reader.start()
    try:
        source.run_traffic("pod")
    finally:
        capture.stop()
        reader.join(timeout=10)
    data = b"".join(chunks)
    assert data[:4] == b"\x0a\x0d\x0d\x0a", "a pcapng section header block"
    streamed = tmp_path / "stream.pcapng"
    streamed.write_bytes(data)
    doc = analyze_files([CaptureFile(str(streamed))], inventory=None).to_dict()
    assert any(c["server"] == f"{vip(lab)}:80" for c in doc["connections"])


# -- the command line and the lab's lifecycle (these run last) --------------------------------


def test_it_reports_status_from_the_command_line(lab, lab_root):
    result = subprocess.run(
        [sys.executable, "manage.py", "kviz", "lab", "status", "--prefix", lab.prefix],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "KVIZ_DATA_DIR": str(lab_root.parent)},
    )
    assert result.returncode == 0, result.stderr
    assert f"lab {lab.prefix}: up" in result.stdout


def test_it_is_idempotent_when_brought_up_twice(lab):
    before = lab.status()["processes"]
    lab.up(sidecar_enabled=False)
    after = lab.status()
    assert after["status"] == "up"
    assert {k: v["pid"] for k, v in after["processes"].items()} == {
        k: v["pid"] for k, v in before.items()}


def test_it_leaves_nothing_behind_when_taken_down_twice(lab):
    removed = lab.down()
    assert lab.plan.node_ns in removed
    left = [ns for ns in netns.list_namespaces() if ns.startswith(f"{lab.prefix}-")]
    assert left == []
    assert not any(Path("/etc/netns", ns).exists() for ns in lab.plan.namespaces)
    assert not lab.state_dir.exists()
    assert lab.down() == []
    assert lab.status()["status"] == "down"
