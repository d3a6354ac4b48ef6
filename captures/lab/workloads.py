"""The programs that run in the lab's pods: dnsmasq as kube-dns, nginx, the mesh proxies.

Each is started in its pod's namespace with `ip netns exec`, in the foreground (so the pid we
get is the program's), logging into the pod's state directory, and waited for until its port
is bound (bounded), so a scenario never races a server that is still starting.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from captures.lab import netns
from captures.lab.plan import (
    CLUSTER_DOMAIN,
    INBOUND_PORT,
    ISTIOD_PORT,
    OUTBOUND_PORT,
    PROXY_UID,
    LabPlan,
    Pod,
)

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "lab"
NGINX_TEMPLATE = DEPLOY_DIR / "nginx.conf.template"
MESHPROXY = DEPLOY_DIR / "meshproxy.py"
READY_TIMEOUT = 10.0


class WorkloadFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Started:
    name: str
    pid: int


def pod_dir(state_dir: Path, pod: Pod) -> Path:
    path = state_dir / "pods" / pod.name
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait_ready(name: str, process, port: int, proto: str, log_path: Path) -> Started:
    def ready() -> bool:
        return process.poll() is not None or netns.listening(process.pid, port, proto)

    if not netns.wait_until(ready, READY_TIMEOUT) or process.poll() is not None:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:] \
            if log_path.exists() else []
        raise WorkloadFailed(f"{name} did not start listening on {proto}/{port}: "
                             + (" | ".join(tail) or "no output"))
    return Started(name, process.pid)


def start_dns(plan: LabPlan, state_dir: Path) -> Started:
    pod = plan.pods_with_role("dns")[0]
    directory = pod_dir(state_dir, pod)
    argv = [
        "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--log-queries", "--pid-file=",
        "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces",
        f"--listen-address={pod.ip}", "--port=53", "--user=root",
        # Names under cluster.local that no Service owns get NXDOMAIN, like CoreDNS.
        f"--local=/{CLUSTER_DOMAIN}/",
        # Nothing leaves the lab: every other name is NXDOMAIN too.
        "--address=/#/",
        # host-record, not address=: a Service name then answers AAAA with NOERROR and no
        # records (as CoreDNS does for an IPv4 Service), where address= would say NXDOMAIN.
        *(f"--host-record={service.fqdn},{service.cluster_ip}" for service in plan.services),
    ]
    log_path = directory / "dnsmasq.log"
    process = netns.spawn(plan.pod_ns(pod), argv, log_path)
    return wait_ready(f"{pod.name}/dnsmasq", process, 53, "udp", log_path)


def start_nginx(plan: LabPlan, state_dir: Path, pod: Pod) -> Started:
    directory = pod_dir(state_dir, pod)
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / temp).mkdir(exist_ok=True)
    config = NGINX_TEMPLATE.read_text()
    for key, value in {"state": str(directory), "pod": pod.name}.items():
        config = config.replace("{{ " + key + " }}", value)
    config_path = directory / "nginx.conf"
    config_path.write_text(config)
    log_path = directory / "nginx.out"
    argv = ["nginx", "-c", str(config_path), "-p", str(directory), "-e",
            str(directory / "error.log")]
    process = netns.spawn(plan.pod_ns(pod), argv, log_path)
    return wait_ready(f"{pod.name}/nginx", process, 80, "tcp", log_path)


def access_log(state_dir: Path, pod: Pod) -> Path:
    return state_dir / "pods" / pod.name / "access.log"


def start_meshproxy(plan: LabPlan, state_dir: Path, pod: Pod, role: str, config: dict) -> Started:
    directory = pod_dir(state_dir, pod)
    config_path = directory / f"meshproxy-{role}.json"
    config_path.write_text(json.dumps({"mode": role, "uid": PROXY_UID, **config}, indent=2))
    log_path = directory / f"meshproxy-{role}.log"
    port = int(config["listen"].rsplit(":", 1)[1])
    # The venv's interpreter, started as root: the proxy drops to PROXY_UID once its keys are
    # loaded and its port is bound.
    process = netns.spawn(plan.pod_ns(pod), [sys.executable, str(MESHPROXY), str(config_path)],
                          log_path)
    return wait_ready(f"{pod.name}/meshproxy-{role}", process, port, "tcp", log_path)


def identity_config(pki_dir: Path, name: str) -> dict:
    return {"ca": str(pki_dir / "ca.crt"), "cert": str(pki_dir / f"{name}.crt"),
            "key": str(pki_dir / f"{name}.key")}


def start_inbound(plan: LabPlan, state_dir: Path, pod: Pod) -> Started:
    config = {"listen": f"0.0.0.0:{INBOUND_PORT}", "app": "127.0.0.1:80",
              "require_client_cert": True, **identity_config(state_dir / "pki", pod.name)}
    return start_meshproxy(plan, state_dir, pod, "inbound", config)


def start_istiod(plan: LabPlan, state_dir: Path) -> Started:
    pod = plan.pods_with_role("istiod")[0]
    config = {"listen": f"0.0.0.0:{ISTIOD_PORT}", "alpn": ["h2"],
              **identity_config(state_dir / "pki", pod.name)}
    return start_meshproxy(plan, state_dir, pod, "istiod", config)


def start_outbound(plan: LabPlan, state_dir: Path) -> Started:
    pod = plan.client
    nginx = plan.service("nginx")
    port = nginx.ports[0]
    services = {
        f"{nginx.cluster_ip}:{port.port}": {
            # Istio's outbound cluster name as SNI: outbound_.PORT_.SUBSET_.FQDN
            "sni": f"outbound_.{port.port}_._.{nginx.fqdn}",
            "endpoints": [f"{plan.pod(name).ip}:{INBOUND_PORT}" for name in nginx.backends],
        }
    }
    istiod = plan.service("istiod")
    config = {
        "listen": f"127.0.0.1:{OUTBOUND_PORT}", "services": services,
        "istiod": f"{istiod.cluster_ip}:{ISTIOD_PORT}",
        "node_id": f"sidecar~{pod.ip}~{pod.name}.{pod.namespace}~{pod.namespace}.svc."
                   f"{CLUSTER_DOMAIN}",
        **identity_config(state_dir / "pki", pod.name),
    }
    return start_meshproxy(plan, state_dir, pod, "outbound", config)
