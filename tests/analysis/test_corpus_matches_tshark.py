"""For every capture in the corpus, the engine's model agrees with tshark's independent reading.

tshark is the referee for what is on the wire: which TCP connections exist and who opened them,
how they ended, how many HTTP/1.x requests each carried, what the TLS hellos said, which DNS
questions got which answers, and which addresses talked. Where a correct engine must differ
from tshark (copies of one packet logged at several netfilter hooks), a separately named test
asserts the right behaviour instead.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections import Counter, defaultdict

import pytest

from .conftest import corpus_dir, corpus_files, corpus_id, require_tshark
from .tshark_reference import (
    Reading,
    TcpConnection,
    canonical_endpoint,
    decode_as_for,
    dns_type_name,
    parse_endpoint,
    tls_version_name,
)

pytestmark = pytest.mark.timeout(180)

MULTICAST_NAME_PORTS = {5353, 5355}  # mDNS and LLMNR: not request/response on one 5-tuple


# -- helpers ---------------------------------------------------------------------------------


def _pair(client: str, server: str) -> frozenset:
    return frozenset((canonical_endpoint(client), canonical_endpoint(server)))


def _describe(conn: TcpConnection) -> str:
    return (
        f"tshark tcp.stream {conn.stream}: {conn.client} -> {conn.server} (first frame "
        f"{conn.first_frame}; syn={conn.syn} syn-ack={conn.syn_ack} fin={conn.fin} "
        f"rst={conn.rst})"
    )


def match_connections(reference: Reading, model: dict):
    """Pairs each tshark stream with the engine connection between the same two endpoints.

    When one 4-tuple carries several connections (port reuse) both sides are taken in time
    order. Returns (pairs, unmatched engine connections).
    """
    engine = defaultdict(list)
    for conn in model["connections"]:
        engine[_pair(conn["client"], conn["server"])].append(conn)
    for conns in engine.values():
        conns.sort(key=lambda c: ((c.get("timing") or {}).get("start") or 0, c["id"]))
    pairs = []
    for key, refs in reference.connection_by_endpoints().items():
        refs = sorted(refs, key=lambda c: c.first_frame)
        mine = engine.pop(key, [])
        for i, ref in enumerate(refs):
            pairs.append((ref, mine[i] if i < len(mine) else None))
    leftovers = [c for conns in engine.values() for c in conns]
    return pairs, leftovers


def _ip_of(text: str) -> str | None:
    try:
        return parse_endpoint(text)[0]
    except ValueError:
        return None


def _is_ip(text) -> bool:
    try:
        ipaddress.ip_address(str(text))
    except ValueError:
        return False
    return True


# -- the capture as a whole ------------------------------------------------------------------


def test_it_reads_every_frame_tshark_reads(reference, model):
    files = model["capture"]["files"]
    assert len(files) == 1
    assert files[0]["packets"] == reference.packets, (
        f"tshark reads {reference.packets} frames, the model says {files[0]['packets']}"
    )
    if reference.frames:
        first = reference.frames[0].time
        last = max(f.time for f in reference.frames)
        assert model["capture"]["start"] == pytest.approx(first, abs=1e-3)
        assert model["capture"]["duration"] == pytest.approx(last - first, abs=1e-3)


def test_it_formats_endpoints_as_the_model_documents(model):
    """"ip:port", "[v6]:port" for IPv6, plain "ip" for messages without ports."""
    with_port = []
    for conn in model["connections"]:
        with_port += [conn["client"], conn["server"]]
    for entry in model["dns"]:
        with_port += [entry["client"], entry["server"]]
    maybe_port = []
    for message in model["messages"]:
        target = with_port if message.get("proto") in ("tcp", "udp") else maybe_port
        target += [message["src"], message["dst"]]
    bad = set()
    for text in with_port:
        try:
            ok = canonical_endpoint(text) == text and parse_endpoint(text)[1] is not None
        except (TypeError, ValueError):
            ok = False
        if not ok:
            bad.add(str(text))
    for text in maybe_port:
        try:
            if canonical_endpoint(text) != text:
                bad.add(str(text))
        except (TypeError, ValueError):
            pass  # frames without an IP layer (STP, LLC) may be named some other way
    assert not bad, f"endpoints not written as docs/model.md says: {sorted(bad)}"


# -- TCP -------------------------------------------------------------------------------------


def test_it_finds_the_tcp_connections_tshark_finds(reference, model):
    """Same connections, and the client is the side that sent the SYN.

    The orientation is only checked when tshark saw a SYN or SYN-ACK (or, midstream, a TLS
    ClientHello); for a bare midstream excerpt either reading is accepted. Port numbers are no
    evidence: one corpus file opens a connection *from* port 80.
    """
    pairs, leftovers = match_connections(reference, model)
    missing = [_describe(ref) for ref, mine in pairs if mine is None]
    assert not missing, f"the model has no connection for: {missing}"
    assert not leftovers, (
        "the model has connections tshark does not: "
        f"{[(c['client'], c['server']) for c in leftovers]}"
    )
    wrong_way = [
        f"{_describe(ref)}; model says client {mine['client']}, server {mine['server']}"
        for ref, mine in pairs
        if ref.orientation_known and canonical_endpoint(mine["client"]) != ref.client
    ]
    assert not wrong_way, f"client and server swapped: {wrong_way}"


def test_it_counts_http1_requests_per_connection_like_tshark(reference, model):
    """HTTP/1.x only: connections where tshark saw HTTP/2 frames are left out, because the
    model's `requests` also counts HTTP/2 streams, which tshark cannot always see (midstream
    HPACK). TLS stays encrypted on both sides (no key log), so those count 0."""
    pairs, _ = match_connections(reference, model)
    wrong = [
        f"{_describe(ref)}: tshark http.request x{ref.http_requests}, "
        f"model requests={mine['requests']}"
        for ref, mine in pairs
        if mine is not None and not ref.http2 and mine["requests"] != ref.http_requests
    ]
    assert not wrong, wrong


def test_it_reports_how_each_connection_ended(reference, model):
    """`closed` follows the packets tshark saw (a correct engine must satisfy all of these):

    1. no FIN and no RST: "open";
    2. FIN and no RST: "fin";
    3. RST and no FIN: "rst";
    4. both, with a RST as the last of them: "rst" (the connection ended with a RST);
    5. both, with a FIN after the last RST (an injected or ignored RST): "fin" or "rst".
    """
    pairs, _ = match_connections(reference, model)
    wrong = [
        f"{_describe(ref)} last teardown {ref.last_teardown}: expected one of "
        f"{sorted(ref.closed_allowed)}, model closed={mine['closed']!r}"
        for ref, mine in pairs
        if mine is not None and mine["closed"] not in ref.closed_allowed
    ]
    assert not wrong, wrong


# -- TLS -------------------------------------------------------------------------------------


def test_it_reads_tls_hellos_like_tshark(reference, model):
    """SNI and offered ALPN (in order) from the ClientHello; the selected ALPN and version from
    the ServerHello (supported_versions for TLS 1.3, whose selected ALPN is encrypted and so
    absent); CertificateRequest and a non-empty client Certificate in TLS 1.2.

    Only streams where tshark decoded a hello are compared: tshark does not look for TLS after
    an application-level STARTTLS (IRC), where an engine may see more than it does.
    """
    pairs, _ = match_connections(reference, model)
    problems = []
    for ref, mine in pairs:
        t = ref.tls
        if mine is None or not (t.client_hello or t.server_hello):
            continue
        tls = mine.get("tls")
        if not tls:
            problems.append(f"{_describe(ref)}: tshark decoded a TLS hello, model tls={tls!r}")
            continue
        expected, got = {}, {}
        if t.client_hello:
            expected |= {"sni": t.sni, "alpn_offered": t.alpn_offered}
            got |= {"sni": tls.get("sni"), "alpn_offered": list(tls.get("alpn_offered") or [])}
        if t.server_hello:
            expected |= {"alpn": t.alpn, "version": t.version}
            got |= {"alpn": tls.get("alpn"), "version": tls_version_name(tls.get("version"))}
        expected |= {
            "certificate_request": t.certificate_request,
            "client_certificate": t.client_certificate,
        }
        got |= {
            "certificate_request": bool(tls.get("certificate_request")),
            "client_certificate": bool(tls.get("client_certificate")),
        }
        if expected != got:
            diff = {k: (expected[k], got[k]) for k in expected if expected[k] != got[k]}
            problems.append(f"{_describe(ref)}: (tshark, model) differ on {diff}")
    assert not problems, problems


# -- DNS -------------------------------------------------------------------------------------


def _dns_key(client, server, ident, name, qtype):
    return (
        canonical_endpoint(client),
        canonical_endpoint(server),
        int(ident),
        str(name or "").lower().rstrip("."),
        dns_type_name(qtype) if qtype not in (None, "") else "",
    )


def test_it_pairs_dns_questions_with_their_answers_like_tshark(reference, model):
    """Every DNS (port 53, UDP or TCP) exchange tshark sees is in the model with the same
    name, type, rcode (null when unanswered) and set of A/AAAA answer addresses. The model may
    list other answer data (CNAME targets); only addresses are compared. mDNS and LLMNR go to
    multicast groups, so the model may show or skip them, but must not invent any."""
    engine = {}
    for entry in model["dns"]:
        key = _dns_key(entry["client"], entry["server"], entry["id"], entry["name"],
                       entry["type"])
        engine.setdefault(key, entry)
    problems = []
    for ref in reference.dns:
        if ref.protocol != "dns":
            continue
        key = _dns_key(ref.client, ref.server, ref.id, ref.name, ref.type)
        line = (f"tshark {ref.transport} {ref.client} -> {ref.server} id={ref.id} {ref.type} "
                f"{ref.name} rcode={ref.rcode} answers={sorted(ref.answers)}")
        entry = engine.get(key)
        if entry is None:
            problems.append(f"{line}: not in the model")
            continue
        answers = {str(ipaddress.ip_address(a)) for a in entry.get("answers") or [] if _is_ip(a)}
        if entry["rcode"] != ref.rcode or answers != ref.answers:
            problems.append(
                f"{line}: model rcode={entry['rcode']} answers={sorted(answers)}"
            )
    known = {
        _dns_key(r.client, r.server, r.id, r.name, r.type) for r in reference.dns
    }
    invented = [
        key for key, entry in engine.items()
        if key not in known
        and not ({parse_endpoint(entry["client"])[1], parse_endpoint(entry["server"])[1]}
                 & MULTICAST_NAME_PORTS)
    ]
    assert not problems, problems
    assert not invented, f"DNS exchanges tshark does not see: {invented}"


# -- messages --------------------------------------------------------------------------------


def test_it_draws_messages_only_between_addresses_tshark_saw(reference, model):
    """Innermost addresses for tunnelled traffic (VXLAN, Geneve, GRE), never the underlay's."""
    pairs = reference.ip_pairs
    strangers = Counter()
    for message in model["messages"]:
        src, dst = _ip_of(message["src"]), _ip_of(message["dst"])
        if src is None or dst is None:
            continue
        if (src, dst) not in pairs:
            strangers[(src, dst)] += 1
    assert not strangers, (
        f"message address pairs tshark never saw: {dict(strangers)}; tshark saw {sorted(pairs)}"
    )


