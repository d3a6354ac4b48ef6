"""Every table the traffic can grow has a bound (docs/model.md, "Bounds"): past it the result
says which bound in a warning and is flagged partial, and what was kept before the bound is
what the analysis finds without it.

Each recording is real traffic on the loopback of a network namespace this module creates
(or three namespaces in a row, for copies of one packet), recorded by dumpcap; two files are
derived from recordings by reordering their records or spreading them over interface blocks,
never by writing packet bytes. Each bound is set low with monkeypatch, so that a handful of
packets reaches it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from captures import analysis
from captures.analysis import analyze_files, dns, engine, hops, identity, pcapfile, reassembly
from captures.analysis import tcp as tcpmod
from captures.analysis.packets import decode_frame
from captures.analysis.pcapmerge import interface_block, packet_block, section_header
from tests.support.corpus import corpus_files
from tests.support.netns import capture, namespaces, require_netns, routed, run

TAG = os.getpid() % 100000
SOURCES = 30  # UDP senders, each from its own address, to a closed port
ANSWERED = 8  # addresses in the one DNS answer with many records
STREAM_SEGMENTS = 60
SEGMENT = 100  # bytes of payload per segment of the recorded stream


def analyse(path, **options) -> dict:
    model = analyze_files([path], **options)
    try:
        return model.to_dict()
    finally:
        model.close()


def bound_warnings(doc: dict, phrase: str) -> list[str]:
    return [w for w in doc["capture"]["warnings"] if phrase in w]


@contextmanager
def background(ns: str, code: str, *args: str):
    """A Python program running in `ns` until the block ends; it prints READY when set up."""
    process = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"server did not start: {line!r} {process.stderr.read()}")
        yield process
    finally:
        process.kill()
        process.wait(timeout=5)


def record(tmp_path_factory, name: str, client: str, *args: str, server: str | None = None,
           server_args: tuple[str, ...] = (), setup: tuple[tuple[str, ...], ...] = ()) -> Path:
    """`client` run once in a fresh namespace (with `server` in the background), on lo."""
    require_netns()
    path = tmp_path_factory.mktemp(name) / f"{name}.pcapng"
    ns = f"kvb{name[:4]}{TAG}"
    with namespaces(ns):
        for command in setup:
            run(*command, ns=ns)
        if server is None:
            with capture(ns, "lo", path):
                run(sys.executable, "-c", client, *args, ns=ns, timeout=60)
        else:
            with background(ns, server, *server_args), capture(ns, "lo", path):
                run(sys.executable, "-c", client, *args, ns=ns, timeout=60)
    return path


def frames(path: Path) -> list:
    with open(path, "rb") as fp:
        _linktypes, read = pcapfile.read_frames(fp, 0, pcapfile.Warnings(), str(path))
        return list(read)


# --------------------------------------------------------------------------------------------
# Recordings
# --------------------------------------------------------------------------------------------

SCATTER = """
import socket, sys
for i in range(int(sys.argv[1])):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((f"127.1.0.{i + 1}", 40000 + i))
        s.sendto(b"kviz bounds", ("127.0.0.1", 9))
"""


@pytest.fixture(scope="module")
def scattered(tmp_path_factory):
    """SOURCES datagrams, each from its own address, to a closed port: each is answered by an
    ICMP port unreachable quoting it."""
    return record(tmp_path_factory, "scatter", SCATTER, str(SOURCES))


DNS_SERVER = """
import socket, struct, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 53))
sock.settimeout(0.2)
print("READY", flush=True)
end = time.monotonic() + 30
while time.monotonic() < end:
    try:
        query, peer = sock.recvfrom(2048)
    except TimeoutError:
        continue
    qid = struct.unpack_from("!H", query)[0]
    question = query[12:query.index(b"\\0", 12) + 5]
    name = question[1:1 + question[0]].decode()
    if name.startswith("quiet"):
        continue  # never answered
    if name.startswith("nx"):
        sock.sendto(struct.pack("!HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question, peer)
        continue
    count = int(sys.argv[1])
    records = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, 30, 4) + bytes([127, 3, 0, k + 1])
                       for k in range(count))
    sock.sendto(struct.pack("!HHHHHH", qid, 0x8180, 1, count, 0, 0) + question + records, peer)
