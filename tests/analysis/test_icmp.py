"""ICMP from real traffic: pings, a path narrower than the packets sent on it (by ping and by a
TCP upload), and a UDP port nobody listens on. A client and a server with a router between
them whose way out to the server has an MTU of 1280 while both ends have 1500 (so TCP's MSS
does not avoid it: path MTU discovery must). The client's side is recorded, and tshark's
reading of the same file is the reference for what each ICMP message said."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from captures.analysis import analyze_files
from captures.analysis.narrative import narrate
from tests.support.netns import capture, require_netns, routed, run
from tests.support.tshark import fields

CLIENT, ROUTER_IN, ROUTER_OUT, SERVER = "10.199.2.2", "10.199.2.1", "10.199.3.1", "10.199.3.2"
# The upload goes to a second address of the server: the client keeps the path MTU it learnt
# per destination, and the pings to SERVER teach it 1280 before the upload starts.
UPLOAD_SERVER = "10.199.3.3"
CLIENT6, ROUTER6_IN, ROUTER6_OUT, SERVER6 = (
    "fd00:199:2::2", "fd00:199:2::1", "fd00:199:3::1", "fd00:199:3::2")
NARROW_MTU = 1280
CLOSED_UDP_PORT = 9
UPLOAD_PORT = 5001
SINK = f"""
import socket
with socket.create_server(("{UPLOAD_SERVER}", {UPLOAD_PORT})) as server:
    print("listening", flush=True)
    conn, _ = server.accept()
    with conn:
        while conn.recv(65536):
            pass
"""
UPLOADER = f"""
import socket
with socket.create_connection(("{UPLOAD_SERVER}", {UPLOAD_PORT}), timeout=10) as s:
    s.sendall(bytes(40000))
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    print(s.getsockname()[1])
"""
UDP_SENDER = f"""
import socket, time
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    for _ in range(2):
        s.sendto(b"anyone there?", ("{SERVER}", {CLOSED_UDP_PORT}))
        time.sleep(1.1)  # past Linux's rate limit on unreachables, so each gets its answer
    print(s.getsockname()[1])
