"""Records the fixtures the fake API server plays back: real tcpdump output from lab pods.

Run as root with the lab's tools (scripts/setup.sh installs them):

    .venv/bin/python -m tests.k8s.record_fixtures

Each pod is captured the way kviz's debug container captures it, `tcpdump -i any -y LINUX_SLL2
-U -w -` (classic pcap, cooked v2 headers), so the bytes the tests stream are what a cluster
would send. Traffic: the client pod fetches http://nginx/ (DNS, Service DNAT) and nginx-a
fetches from nginx-b directly (pod to pod, seen at both pods: the Service capture test folds
those copies). The lab gets its own prefix and is always torn down.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from captures.lab import Lab, netns

FIXTURES = Path(__file__).with_name("fixtures")
PREFIX = "kvk8srec"
PODS = ("ubuntu", "nginx-a", "nginx-b")


def tcpdump(ns: str, out: Path) -> subprocess.Popen:
    argv = ["tcpdump", "-i", "any", "-y", "LINUX_SLL2", "-U", "--immediate-mode", "-s", "262144",
            "-Z", "root", "-w", str(out)]
    process = subprocess.Popen(netns.in_ns(ns, argv), stderr=subprocess.PIPE, text=True)
    # tcpdump says "listening on ..." once it captures; traffic before that would be lost.
    for line in process.stderr:
        if "listening" in line:
            return process
    process.wait(5)
    raise RuntimeError(f"tcpdump in {ns} did not start")


def main() -> None:
    FIXTURES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        lab = Lab(PREFIX, Path(root) / "lab")
        captures: dict[str, subprocess.Popen] = {}
        try:
            lab.up(sidecar_enabled=False)
            plan = lab.plan
            for name in PODS:
                netns.flush_neighbours(plan.pod_ns(plan.pod(name)))
            time.sleep(0.3)
            captures = {}
            for name in PODS:
                captures[name] = tcpdump(plan.pod_ns(plan.pod(name)), FIXTURES / f"{name}.pcap")
            curl = ["curl", "-sS", "--max-time", "5", "-o", "/dev/null"]
            netns.ns_run(plan.pod_ns(plan.client), [*curl, "http://nginx/"])
            backend_b = plan.pod("nginx-b").ip
            netns.ns_run(plan.pod_ns(plan.pod("nginx-a")), [*curl, f"http://{backend_b}/"])
            time.sleep(0.3)
            for process in captures.values():
                process.send_signal(signal.SIGINT)
            for process in captures.values():
                process.wait(10)
            interfaces = {name: netns.links(plan.pod_ns(plan.pod(name))) for name in PODS}
            (FIXTURES / "interfaces.json").write_text(json.dumps(interfaces, indent=2) + "\n")
        finally:
            for process in captures.values():
                if process.poll() is None:
                    process.kill()
            lab.down()
    for name in PODS:
        print(name, (FIXTURES / f"{name}.pcap").stat().st_size, "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