"""
DNS_CLIENT = """
import socket, struct, sys
def ask(sock, qid, name):
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
    sock.sendto(struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + b"\\0\\1\\0\\1",
                ("127.0.0.1", 53))
    try:
        sock.recv(2048)
    except TimeoutError:
        pass
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.settimeout(0.3)
    ask(sock, 1, "many.bounds.test")
    for k in range(int(sys.argv[1])):  # each answered address once: it becomes a participant
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"hello", (f"127.3.0.{k + 1}", 9))
    names = [f"nx{i}.bounds.test" for i in range(4)] + [f"quiet{i}.bounds.test" for i in range(4)]
    for i, name in enumerate(names):
        ask(sock, 10 + i, name)
"""


@pytest.fixture(scope="module")
def lookups(tmp_path_factory):
    """A DNS answer with ANSWERED records (then a datagram to each address), four names that
    do not exist and four never answered."""
    return record(tmp_path_factory, "dns", DNS_CLIENT, str(ANSWERED), server=DNS_SERVER,
                  server_args=(str(ANSWERED),))


HTTP_SERVER = """
import http.server, time
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 8080), Handler)
server.timeout = 0.2
print("READY", flush=True)
end = time.monotonic() + 30
while time.monotonic() < end:
    server.handle_request()
"""
HTTP_CLIENT = """
import http.client
for connection in range(2):
    conn = http.client.HTTPConnection("127.0.0.1", 8080, timeout=5)
    for n in range(3):
        conn.request("GET", f"/c{connection}/r{n}", headers={"Host": "bounds.test"})
        conn.getresponse().read()
    conn.close()
"""


@pytest.fixture(scope="module")
def keepalive(tmp_path_factory):
    """Two HTTP/1.1 connections of three requests each."""
    return record(tmp_path_factory, "http", HTTP_CLIENT, server=HTTP_SERVER)


SMALL_SEGMENTS = (("ip", "link", "set", "lo", "gso_max_segs", "1", "gso_max_size", "1500"),)
STREAM_SERVER = """
import socket, sys
segments, size = int(sys.argv[1]), int(sys.argv[2])
with socket.socket() as listener:
    # The MSS (less the timestamps option) is the segment size; lo's GSO is off.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, size + 12)
    listener.bind(("127.0.0.1", 8080))
    listener.listen(1)
    print("READY", flush=True)
    conn, _ = listener.accept()
    with conn:
        conn.recv(4096)
        head = f"HTTP/1.1 200 OK\\r\\nContent-Length: {segments * size}\\r\\n\\r\\n".encode()
        conn.sendall(head)
        conn.sendall(b"k" * segments * size)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):
            pass
"""
STREAM_CLIENT = """
import socket
with socket.create_connection(("127.0.0.1", 8080), timeout=5) as sock:
    sock.sendall(b"GET /stream HTTP/1.1\\r\\nHost: bounds.test\\r\\n\\r\\n")
    while sock.recv(65536):
        pass
"""


@pytest.fixture(scope="module")
def reordered(tmp_path_factory):
    """One HTTP response of STREAM_SEGMENTS segments, its records rewritten in this order:
    everything up to the response head as recorded, then the rest of the response last to
    first but for two holes, which come after it (as retransmissions would), then the rest.
    Each record keeps its bytes; the k-th record keeps the k-th time."""
    raw = record(tmp_path_factory, "stream", STREAM_CLIENT, server=STREAM_SERVER,
                 server_args=(str(STREAM_SEGMENTS), str(SEGMENT)), setup=SMALL_SEGMENTS)
    recorded = frames(raw)
    decoded = [decode_frame(frame) for frame in recorded]
    data = [i for i, r in enumerate(decoded)
            if r is not None and r.proto == 6 and r.sport == 8080 and r.payload_len]
    assert len(data) > STREAM_SEGMENTS, "the response did not come in small segments"
    holes = {data[len(data) // 3], data[2 * len(data) // 3]}
    later = set(data[1:])
    order = [i for i in range(data[1]) if i not in later]
    order += [i for i in reversed(data[1:]) if i not in holes] + sorted(holes)
    order += [i for i in range(data[1], len(recorded)) if i not in later]
    times = sorted(frame.time for frame in recorded)
    path = raw.with_name("reordered.pcapng")
    with open(path, "wb") as fp:
        fp.write(section_header("kviz tests (records reordered)"))
        fp.write(interface_block(recorded[0].linktype, "lo"))
        for position, index in enumerate(order):
            fp.write(packet_block(0, times[position], recorded[index].data))
    return path


TLS_SERVER = """
import socket, ssl, sys
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.maximum_version = ssl.TLSVersion.TLSv1_2  # the certificates travel in the clear
context.load_cert_chain(sys.argv[1], sys.argv[2])  # with the CA's: longer than a ClientHello
with socket.socket() as listener:
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 112)  # 100-byte segments
    listener.bind(("127.0.0.1", 8443))
    listener.listen(1)
    print("READY", flush=True)
    conn, _ = listener.accept()
    with context.wrap_socket(conn, server_side=True) as tls:
        tls.recv(100)
        tls.sendall(b"ok")
