"""A pod's packet seen on the overlay device and again, encapsulated, on the underlay is one
message: a node's `-i any` on a flannel-style VXLAN shows both copies.

Real kernel VXLAN between two namespaces this test creates.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from captures.analysis import CaptureFile, analyze_files
from tests.support.netns import (
    capture,
    http_server,
    interface_indexes,
    namespaces,
    require_netns,
    run,
)

PORT = 8080


@pytest.fixture(scope="module")
def overlay_capture(tmp_path_factory):
    require_netns()
    out = tmp_path_factory.mktemp("overlay")
    tag = f"kvx{os.getpid() % 100000}"
    left, right = f"{tag}a", f"{tag}b"
    with namespaces(left, right):
        run("ip", "-n", left, "link", "add", "under0", "type", "veth", "peer", "name", "under0",
            "netns", right)
        for ns, mine, theirs, overlay in ((left, "192.168.50.1", "192.168.50.2", "10.42.0.1"),
                                          (right, "192.168.50.2", "192.168.50.1", "10.42.0.2")):
            run("ip", "-n", ns, "addr", "add", f"{mine}/24", "dev", "under0")
            run("ip", "-n", ns, "link", "set", "under0", "up")
            made = subprocess.run(
                ["ip", "-n", ns, "link", "add", "vxlan0", "type", "vxlan", "id", "42", "remote",
                 theirs, "local", mine, "dstport", "4789", "dev", "under0"],
                capture_output=True, text=True, timeout=10)
            if made.returncode:
                pytest.skip(f"no VXLAN in this kernel: {made.stderr.strip()}")
            run("ip", "-n", ns, "addr", "add", f"{overlay}/24", "dev", "vxlan0")
            run("ip", "-n", ns, "link", "set", "vxlan0", "up")
        with http_server(right, "10.42.0.2", PORT):
            names = {int(k): v for k, v in interface_indexes(left).items()}
            with capture(left, "any", out / "left.pcapng", linktype="LINUX_SLL2"):
                run("curl", "-sS", "-o", "/dev/null", "-m", "5", f"http://10.42.0.2:{PORT}/",
                    ns=left)
    return CaptureFile(out / "left.pcapng", "node/left", names)


def test_it_folds_the_overlay_and_underlay_copies_into_one_message(overlay_capture):
    doc = analyze_files([overlay_capture]).to_dict()
    syn = next(m for m in doc["messages"] if m["flags"] == "S")
    assert [(h["interface"], h.get("tunnel")) for h in syn["hops"]] == [
        ("vxlan0", None), ("under0", "vxlan")]
    assert syn["src"].startswith("10.42.0.1:") and syn["dst"] == f"10.42.0.2:{PORT}"
    tcp = [m for m in doc["messages"] if m["proto"] == "tcp"]
    assert tcp and all(len(m["hops"]) == 2 for m in tcp)
    # Encapsulation is not NAT: the inner addresses are the same on both hops.
    assert not [a for a in doc["annotations"] if a["kind"] in ("dnat", "snat")]
    assert [(r["method"], r["status"]) for r in doc["http"]] == [("GET", 200)]
