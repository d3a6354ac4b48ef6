"""A real kube-proxy-style DNAT to record: a client namespace curls a "Service VIP" that a
router namespace DNATs (iptables, PREROUTING) to an HTTP server in a third namespace.

One recording gives three vantage points: the client's eth0, the server's eth0, and the router
with `-i any` (Linux cooked v2, interface indexes kept, names alongside).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from captures.analysis import CaptureFile
from tests.support.netns import (
    capture,
    http_server,
    interface_indexes,
    namespaces,
    require_netns,
    run,
)

VIP, SERVER, PORT = "10.96.7.10", "10.2.0.2", 8080


@dataclass
class DnatRecording:
    client: Path
    server: Path
    router: Path
    router_interfaces: dict[int, str]

    def router_file(self) -> CaptureFile:
        return CaptureFile(self.router, "router", self.router_interfaces)


def record_dnat(out: Path, tag: str) -> DnatRecording:
    """Build the three namespaces (named after `tag`), record one request, remove them."""
    require_netns()
    tag = f"{tag}{os.getpid() % 100000}"
    client, router, server = f"{tag}c", f"{tag}r", f"{tag}s"
    with namespaces(client, router, server):
        run("ip", "-n", router, "link", "add", "r0", "type", "veth", "peer", "name", "eth0",
            "netns", client)
        run("ip", "-n", router, "link", "add", "r1", "type", "veth", "peer", "name", "eth0",
            "netns", server)
        for ns, dev, addr in ((client, "eth0", "10.1.0.2/24"), (router, "r0", "10.1.0.1/24"),
                              (router, "r1", "10.2.0.1/24"), (server, "eth0", "10.2.0.2/24")):
            run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", client, "route", "add", "default", "via", "10.1.0.1")
        run("ip", "-n", server, "route", "add", "default", "via", "10.2.0.1")
        run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", ns=router)
        run("iptables", "-t", "nat", "-A", "PREROUTING", "-d", VIP, "-p", "tcp", "--dport", "80",
            "-j", "DNAT", "--to-destination", f"{SERVER}:{PORT}", ns=router)
        with http_server(server, SERVER, PORT):
            names = {int(k): v for k, v in interface_indexes(router).items()}
            with capture(client, "eth0", out / "client.pcapng"), \
                    capture(server, "eth0", out / "server.pcapng"), \
                    capture(router, "any", out / "router.pcapng", linktype="LINUX_SLL2"):
                run("curl", "-sS", "-o", "/dev/null", "-m", "5", f"http://{VIP}/", ns=client)
    return DnatRecording(out / "client.pcapng", out / "server.pcapng", out / "router.pcapng",
                         names)