"""
TLS_CLIENT = """
import socket, ssl
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with socket.create_connection(("127.0.0.1", 8443), timeout=5) as sock:
    with context.wrap_socket(sock, server_hostname="bounds.kviz.test") as tls:
        tls.sendall(b"hi")
        tls.recv(100)
"""


@pytest.fixture(scope="module")
def small_handshake(tmp_path_factory):
    """A TLS 1.2 handshake in 100-byte segments: its records span several segments each."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    from captures.lab import pki

    root = tmp_path_factory.mktemp("pki")
    ca = pki.make_ca(root / "ca")
    server = pki.issue(ca, root / "ca", "server", [], ("bounds.kviz.test",))
    chain = root / "chain.pem"
    chain.write_bytes(server.cert.read_bytes() + ca.cert.read_bytes())
    return record(tmp_path_factory, "tls", TLS_CLIENT, server=TLS_SERVER,
                  server_args=(str(chain), str(server.key)), setup=SMALL_SEGMENTS)


ALERTING_SERVER = """
import socket
with socket.socket() as listener:
    listener.bind(("127.0.0.1", 8443))
    listener.listen(1)
    print("READY", flush=True)
    conn, _ = listener.accept()
    with conn:
        conn.recv(4096)  # the ClientHello
        # A misbehaving peer: three alerts in the clear (warning user_canceled, warning
        # unrecognized_name, fatal handshake_failure), then the close.
        conn.sendall(bytes([21, 3, 3, 0, 2, 1, 90, 21, 3, 3, 0, 2, 1, 112,
                            21, 3, 3, 0, 2, 2, 40]))
"""
ALERTED_CLIENT = """
import socket, ssl
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with socket.create_connection(("127.0.0.1", 8443), timeout=5) as sock:
    try:
        context.wrap_socket(sock, server_hostname="bounds.kviz.test")
    except (ssl.SSLError, OSError):
        pass
"""


@pytest.fixture(scope="module")
def alerts(tmp_path_factory):
    """A TLS client whose server answers its ClientHello with three alerts."""
    return record(tmp_path_factory, "alert", ALERTED_CLIENT, server=ALERTING_SERVER)


@pytest.fixture(scope="module")
def forwarded(tmp_path_factory):
    """Datagrams through a router namespace, captured there on every interface: each is seen
    twice (coming in, going out)."""
    require_netns()
    path = tmp_path_factory.mktemp("hops") / "router.pcapng"
    with routed(f"b{TAG}", "10.77.1.2", "10.77.1.1", "10.77.2.1", "10.77.2.2") as (
            client, router, _server), capture(router, "any", path):
        run(sys.executable, "-c", """
import socket
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    for n in range(8):
        s.sendto(b"kviz hop %d" % n, ("10.77.2.2", 9))
""", ns=client)
    return path


@pytest.fixture(scope="module")
def many_interfaces(scattered):
    """The scattered recording with its packets spread over one interface block each."""
    recorded = frames(scattered)
    path = scattered.with_name("interfaces.pcapng")
    with open(path, "wb") as fp:
        fp.write(section_header("kviz tests (one interface per packet)"))
        for index, frame in enumerate(recorded):
            fp.write(interface_block(frame.linktype, f"lo{index}"))
            fp.write(packet_block(index, frame.time, frame.data))
    return path


# --------------------------------------------------------------------------------------------
# The bounds
# --------------------------------------------------------------------------------------------