def test_it_points_each_message_at_the_frame_it_came_from(reference, model):
    """`frame` is [file index, frame number] of the first copy, numbered as in Wireshark, and
    `src`/`dst` are the addresses and ports of that copy."""
    frames = reference.frames_by_number
    problems = []
    for message in model["messages"]:
        index, number = message["frame"]
        frame = frames.get(number)
        if index != 0 or frame is None:
            problems.append(f"message {message['id']}: frame {message['frame']} does not exist")
            continue
        try:
            src, sport = parse_endpoint(message["src"])
            dst, dport = parse_endpoint(message["dst"])
        except ValueError:
            continue
        got = (src, sport, dst, dport)
        want = (frame.src_ip, frame.src_port, frame.dst_ip, frame.dst_port)
        if sport is None:
            want = (frame.src_ip, None, frame.dst_ip, None)
        if got != want:
            problems.append(f"message {message['id']}: model {got}, tshark frame {number} {want}")
        if len(problems) > 20:
            break
    assert not problems, problems


# -- where the engine must differ from tshark ------------------------------------------------


def _link_types(path) -> set[int]:
    """Link types a capture declares, from the pcap header or the pcapng IDBs."""
    data = path.read_bytes()
    if len(data) < 24:
        return set()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        return {int.from_bytes(data[20:24], "little") & 0x0FFFFFFF}
    if magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        return {int.from_bytes(data[20:24], "big") & 0x0FFFFFFF}
    if magic != b"\x0a\x0d\x0d\x0a":
        return set()
    order = "little" if data[8:12] == b"\x4d\x3c\x2b\x1a" else "big"
    types, offset = set(), 0
    while offset + 12 <= len(data):
        block = int.from_bytes(data[offset:offset + 4], order)
        length = int.from_bytes(data[offset + 4:offset + 8], order)
        if length < 12:
            break
        if block == 1:
            types.add(int.from_bytes(data[offset + 8:offset + 10], order))
        offset += length
    return types


