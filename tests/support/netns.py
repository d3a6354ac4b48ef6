"""Throwaway network namespaces for tests that need real traffic.

Everything runs inside namespaces this module creates, named with the test's own prefix, and
is removed on exit even when the test fails. Nothing touches the host's own namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest


def require_netns() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    for tool in ("ip", "dumpcap", "iptables", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    probe = f"kvizprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=10)
    if made.returncode != 0:
        pytest.skip(f"cannot create network namespaces: {made.stderr.decode().strip()}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)


def run(*argv: str, ns: str | None = None, timeout: float = 20) -> str:
    command = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout


def interface_indexes(ns: str) -> dict[str, str]:
    links = json.loads(run("ip", "-j", "link", "show", ns=ns))
    return {str(link["ifindex"]): link["ifname"] for link in links}


@contextmanager
def namespaces(*names: str):
    created = []
    try:
        for name in names:
            run("ip", "netns", "add", name)
            created.append(name)
            run("ip", "link", "set", "lo", "up", ns=name)
        yield
    finally:
        for name in reversed(created):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                  text=True, timeout=10).stdout.split()
            for pid in pids:
                with suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@contextmanager
def capture(ns: str, interface: str, path: Path, linktype: str | None = None):
    """dumpcap in `ns`, promiscuous mode off, until the block ends (then flushed and closed)."""
    argv = ["ip", "netns", "exec", ns, "dumpcap", "-q", "-p", "-i", interface, "-w", str(path)]
    if linktype:
        argv[-2:-2] = ["-y", linktype]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        # dumpcap writes the pcapng header once it is capturing.
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_size == 0):
            if process.poll() is not None:
                raise RuntimeError(f"dumpcap exited: {process.stderr.read().decode()}")
            time.sleep(0.05)
        time.sleep(0.3)
        yield path
        time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextmanager
def http_server(ns: str, address: str, port: int, directory: Path | None = None):
    """Python's http.server in `ns` on address:port, listening when the block starts; it
    serves `directory` (default: the current one)."""
    argv = ["ip", "netns", "exec", ns, "python3", "-m", "http.server", str(port), "--bind",
            address]
    if directory is not None:
        argv += ["--directory", str(directory)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):  # until it listens, at most 5 s
            if f":{port}" in run("ss", "-ltn", ns=ns):
                break
            time.sleep(0.1)
        yield
    finally:
        process.kill()
        process.wait(timeout=5)


@contextmanager
def paired(tag: str, client_ip: str, server_ip: str):
    """Two namespaces joined by a veth pair on one /24: yields (client, server) namespace
    names; the client's end is c0, the server's s0."""
    client, server = f"kvqc{tag}", f"kvqs{tag}"
    with namespaces(client, server):
        run("ip", "link", "add", "c0", "netns", client, "type", "veth", "peer", "name", "s0",
            "netns", server)
        run("ip", "addr", "add", f"{client_ip}/24", "dev", "c0", ns=client)
        run("ip", "addr", "add", f"{server_ip}/24", "dev", "s0", ns=server)
        run("ip", "link", "set", "s0", "up", ns=server)
        run("ip", "link", "set", "c0", "up", ns=client)
        yield client, server


@contextmanager
def routed(tag: str, client_ip: str, router_in: str, router_out: str, server_ip: str,
           v6: tuple[str, str, str, str] | None = None):
    """Three namespaces, client — router — server, on two /24s (and two /64s with `v6`, the
    same four roles' IPv6 addresses), the router forwarding and each end routing through it;
    the server's side sends wire-sized segments (no offload bursts). Yields (client, router,
    server) namespace names; the client's link is c0, the router's r0 (client side) and r1,
    the server's s0."""
    client, router, server = f"kvpc{tag}", f"kvpr{tag}", f"kvps{tag}"
    ends = ((client, "c0"), (router, "r0"), (router, "r1"), (server, "s0"))
    with namespaces(client, router, server):
        run("ip", "link", "add", "c0", "netns", client, "type", "veth", "peer", "name", "r0",
            "netns", router)
        run("ip", "link", "add", "r1", "netns", router, "type", "veth", "peer", "name", "s0",
            "netns", server)
        for (ns, dev), address in zip(ends, (client_ip, router_in, router_out, server_ip),
                                      strict=True):
            run("ip", "addr", "add", f"{address}/24", "dev", dev, ns=ns)
        for (ns, dev), address in zip(ends, v6 or (), strict=False):
            run("ip", "-6", "addr", "add", f"{address}/64", "dev", dev, "nodad", ns=ns)
        run("ip", "link", "set", "s0", "gso_max_segs", "1", "gso_max_size", "1500", ns=server)
        for ns, dev in ends:
            run("ip", "link", "set", dev, "up", ns=ns)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=router)
        run("ip", "route", "add", "default", "via", router_in, ns=client)
        run("ip", "route", "add", "default", "via", router_out, ns=server)
        if v6:
            run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", ns=router)
            run("ip", "-6", "route", "add", "default", "via", v6[1], ns=client)
            run("ip", "-6", "route", "add", "default", "via", v6[2], ns=server)
        yield client, router, server