"""


@pytest.fixture(scope="module")
def icmp_capture(tmp_path_factory):
    require_netns()
    if shutil.which("ping") is None:
        pytest.skip("needs ping (iputils-ping)")
    path = tmp_path_factory.mktemp("icmp") / "icmp.pcapng"
    v6 = (CLIENT6, ROUTER6_IN, ROUTER6_OUT, SERVER6)
    with routed(str(os.getpid() % 100000), CLIENT, ROUTER_IN, ROUTER_OUT, SERVER, v6=v6) as (
        client, router, server,
    ):
        run("ip", "addr", "add", f"{UPLOAD_SERVER}/24", "dev", "s0", ns=server)
        run("ip", "link", "set", "r1", "mtu", str(NARROW_MTU), ns=router)

        def ping(*args):
            return subprocess.run(["ip", "netns", "exec", client, "ping", "-n", "-W", "2",
                                   *args], capture_output=True, text=True, timeout=20)

        with capture(client, "c0", path):
            assert ping("-c", "2", "-i", "0.2", SERVER).returncode == 0
            # Too big for the router's way out, and "don't fragment": it says so.
            ping("-c", "1", "-M", "do", "-s", "1400", SERVER)
            ping("-6", "-c", "1", "-s", "1400", SERVER6)
            udp_port = int(run(sys.executable, "-c", UDP_SENDER, ns=client, timeout=20))
            sink = subprocess.Popen(["ip", "netns", "exec", server, sys.executable, "-c", SINK],
                                    stdout=subprocess.PIPE, text=True)
            try:
                assert sink.stdout.readline().strip() == "listening"
                upload_port = int(run(sys.executable, "-c", UPLOADER, ns=client, timeout=30))
                sink.wait(timeout=10)
            finally:
                sink.kill()
                sink.wait()
    return path, udp_port, upload_port


@pytest.fixture(scope="module")
def doc(icmp_capture):
    return analyze_files([icmp_capture[0]]).to_dict()


@pytest.mark.timeout(120)
def test_each_ping_says_request_or_reply_with_its_id_and_sequence(icmp_capture, doc):
    path = icmp_capture[0]
    expected = [
        f"ICMP echo {'request' if kind == '8' else 'reply'} id={ident} seq={seq}"
        for kind, ident, seq in fields(
            path, "(icmp.type == 8 or icmp.type == 0) and !(icmp.type == 3)",  # not quoted
            "icmp.type", "icmp.ident", "icmp.seq")
    ]
    labels = [m["label"] for m in doc["messages"] if m["label"].startswith("ICMP echo")]
    assert len(expected) >= 4 and labels == expected


@pytest.mark.timeout(120)
@pytest.mark.parametrize("version", [4, 6])
def test_a_narrow_path_is_named_with_its_mtu_and_the_packet_that_hit_it(
    icmp_capture, doc, version
):
    path = icmp_capture[0]
    if version == 4:
        # (the ones about the ping, not about the TCP upload's segments)
        rows = fields(path, "icmp.type == 3 && icmp.code == 4 && !tcp", "ip.src", "icmp.mtu")
        client, server = CLIENT, SERVER
    else:
        rows = fields(path, "icmpv6.type == 2", "ipv6.src", "icmpv6.mtu")
        client, server = CLIENT6, SERVER6
    assert rows, "the router sent no ICMP about the MTU"
    (router, mtu), *_ = rows
    assert int(mtu) == NARROW_MTU
    found = [a for a in doc["annotations"]
             if a["kind"] == "icmp_error" and a.get("mtu") == NARROW_MTU and a["from"] == router
             and a["about"].startswith("icmp")]
    assert len(found) == 1
    note = found[0]
    assert note["about"] == f"{'icmp' if version == 4 else 'icmpv6'} {client} → {server}"
    assert note["count"] == len(rows)
    too_big = "fragmentation needed" if version == 4 else "packet too big"
    assert note["error"] == f"{too_big} (MTU {NARROW_MTU})"
    assert any(f"{too_big} (MTU {NARROW_MTU})" in line and line.split()[2] == "ICMP"
               for line in narrate_lines(doc))


@pytest.mark.timeout(120)
def test_a_closed_udp_port_is_reported_for_the_datagrams_it_refused(icmp_capture, doc):
    path, udp_port, _ = icmp_capture
    rows = fields(path, "icmp.type == 3 && icmp.code == 3", "ip.src", "udp.srcport",
                  "udp.dstport")  # the ports are the quoted datagram's
    assert rows and all(r == [SERVER, str(udp_port), str(CLOSED_UDP_PORT)] for r in rows)
    (note,) = [a for a in doc["annotations"]
               if a["kind"] == "icmp_error" and a["error"] == "port unreachable"]
    assert note["from"] == SERVER and note["to"] == CLIENT
    assert note["about"] == f"udp {CLIENT}:{udp_port} → {SERVER}:{CLOSED_UDP_PORT}"
    assert note["count"] == len(rows)
    # The arrow of each such ICMP message carries the finding.
    index = doc["annotations"].index(note)
    carrying = [m for m in doc["messages"] if index in m["annotations"]]
    assert len(carrying) == len(rows)
    assert all(m["label"].startswith("ICMP port unreachable (udp ") for m in carrying)


@pytest.mark.timeout(120)
def test_a_tcp_connection_too_big_for_the_path_carries_the_routers_answer(icmp_capture, doc):
    path, _, upload_port = icmp_capture
    rows = fields(path, f"icmp.type == 3 && icmp.code == 4 && tcp.srcport == {upload_port}",
                  "ip.src", "icmp.mtu")
    assert rows, "the router never said the upload's segments were too big"
    (conn,) = [c for c in doc["connections"] if c["client"] == f"{CLIENT}:{upload_port}"]
    (note,) = [a for a in doc["annotations"]
               if a["kind"] == "icmp_error" and a.get("connection") == conn["id"]]
    assert note["from"] == ROUTER_IN and note["mtu"] == int(rows[0][1]) == NARROW_MTU
    assert note["about"] == f"tcp {CLIENT}:{upload_port} → {UPLOAD_SERVER}:{UPLOAD_PORT}"
    assert note["count"] == len(rows)
    assert doc["annotations"].index(note) in conn["annotations"]
    assert conn["closed"] == "fin"  # it got through once the client sent smaller segments


def narrate_lines(document: dict) -> list[str]:
    class Model:  # narrate() reads the model's parts as attributes
        pass

    model = Model()
    for key, value in document.items():
        setattr(model, key, value)
    return narrate(model)