LINKTYPE_NFLOG = 239
NFLOG_FILES = [p for p in corpus_files() if LINKTYPE_NFLOG in _link_types(p)]


@pytest.mark.parametrize("corpus_file", NFLOG_FILES, ids=[corpus_id(p) for p in NFLOG_FILES])
def test_it_folds_copies_logged_at_several_netfilter_hooks_into_one_message(reference, model):
    """iptables' NFLOG target logs one packet at every hook a rule matches (LOCAL_OUT, then
    POST_ROUTING; sometimes twice at one hook from two tables). tshark shows each copy as a
    frame and flags the later ones as retransmissions; the engine must show one message per
    packet, with the hooks as its hops, and count no retransmission for the copies."""
    groups = reference.distinct_packets
    assert len(model["messages"]) == len(groups), (
        f"tshark: {reference.packets} frames holding {len(groups)} distinct packets "
        f"(copies: {[g for g in groups.values() if len(g) > 1]}); "
        f"model: {len(model['messages'])} messages"
    )
    by_frame = {m["frame"][1]: m for m in model["messages"]}
    hooks = {f.number: f.nflog_hook for f in reference.frames}
    for copies in groups.values():
        distinct_hooks = {hooks[n] for n in copies}
        if len(distinct_hooks) < 2:
            continue
        message = by_frame.get(copies[0])
        assert message is not None, f"no message points at frame {copies[0]} (copies {copies})"
        assert len(message["hops"]) >= len(distinct_hooks), (
            f"frames {copies} are one packet seen at hooks {sorted(distinct_hooks)}; "
            f"model hops: {message['hops']}"
        )
    pairs, _ = match_connections(reference, model)
    for ref, mine in pairs:
        if mine is None:
            continue
        real = ref.retransmissions - ref.copy_retransmissions
        assert mine["retransmissions"] == real, (
            f"{_describe(ref)}: tshark flags {ref.retransmissions} retransmissions, "
            f"{ref.copy_retransmissions} of them copies of one packet; "
            f"model retransmissions={mine['retransmissions']}"
        )


