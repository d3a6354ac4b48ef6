"""A tunnelled hop keeps its underlay: the outer addresses, the UDP port, the VNI or GRE key,
and a name a reader can follow ("VXLAN 4789 edge-a → edge-b, vni 4242").

Two sources of real packets: the shared corpus's tunnel captures, checked field by field
against tshark's reading of the outer headers; and kernel tunnels (VXLAN, Geneve, GRE with a
key, IP-in-IP) between two namespaces this module creates, named by an inventory.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from captures.analysis import CaptureFile, analyze_files
from tests.support import tshark
from tests.support.corpus import corpus_dir
from tests.support.netns import (
    capture,
    http_server,
    interface_indexes,
    namespaces,
    require_netns,
    run,
)

CORPUS_TUNNELS = [
    "overlay/zeek_vxlan-4789-inner-http11-syn-fin.pcap",
    "overlay/tcpdump_vxlan-udp8472-flannel-port-arp-icmp.pcap",
    "overlay/deepflow_vxlan-over-ipv6-inner-tls.pcap",
    "overlay/zeek_geneve-6081-inner-tls-sni-alpn-syn-fin.pcap",
    "overlay/zeek_geneve-many-options-inner-http11.pcap",
    "overlay/tcpdump_geneve-critical-option-icmp-ssh.pcap",
    "dns-http/zeek_docker-container-dns-then-http11-syn-fin_in-gre-over-udp.pcap",
]
OUTER_FIELDS = ("frame.number", "frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
                "udp.dstport", "vxlan.vni", "geneve.vni", "gre.key")
WORDS = {"vxlan": "VXLAN", "geneve": "Geneve", "gre": "GRE", "ipip": "IP-in-IP"}


def outer_headers(path: Path) -> dict[int, dict]:
    """tshark's outer header per frame: the first occurrence of each field is the outermost
    (a tunnel repeats the fields of the packet it carries)."""
    rows = tshark.fields(path, "vxlan || geneve || gre", *OUTER_FIELDS,
                         options=("-d", "udp.port==8472,vxlan"))
    found = {}
    for number, protocols, ip_src, ip_dst, ip6_src, ip6_dst, port, vxlan, geneve, key in rows:
        layers = protocols.split(":")
        outer_v6 = "ipv6" in layers and (
            "ip" not in layers or layers.index("ipv6") < layers.index("ip"))
        vni = vxlan or geneve
        found[int(number)] = {
            "src": ip6_src if outer_v6 else ip_src, "dst": ip6_dst if outer_v6 else ip_dst,
            "port": int(port) if port else None,
            "ident": int(vni, 0) if vni else (int(key, 0) if key else None)}
    return found


def documented_name(kind: str, port, src: str, dst: str, ident) -> str:
    """docs/model.md's wording: "VXLAN 8472 node-1 → node-2, vni 1"."""
    name = " ".join([WORDS[kind], *([str(port)] if port else []), src, "→", dst])
    if ident is not None:
        name += f", {'key' if kind == 'gre' else 'vni'} {ident}"
    return name


def underlay_of(hop: dict) -> dict:
    underlay = hop["underlay"]
    ident = underlay.get("vni", underlay.get("key"))
    return {"src": underlay["src"], "dst": underlay["dst"], "port": underlay["port"],
            "ident": ident}


@pytest.mark.parametrize("relative", CORPUS_TUNNELS)
def test_it_keeps_each_tunnelled_hop_s_outer_header_as_tshark_reads_it(relative):
    root = corpus_dir()
    if root is None or not (root / relative).is_file():
        pytest.skip(f"corpus capture {relative} not found")
    path = root / relative
    doc = analyze_files([CaptureFile(path)]).to_dict()
    outer = outer_headers(path)
    tunnelled = [m for m in doc["messages"] if m["hops"][0].get("tunnel")]
    assert tunnelled, "no tunnelled message decoded"
    for message in tunnelled:
        hop = message["hops"][0]
        expected = outer[message["frame"][1]]
        assert underlay_of(hop) == expected, message["frame"]
        # No inventory: the tunnel's ends are named by their addresses.
        assert hop["underlay"]["name"] == documented_name(
            hop["tunnel"], expected["port"], expected["src"], expected["dst"], expected["ident"])
        assert hop["underlay"]["src_node"] is None and hop["underlay"]["dst_node"] is None
    # Every frame tshark reads as a tunnel carrying an IP packet became a tunnelled hop.
    carried_ip = {n for n, _ in _ip_in_tunnel(path)}
    assert carried_ip <= {m["frame"][1] for m in tunnelled}


def _ip_in_tunnel(path: Path):
    for number, protocols in tshark.fields(path, "vxlan || geneve || gre", "frame.number",
                                           "frame.protocols",
                                           options=("-d", "udp.port==8472,vxlan")):
        layers = protocols.split(":")
        tunnel_at = max(i for i, layer in enumerate(layers) if layer in ("vxlan", "geneve",
                                                                          "gre"))
        if {"ip", "ipv6"} & set(layers[tunnel_at:]):
            yield int(number), protocols


