"""Healthy and failing lab runs of the same request, for the diff tests: `healthy` is the
fault scenarios' own request (curl http://nginx/ from the client pod, recorded on the pod's
eth0 and the node) with kube-proxy's DNAT pinned to nginx-b, so that its DNAT target is known;
the faults are captures.lab.faults' own runs (fault-drop-after-dnat pins to nginx-a)."""

from __future__ import annotations

from pathlib import Path

from captures.lab import faults, kubeproxy

HEALTHY = "healthy-nginx-b"


def _healthy(lab, truth: dict) -> None:
    plan = lab.plan
    service = plan.service("nginx")
    port = service.ports[0]
    backend = plan.backends[1]
    endpoint = f"{backend.ip}:{port.target_port}"
    svc, sep = kubeproxy.svc_chain(service, port), kubeproxy.sep_chain(service, port, endpoint)
    pin = faults.Rules(plan.node_ns, "nat", (), (
        f'-I {svc} 1 -s {plan.client.ip}/32 -m comment --comment "kviz test: pin" -j {sep}',))
    with pin.installed():
        truth["client"] = faults.client_run(lab, faults.curl_argv("http://nginx/", 4), 4)
    truth["backend"] = {"name": backend.name, "ip": backend.ip, "port": port.target_port}
    truth["service"] = faults.service_truth(service, port)


def record_healthy(lab, out_dir: Path) -> list[Path]:
    truth: dict = {"schema": faults.TRUTH_SCHEMA, "fault": HEALTHY,
                   "description": "curl http://nginx/, pinned to nginx-b", "started_at": ""}
    return faults._record(lab, HEALTHY, truth["description"], lambda lab: _healthy(lab, truth),
                          lambda lab: None, (), Path(out_dir), truth)


def files(out_dir: Path, stem: str) -> list[Path]:
    return [out_dir / f"{stem}-pod.pcapng", out_dir / f"{stem}-node.pcapng"]


def record_runs(out_dir: Path, prefix: str, faults_wanted: tuple[str, ...]) -> Path:
    """A lab of its own (skipped where none can run), `healthy` and each fault recorded into
    `out_dir/<stem>/` (and `healthy-mtls` with fault-tls-no-client-cert), the lab always
    taken down."""
    import pytest

    from captures.lab import Lab
    from tests.lab.conftest import lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    lab = Lab(prefix, out_dir / "lab")
    try:
        lab.up(sidecar_enabled=False)
        record_healthy(lab, out_dir / HEALTHY)
        if "fault-tls-no-client-cert" in faults_wanted:
            record_healthy_mtls(lab, out_dir / HEALTHY_MTLS)
        for name in faults_wanted:
            faults.run(lab, name, out_dir / name)
    finally:
        lab.down()
    return out_dir


def analysed(out_dir: Path, stem: str) -> dict:
    """The sequence model of one recorded run (its pod and node captures together)."""
    import json

    from captures.analysis import CaptureFile, analyze_files

    folder = out_dir / stem
    inventory = json.loads((folder / "inventory.json").read_text())
    model = analyze_files([CaptureFile.from_path(p) for p in files(folder, stem)], inventory)
    try:
        return model.to_dict()
    finally:
        model.close()


def store_run(owner, out_dir: Path, stem: str, name: str | None = None):
    """A completed dashboard capture of one recorded run, as a path capture is stored: one
    StoredFile per vantage point (with its meta), the inventory on the row, analysed by the
    runner's own `analyse`."""
    import json

    from captures.jobs import runner
    from captures.models import Capture, Status
    from tests.support.stored import store_copy

    folder = out_dir / stem
    capture = Capture.objects.create(
        name=name or stem, owner=owner, target_kind="lab",
        target_spec={"target": "pod/default/ubuntu"}, limit_seconds=60, limit_packets=100000,
        limit_bytes=10**8, status=Status.RUNNING, bpf_filter="tcp or udp",
        inventory=json.loads((folder / "inventory.json").read_text()))
    for position, pcap in enumerate(files(folder, stem)):
        meta = json.loads(pcap.with_name(pcap.name + ".meta.json").read_text())
        store_copy(capture, pcap, position=position, vantage=meta["vantage"],
                   interfaces=meta.get("interfaces") or {})
    result = runner.analyse(capture)
    Capture.objects.filter(id=capture.id).update(status=Status.COMPLETED, **result)
    capture.refresh_from_db()
    return capture


HEALTHY_MTLS = "healthy-mtls"


def _healthy_mtls(lab, truth: dict) -> None:
    """fault-tls-no-client-cert's exchange done right: the same stand-in server on the
    backend's mTLS-only port, the same SNI and ALPN, TLS 1.2 then TLS 1.3, but the client
    presents its certificate (the lab's CA issued one to every pod)."""
    from captures.lab import workloads
    from captures.lab.plan import INBOUND_PORT

    plan = lab.plan
    backend = plan.backends[0]
    key = f"{backend.name}/meshproxy-inbound"
    pki_dir = lab.state_dir / "pki"
    log_path = workloads.pod_dir(lab.state_dir, backend) / "healthy-s_server.log"
    alpn = "istio-peer-exchange,istio-http/1.1,istio"
    nginx = plan.service("nginx")
    sni = f"outbound_.{nginx.ports[0].port}_._.{nginx.fqdn}"
    server_argv = [
        "openssl", "s_server", "-4", "-accept", str(INBOUND_PORT), "-www", "-alpn", alpn,
        "-cert", str(pki_dir / f"{backend.name}.crt"), "-key", str(pki_dir / f"{backend.name}.key"),
        "-CAfile", str(pki_dir / "ca.crt"), "-Verify", "1", "-verify_return_error",
    ]
    attempts = truth.setdefault("attempts", [])
    with faults.swapped_process(
            lab, key, lambda: faults.spawn_ready(lab, backend.name, server_argv, log_path,
                                                 INBOUND_PORT),
            lambda: workloads.start_inbound(plan, lab.state_dir, backend)):
        for flag in ("-tls1_2", "-tls1_3"):
            argv = ["openssl", "s_client", "-connect", f"{backend.ip}:{INBOUND_PORT}", flag,
                    "-servername", sni, "-alpn", alpn, "-CAfile", str(pki_dir / "ca.crt"),
                    "-cert", str(pki_dir / f"{plan.client.name}.crt"),
                    "-key", str(pki_dir / f"{plan.client.name}.key"), "-ign_eof"]
            attempts.append(faults.client_run(lab, argv, 5, input=faults.HTTP_REQUEST))


def record_healthy_mtls(lab, out_dir: Path) -> list[Path]:
    truth: dict = {"schema": faults.TRUTH_SCHEMA, "fault": HEALTHY_MTLS,
                   "description": "mutual TLS with a client certificate", "started_at": ""}
    return faults._record(lab, HEALTHY_MTLS, truth["description"],
                          lambda lab: _healthy_mtls(lab, truth), lambda lab: None, (),
                          Path(out_dir), truth)