def test_the_streamed_json_is_the_same_document_as_the_built_one(corpus_file, model):
    """`kviz analyze --format json` streams the model with hand-written encoders (messages,
    DNS exchanges); parsed back, it must be exactly the document to_dict() builds."""
    import io

    from captures.analysis import CaptureFile, analyze_files

    result = analyze_files([CaptureFile(str(corpus_file))], inventory=None)
    out = io.StringIO()
    result.write_json(out)
    streamed = json.loads(out.getvalue())
    assert streamed == model


def test_it_reports_icmp_errors_and_truncated_dns_answers_only_where_tshark_sees_them(
    corpus_file, model
):
    """The corpus holds pings, but no ICMP error and no truncated DNS answer (tshark finds
    none): so no `icmp_error` or `dns_truncated` finding, no message labelled as either, and
    the ICMP echoes the engine names are the ones tshark reads. (Real errors and truncation
    are recorded in test_icmp.py and test_dns_truncation.py.)"""
    require_tshark()
    decode_as = [arg for spec in decode_as_for(corpus_file, corpus_dir()) for arg in ("-d", spec)]

    def frames(display_filter: str) -> set[int]:
        out = subprocess.run(
            ["tshark", "-r", str(corpus_file), "-n", *decode_as, "-T", "fields",
             "-e", "frame.number", "-Y", display_filter],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
        return {int(n) for n in out.split()}

    errors = frames("dns.flags.truncated == 1 or icmp.type in {3,4,5,11,12} "
                    "or icmpv6.type in {1,2,3,4}")
    assert not errors, "the corpus gained a capture with ICMP errors or truncation: test it"
    kinds = {a["kind"] for a in model["annotations"]}
    assert not kinds & {"icmp_error", "dns_truncated"}
    assert not any("(truncated)" in m["label"] for m in model["messages"])
    echoes = frames("icmp.type in {0,8} or icmpv6.type in {128,129}")
    named = {m["frame"][1] for m in model["messages"] if " echo re" in m["label"]}
    assert named == echoes