def test_it_lists_the_first_participants_past_the_bound(scattered, monkeypatch):
    full = analyse(scattered)
    assert len(full["participants"]) == SOURCES + 1
    monkeypatch.setattr(engine, "MAX_PARTICIPANTS", 5)
    bounded = analyse(scattered)
    assert bounded["participants"] == full["participants"][:5]
    assert bound_warnings(bounded, "more than 5 addresses")
    assert bounded["capture"]["partial"]
    assert bounded["messages"] == full["messages"]  # every message is kept


def test_it_counts_the_first_icmp_errors_past_the_bound(scattered, monkeypatch):
    full = analyse(scattered)
    errors = [a for a in full["annotations"] if a["kind"] == "icmp_error"]
    assert len(errors) > 3
    monkeypatch.setattr(engine, "MAX_ICMP_ERRORS", 3)
    bounded = analyse(scattered)
    assert [a for a in bounded["annotations"] if a["kind"] == "icmp_error"] == errors[:3]
    assert bound_warnings(bounded, "more than 3 distinct ICMP errors")
    assert bounded["capture"]["partial"]
    assert [m["label"] for m in bounded["messages"]] == [m["label"] for m in full["messages"]]


@pytest.mark.parametrize("bound, value", [("MAX_PENDING", 1), ("MAX_PENDING_BYTES", 30)])
def test_the_copy_window_releases_its_oldest_early_past_the_bound(forwarded, monkeypatch,
                                                                  bound, value):
    monkeypatch.setattr(hops, bound, value)
    bounded = analyse(forwarded)
    assert bound_warnings(bounded, "within the copy window")
    assert bounded["capture"]["partial"]


def test_one_place_alone_loses_nothing_when_the_copy_window_overflows(scattered, monkeypatch):
    full = analyse(scattered)
    monkeypatch.setattr(hops, "MAX_PENDING", 4)
    bounded = analyse(scattered)
    # One vantage point, no copies: released early, every message is what it was, and no
    # bound is claimed where none cost anything.
    assert not bound_warnings(bounded, "within the copy window")
    assert bounded["messages"] == full["messages"]


def test_it_folds_at_most_the_bound_of_copies_into_one_message(forwarded, monkeypatch):
    full = analyse(forwarded)
    folded = [m for m in full["messages"] if len(m["hops"]) == 2]
    assert len(folded) >= 3
    monkeypatch.setattr(hops, "MAX_HOPS", 1)
    bounded = analyse(forwarded)
    assert bound_warnings(bounded, "seen at more than 1 places")
    assert bounded["capture"]["partial"]
    # Each copy is a message of its own, as it was seen.
    assert all(len(m["hops"]) == 1 for m in bounded["messages"])
    seen = sorted((h["t"], h["interface"], h["src"], h["dst"])
                  for m in full["messages"] for h in m["hops"])
    assert sorted((m["hops"][0]["t"], m["hops"][0]["interface"], m["src"], m["dst"])
                  for m in bounded["messages"]) == seen


def test_it_reads_the_first_records_of_a_long_dns_answer(lookups, monkeypatch):
    full = analyse(lookups)
    many = next(e for e in full["dns"] if e["name"] == "many.bounds.test")
    assert len(many["answers"]) == ANSWERED
    monkeypatch.setattr(dns, "_parsed", {})  # parsed before with every record
    monkeypatch.setattr(dns, "MAX_ANSWERS", 3)
    bounded = analyse(lookups)
    cut = next(e for e in bounded["dns"] if e["name"] == "many.bounds.test")
    assert cut["answers"] == many["answers"][:3]
    assert cut["answer_records"] == many["answer_records"][:3]
    assert bound_warnings(bounded, "more than 3 records")
    assert bounded["capture"]["partial"]


def test_it_names_the_first_addresses_from_dns_answers(lookups, monkeypatch):
    full = analyse(lookups)
    answered = [p for p in full["participants"] if p["ip"].startswith("127.3.0.")]
    assert len(answered) == ANSWERED and {p["kind"] for p in answered} == {"dns-name"}
    monkeypatch.setattr(identity, "MAX_DNS_NAMED", 3)
    bounded = analyse(lookups)
    named = {p["ip"]: p for p in bounded["participants"] if p["ip"].startswith("127.3.0.")}
    assert [named[p["ip"]] for p in answered[:3]] == answered[:3]
    assert all(named[p["ip"]]["kind"] == "loopback" for p in answered[3:])
    assert bound_warnings(bounded, "name more than 3 addresses")
    assert bounded["capture"]["partial"]