# -- kernel tunnels between two namespaces ------------------------------------------------------

# kind: (the `ip link add ... type` words after the name, the UDP port, the VNI or key)
TUNNELS = {
    "vxlan": (["vxlan", "id", "4242", "dstport", "4789"], 4789, 4242),
    "geneve": (["geneve", "id", "77"], 6081, 77),
    "gre": (["gre", "key", "99"], None, 99),
    "ipip": (["ipip"], None, None),
}
UNDERLAY = ("172.30.9.1", "172.30.9.2")
OVERLAY = ("10.77.0.1", "10.77.0.2")
PORT = 8081
INVENTORY = {"nodes": [{"name": "edge-a", "addresses": [UNDERLAY[0]]},
                       {"name": "edge-b", "addresses": [UNDERLAY[1]]}]}


@pytest.fixture(scope="module", params=sorted(TUNNELS))
def kernel_tunnel(request, tmp_path_factory):
    """A request across a kernel tunnel, recorded with `-i any` on the sending side."""
    require_netns()
    kind = request.param
    words, port, ident = TUNNELS[kind]
    out = tmp_path_factory.mktemp(f"tunnel-{kind}")
    tag = f"kvu{kind[:2]}{os.getpid() % 10000}"
    left, right = f"{tag}a", f"{tag}b"
    with namespaces(left, right):
        run("ip", "-n", left, "link", "add", "wire0", "type", "veth", "peer", "name", "wire0",
            "netns", right)
        for ns, mine, theirs, inner in ((left, *UNDERLAY, OVERLAY[0]),
                                        (right, *reversed(UNDERLAY), OVERLAY[1])):
            run("ip", "-n", ns, "addr", "add", f"{mine}/24", "dev", "wire0")
            run("ip", "-n", ns, "link", "set", "wire0", "up")
            ends = ["remote", theirs] + ([] if kind == "geneve" else ["local", mine])
            made = subprocess.run(["ip", "-n", ns, "link", "add", "tun9", "type", *words, *ends],
                                  capture_output=True, text=True, timeout=10)
            if made.returncode:
                pytest.skip(f"no {kind} tunnels in this kernel: {made.stderr.strip()}")
            run("ip", "-n", ns, "addr", "add", f"{inner}/24", "dev", "tun9")
            run("ip", "-n", ns, "link", "set", "tun9", "up")
        with http_server(right, OVERLAY[1], PORT):
            names = {int(k): v for k, v in interface_indexes(left).items()}
            with capture(left, "any", out / "left.pcapng", linktype="LINUX_SLL2"):
                run("curl", "-sS", "-o", "/dev/null", "-m", "5",
                    f"http://{OVERLAY[1]}:{PORT}/", ns=left)
    return kind, port, ident, CaptureFile(out / "left.pcapng", "node/edge-a", names)


def test_it_names_the_underlay_hop_with_its_nodes_port_and_id(kernel_tunnel):
    kind, port, ident, recorded = kernel_tunnel
    doc = analyze_files([recorded], inventory=INVENTORY).to_dict()
    syn = next(m for m in doc["messages"] if m["flags"] == "S")
    assert [(h["interface"], h.get("tunnel")) for h in syn["hops"]] == [
        ("tun9", None), ("wire0", kind)]
    underlay = syn["hops"][1]["underlay"]
    assert (underlay["src"], underlay["dst"], underlay["port"]) == (*UNDERLAY, port)
    assert (underlay["src_node"], underlay["dst_node"]) == ("edge-a", "edge-b")
    id_key = {"vxlan": "vni", "geneve": "vni", "gre": "key"}.get(kind)
    if id_key:
        assert underlay[id_key] == ident
    assert underlay["name"] == documented_name(kind, port, "edge-a", "edge-b", ident)
    # The answer came back through the same tunnel, the other way.
    synack = next(m for m in doc["messages"] if m["flags"] == "SA")
    back = synack["hops"][0]
    assert (back["interface"], back["underlay"]["src_node"], back["underlay"]["dst_node"]) == (
        "wire0", "edge-b", "edge-a")
    # Encapsulation is not NAT, and the inner conversation is read through it.
    assert not [a for a in doc["annotations"] if a["kind"] in ("dnat", "snat")]
    assert [(r["method"], r["status"]) for r in doc["http"]] == [("GET", 200)]


def test_it_falls_back_to_the_underlay_addresses_without_an_inventory(kernel_tunnel):
    kind, port, ident, recorded = kernel_tunnel
    doc = analyze_files([recorded]).to_dict()
    syn = next(m for m in doc["messages"] if m["flags"] == "S")
    underlay = syn["hops"][1]["underlay"]
    assert underlay["src_node"] is None and underlay["dst_node"] is None
    assert underlay["name"] == documented_name(kind, port, *UNDERLAY, ident)