@pytest.mark.parametrize("kind, what", [("nxdomain", "names that do not exist"),
                                        ("dns_unanswered", "names asked and never answered")])
def test_it_counts_the_first_names_of_a_dns_finding(lookups, monkeypatch, kind, what):
    full = analyse(lookups)
    counted = [a for a in full["annotations"] if a["kind"] == kind]
    assert len(counted) == 4
    monkeypatch.setattr(engine, "MAX_NAME_FINDINGS", 2)
    bounded = analyse(lookups)
    assert [a for a in bounded["annotations"] if a["kind"] == kind] == counted[:2]
    assert bound_warnings(bounded, f"more than 2 {what}")
    assert bounded["capture"]["partial"]
    assert bounded["dns"] == full["dns"]  # the exchanges themselves are all listed


def test_it_lists_the_first_dns_exchanges_past_the_flow_limit(lookups):
    full = analyse(lookups)
    bounded = analyse(lookups, max_flows=3)
    assert bounded["dns"] == full["dns"][:3]
    assert bound_warnings(bounded, "more than 3 DNS exchanges")
    assert bounded["capture"]["partial"]


def test_the_diagnosis_reads_the_first_troubled_lookups_past_the_bound(lookups, monkeypatch):
    full = analyse(lookups)
    assert any(a["kind"] == "nxdomain" for a in full["annotations"])  # a troubled client
    handed: list = []
    # What the diagnosis is handed can be seen only in the interpreted build: compiled, the
    # engine makes its CaptureView by a native call (diagnosis/ is compiled with it).
    seen = analysis.BUILD == "interpreted"
    if seen:
        original = engine.CaptureView

        def view(**parts):
            handed.append(parts["dns"])
            return original(**parts)

        monkeypatch.setattr(engine, "CaptureView", view)
        analyse(lookups)
    monkeypatch.setattr(engine, "MAX_DIAGNOSED_LOOKUPS", 3)
    bounded = analyse(lookups)
    if seen:
        assert len(handed[0]) > 3
        assert handed[1] == handed[0][:3]
    assert bound_warnings(bounded, "the diagnosis reads the first")
    assert bounded["capture"]["partial"]
    assert bounded["dns"] == full["dns"]  # the model lists every exchange still


def test_it_lists_the_first_http_requests_past_the_bound(keepalive, monkeypatch):
    full = analyse(keepalive)
    assert [r["target"] for r in full["http"]] == [f"/c{c}/r{n}" for c in range(2)
                                                  for n in range(3)]
    monkeypatch.setattr(tcpmod, "MAX_HTTP_REQUESTS", 4)
    bounded = analyse(keepalive)
    assert bounded["http"] == full["http"][:4]
    assert bound_warnings(bounded, "more than 4 HTTP requests")
    assert bounded["capture"]["partial"]
    # The requests past the bound are still labelled on their messages.
    assert [m["label"] for m in bounded["messages"]] == [m["label"] for m in full["messages"]]


def test_it_tracks_the_first_connections_past_the_bound(keepalive, monkeypatch):
    full = analyse(keepalive)
    assert len(full["connections"]) == 2
    monkeypatch.setattr(engine, "MAX_CONNECTIONS", 1)
    bounded = analyse(keepalive)
    assert bounded["connections"][0]["client"] == full["connections"][0]["client"]
    for key in ("server", "requests", "handshake", "closed", "packets", "timing", "outcome"):
        assert bounded["connections"][0][key] == full["connections"][0][key]
    assert len(bounded["connections"]) == 1
    assert bounded["http"] == full["http"][:3]
    assert bound_warnings(bounded, "more than 1 TCP connections")
    assert bounded["capture"]["partial"]


@pytest.mark.parametrize("module, bound, value, phrase", [
    (reassembly, "MAX_HELD_SEGMENTS", 8, "was not filled within"),
    (reassembly, "MAX_HELD", 800, "was not filled within"),
    (reassembly, "MAX_HELD_SEGMENTS_IN_ALL", 8, "held behind holes"),
    (reassembly, "MAX_HELD_IN_ALL", 800, "held behind holes"),
])
def test_a_hole_is_read_past_at_the_bound_of_what_waits_behind_it(reordered, monkeypatch,
                                                                  module, bound, value, phrase):
    full = analyse(reordered)
    assert not bound_warnings(full, phrase) and not full["capture"]["partial"]
    monkeypatch.setattr(module, bound, value)
    bounded = analyse(reordered)
    assert bound_warnings(bounded, phrase)
    assert bounded["capture"]["partial"]
    # Before the holes: the request, its response's status line, the connection.
    assert [(r["target"], r["status"]) for r in bounded["http"]] == [("/stream", 200)]
    assert bounded["http"] == full["http"]
    for key in ("client", "server", "handshake", "packets"):
        assert bounded["connections"][0][key] == full["connections"][0][key]


def test_tls_handshakes_held_at_once_are_bounded(small_handshake, monkeypatch):
    full = analyse(small_handshake)
    (conn,) = full["connections"]
    assert conn["tls"]["sni"] == "bounds.kviz.test" and conn["tls"]["version"]
    # Room for the client's hello (its bytes before the server's first), not for the
    # server's certificate after it.
    hello = 0
    for message in full["messages"]:
        if message["src"] != conn["client"] and message["len"]:
            break
        hello += message["len"]
    monkeypatch.setattr(tcpmod, "MAX_TLS_BUFFERED", hello + 8)
    bounded = analyse(small_handshake)
    (cut,) = bounded["connections"]
    assert cut["tls"]["sni"] == "bounds.kviz.test"
    assert cut["tls"]["alpn_offered"] == conn["tls"]["alpn_offered"]
    assert bound_warnings(bounded, "of TLS handshakes held at once")
    assert bounded["capture"]["partial"]


def test_it_lists_the_first_tls_alerts_of_a_connection(alerts, monkeypatch):
    full = analyse(alerts)
    (conn,) = full["connections"]
    listed = conn["tls"]["alerts"]
    assert [a["description"] for a in listed] == ["user_canceled", "unrecognized_name",
                                                 "handshake_failure"]
    monkeypatch.setattr(tcpmod, "ALERTS_KEPT", 2)
    bounded = analyse(alerts)
    assert bounded["connections"][0]["tls"]["alerts"] == listed[:2]
    assert bound_warnings(bounded, "more than 2 TLS alerts")
    assert bounded["capture"]["partial"]


def test_packets_on_interfaces_past_the_bound_are_skipped(many_interfaces, monkeypatch):
    full = analyse(many_interfaces)
    monkeypatch.setattr(pcapfile, "MAX_INTERFACES", 4)
    bounded = analyse(many_interfaces)
    assert bound_warnings(bounded, "more than 4 interfaces in a section")
    assert bounded["capture"]["partial"]
    kept = [m for m in full["messages"] if m["hops"][0]["interface"] in {"lo0", "lo1", "lo2",
                                                                         "lo3"}]
    assert [(m["label"], m["hops"]) for m in bounded["messages"]] == [
        (m["label"], m["hops"]) for m in kept]


def test_encoded_vantage_points_past_the_cache_cost_nothing(many_interfaces, monkeypatch):
    full = analyse(many_interfaces)
    monkeypatch.setattr(engine, "VANTAGES_KEPT", 2)
    cached_less = analyse(many_interfaces)
    assert cached_less == full  # a cache: nothing is left out, nothing to say


def test_a_healthy_corpus_capture_reaches_no_bound():
    files = corpus_files()
    if not files:
        pytest.skip("no capture corpus found")
    phrases = ("addresses: later ones", "distinct ICMP errors", "within the copy window",
               "seen at more than", "records: only the first", "name more than",
               "later names are not counted", "HTTP requests: later", "TCP connections: later",
               "UDP flows: later", "DNS exchanges: later", "the diagnosis reads the first",
               "was not filled within",
               "held behind holes", "of TLS handshakes held", "TLS alerts in the clear",
               "interfaces in a section")
    started = time.monotonic()
    for path in files:
        warnings = analyse(path)["capture"]["warnings"]
        assert not [w for w in warnings if any(p in w for p in phrases)], path.name
    assert time.monotonic() - started < 120
