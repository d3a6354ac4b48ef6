"""Two captures side by side: what the same requests did differently (`kviz diff A B`, the
compare page, GET /api/captures/<a>/diff/<b>/).

Plain data in (two `kviz.sequence/1` documents), plain data out (`kviz.diff/1`, docs/api.md).

Theory of operation
-------------------
1. Each capture is cut into requests: one per HTTP request read (its connection's facts with
   it), one per TCP connection where none was read (a SYN never answered, TLS that could not be
   read). A request is known by where it went, as a reader names it (the Service or pod the
   inventory names, the DNS name an answer gave the address, else the HTTP Host, else the
   address), its port, and its method and path when read. Lookups are their own items, known
   by name and type.
2. Requests are paired in order of time: first those that agree on everything (the n-th
   `GET nginx:80 /` of A with the n-th of B), then what is left by destination and port alone,
   so that a request that failed before it could be sent (no method, no path) still pairs with
   the one that worked. What pairs with nothing is "only in A" or "only in B".
3. A pair is compared phase by phase (dns, handshake, path, tls, request, teardown, findings),
   each row saying A's and B's value in words and whether they differ. Addresses that change
   from run to run (a client's ephemeral port, the connection's number) are never compared.
   Timings differ when they are at least 2× apart and 1 ms apart: a healthy request is not
   "different" for taking 0.2 ms instead of 0.15 ms.
4. Findings (the diagnosis' causes and the symptoms: retransmissions, resets, NXDOMAIN, ...)
   are compared by kind and subject (the request, the DNS name); the facts of the path (DNAT,
   sidecar, mTLS, pooling) are compared as rows of their pair, not as findings.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import happened
from .records import split_endpoint
from .words import Names, finding, ms

SCHEMA = "kviz.diff/1"
PHASES = ("dns", "handshake", "path", "tls", "request", "teardown", "findings")
# Annotations that describe the path rather than a problem: rows of a pair, not findings.
FACT_KINDS = frozenset({"dnat", "snat", "sidecar", "mtls", "pooled", "control_plane"})
TIME_RATIO = 2.0  # a timing differs when one side took at least this many times the other
TIME_FLOOR_MS = 1.0  # ... and at least this much longer
MAX_ITEMS = 2_000  # requests and lookups compared per capture; the rest are counted
OUTCOMES = {
    "answered": "answered (handshake completed)",
    "rejected": "rejected (a reset or an ICMP error answered the SYN)",
    "unanswered": "never answered",
    "reset_by_client": "reset by the client",
    "reset_by_server": "reset by the server",
    "half_open": "half open (one side closed, the other never did)",
    "midstream": "began before the capture",
}
CLOSED = {"fin": "FIN", "rst": "RST", "open": "no FIN: kept open"}
NONE = "—"


class Side:
    """One capture, cut into requests and lookups (theory of operation, step 1)."""

    def __init__(self, doc: dict, label: str) -> None:
        self.label = label
        self.doc = doc
        self.names = Names(doc.get("participants"))
        self.by_ip = {p["ip"]: p for p in doc.get("participants") or ()}
        annotations = doc.get("annotations") or []
        self.annotations = annotations
        self.connections = {c["id"]: c for c in doc.get("connections") or ()}
        self.first_hops, self.reply_hops = _first_hops(doc.get("messages") or (),
                                                       self.connections)
        self.dns = list(doc.get("dns") or ())
        # Which DNS name gave an address, and the answers that gave it, in time order.
        self.asked: dict[str, str] = {}
        self.answers: dict[str, list[dict]] = {}
        for exchange in sorted(self.dns, key=lambda e: e.get("t") or 0):
            for value in exchange.get("answers") or ():
                self.asked.setdefault(value, exchange.get("name") or "")
                self.answers.setdefault(value, []).append(exchange)
        by_connection: dict[int, list[dict]] = {}
        for request in doc.get("http") or ():
            by_connection.setdefault(request.get("connection"), []).append(request)
        self.requests: list[dict] = []
        for conn in sorted(self.connections.values(),
                           key=lambda c: (c.get("timing") or {}).get("start") or 0):
            for request in by_connection.get(conn["id"]) or [None]:
                self.requests.append(self._request(conn, request))
        self.lookups = [self._lookup(exchange) for exchange in self.dns]
        self.more = max(0, len(self.requests) - MAX_ITEMS) + max(0, len(self.lookups) - MAX_ITEMS)
        self.requests, self.lookups = self.requests[:MAX_ITEMS], self.lookups[:MAX_ITEMS]

    def destination(self, conn: dict, request: dict | None) -> str:
        ip, _port = split_endpoint(conn.get("server") or "")
        named = self.by_ip.get(ip) or {}
        if named.get("name") and named["name"] != ip and named.get("kind") != "dns-name":
            return named["name"]
        if ip in self.asked:
            return self.asked[ip]
        if request and request.get("host"):
            return str(request["host"]).split(":")[0]
        return ip

    def _request(self, conn: dict, request: dict | None) -> dict:
        _ip, port = split_endpoint(conn.get("server") or "")
        return {"key": {"destination": self.destination(conn, request), "port": port,
                        "method": (request or {}).get("method"),
                        "target": (request or {}).get("target")},
                "connection": conn, "http": request,
                "t": (request or {}).get("t") or (conn.get("timing") or {}).get("start") or 0}

    def _lookup(self, exchange: dict) -> dict:
        return {"key": {"name": exchange.get("name"), "type": exchange.get("type")},
                "exchange": exchange, "t": exchange.get("t") or 0}

    def lookup_for(self, conn: dict) -> dict | None:
        """The answered lookup that gave the connection its address, if the capture has it."""
        ip, _port = split_endpoint(conn.get("server") or "")
        start = (conn.get("timing") or {}).get("start") or 0
        found = None
        for exchange in self.answers.get(ip) or ():
            if (exchange.get("t") or 0) > start:
                break
            found = exchange
        return found

    def notes_of(self, conn: dict) -> list[dict]:
        return [self.annotations[i] for i in conn.get("annotations") or ()
                if 0 <= i < len(self.annotations)]


def _first_hops(messages: Iterable[dict], connections: dict) -> tuple[dict, dict]:
    """Each connection's first packet from its client (the SYN) and first from its server
    (the SYN-ACK, or the reset), each with its hops: how far each direction got, and through
    which interfaces."""
    sent: dict[int, list[dict]] = {}
    answered: dict[int, list[dict]] = {}
    for message in messages:
        ident = message.get("connection")
        if ident is None or ident not in connections:
            continue
        first = sent if message.get("src") == connections[ident].get("client") else answered
        if ident not in first:
            first[ident] = message.get("hops") or []
            if len(sent) == len(answered) == len(connections):
                break
    return sent, answered


# -- pairing (step 2) ---------------------------------------------------------------------------


def _pair(items_a: list[dict], items_b: list[dict], keys) -> tuple[list, list, list]:
    """(pairs, only in A, only in B); `keys` are functions of an item's key, most exact first."""
    left_a, left_b = list(items_a), list(items_b)
    pairs: list[tuple[dict, dict]] = []
    for key in keys:
        waiting: dict[tuple, list[dict]] = {}
        for item in left_b:
            waiting.setdefault(key(item["key"]), []).append(item)
        rest_a = []
        for item in left_a:
            queue = waiting.get(key(item["key"]))
            if queue:
                pairs.append((item, queue.pop(0)))
            else:
                rest_a.append(item)
        taken = {id(b) for _a, b in pairs}
        left_a, left_b = rest_a, [item for item in left_b if id(item) not in taken]
    pairs.sort(key=lambda pair: pair[0]["t"])
    return pairs, left_a, left_b


def _exact(key: dict) -> tuple:
    return tuple(key.values())


def _where_to(key: dict) -> tuple:
    return (key["destination"], key["port"])


# -- words for values ----------------------------------------------------------------------------


def _hop(hop: dict) -> str:
    direction = f" ({hop['direction']})" if hop.get("direction") else ""
    return f"{hop.get('interface') or '?'}{direction}"


def _hops(hops: list[dict]) -> str:
    return " → ".join(_hop(h) for h in hops) if hops else NONE


def _tls(conn: dict) -> str:
    tls = conn.get("tls")
    if not tls:
        return "none seen" if conn.get("app") != "tls" else "TLS (handshake not read)"
    parts = [tls.get("version") or "TLS"]
    if tls.get("sni"):
        parts.append(f"SNI {tls['sni']}")
    if tls.get("alpn"):
        parts.append(f"ALPN {tls['alpn']}")
    if tls.get("client_certificate"):
        parts.append("client certificate")
    elif tls.get("certificate_request"):
        parts.append("certificate requested, no client certificate seen")
    for alert in tls.get("alerts") or ():
        parts.append(f"{alert.get('by')} alert {alert.get('description')}")
    return ", ".join(parts)


def _http(request: dict | None) -> str:
    if not request:
        return "none read"
    what = " ".join(str(x) for x in (request.get("method"), request.get("target")) if x) \
        or f"stream {request.get('stream')}"
    status = request.get("status")
    return f"{what} → {status if status is not None else 'no response seen'}"


def _time(value) -> str:
    return ms(value, unknown=NONE)


def _timing_differs(a, b) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    low, high = sorted((a, b))
    return high - low >= TIME_FLOOR_MS and high >= low * TIME_RATIO


def _row(phase: str, aspect: str, a, b, differs: bool | None = None) -> dict:
    a = NONE if a in (None, "") else str(a)
    b = NONE if b in (None, "") else str(b)
    return {"phase": phase, "aspect": aspect, "a": a, "b": b,
            "differs": (a != b) if differs is None else differs}


# -- comparing a pair (step 3) -------------------------------------------------------------------


def _dns_rows(phase: str, a: dict | None, b: dict | None) -> list[dict]:
    def answers(e):
        return ", ".join(e.get("answers") or []) or "no records" if e else None

    def rcode(e):
        return (e.get("rcode") or "unanswered") if e else None

    return [
        _row(phase, "question", a and f"{a.get('type')} {a.get('name')}",
             b and f"{b.get('type')} {b.get('name')}"),
        _row(phase, "rcode", rcode(a), rcode(b)),
        _row(phase, "answers", answers(a), answers(b)),
        _row(phase, "asked", a and f"{(a.get('retries') or 0) + 1} time(s)",
             b and f"{(b.get('retries') or 0) + 1} time(s)"),
        _row(phase, "time", _time(a and a.get("latency_ms")), _time(b and b.get("latency_ms")),
             _timing_differs(a and a.get("latency_ms"), b and b.get("latency_ms"))),
    ]


def _nat(side: Side, conn: dict) -> tuple[str | None, str | None]:
    """The DNAT target in words, and where it happened."""
    for note in side.notes_of(conn):
        if note.get("kind") == "dnat":
            return side.names(note.get("after")), note.get("where")
    after = conn.get("server_after_nat")
    return (side.names(after) if after else "none seen"), None


def _mtls(side: Side, conn: dict) -> str:
    for note in side.notes_of(conn):
        if note.get("kind") == "mtls":
            return "mTLS (" + ", ".join(note.get("evidence") or []) + ")"
    return "none seen"


def _sidecar(side: Side, conn: dict) -> str:
    found = [f"{n.get('mesh')} {n.get('direction')} port {n.get('port')}"
             for n in side.notes_of(conn) if n.get("kind") == "sidecar"]
    return ", ".join(found) or "none seen"


def _findings_of(side: Side, conn: dict) -> list[dict]:
    return [note for note in side.notes_of(conn) if note.get("kind") not in FACT_KINDS]


def _request_rows(pa: Side, a: dict | None, pb: Side, b: dict | None) -> list[dict]:
    ca, cb = (a or {}).get("connection"), (b or {}).get("connection")
    ta, tb = (ca or {}).get("timing") or {}, (cb or {}).get("timing") or {}

    def get(conn, fn):
        return fn(conn) if conn else None

    rows = _dns_rows("dns", get(ca, pa.lookup_for), get(cb, pb.lookup_for)) if (
        (ca and pa.lookup_for(ca)) or (cb and pb.lookup_for(cb))) else []
    rows += [
        _row("handshake", "outcome", get(ca, lambda c: OUTCOMES.get(c.get("outcome"),
                                                                     c.get("outcome"))),
             get(cb, lambda c: OUTCOMES.get(c.get("outcome"), c.get("outcome")))),
        _row("handshake", "retransmissions", get(ca, lambda c: c.get("retransmissions", 0)),
             get(cb, lambda c: c.get("retransmissions", 0))),
        _row("handshake", "connect", _time(ta.get("connect_ms")), _time(tb.get("connect_ms")),
             _timing_differs(ta.get("connect_ms"), tb.get("connect_ms"))),
        _row("path", "hops of the first packet",
             get(ca, lambda c: _hops(pa.first_hops.get(c["id"]) or [])),
             get(cb, lambda c: _hops(pb.first_hops.get(c["id"]) or []))),
        _row("path", "last seen at",
             get(ca, lambda c: _hop((pa.first_hops.get(c["id"]) or [{}])[-1])),
             get(cb, lambda c: _hop((pb.first_hops.get(c["id"]) or [{}])[-1]))),
        _row("path", "hops of the first reply",
             get(ca, lambda c: _hops(pa.reply_hops.get(c["id"]) or [])),
             get(cb, lambda c: _hops(pb.reply_hops.get(c["id"]) or []))),
        _row("path", "DNAT to", get(ca, lambda c: _nat(pa, c)[0]),
             get(cb, lambda c: _nat(pb, c)[0])),
        _row("path", "DNAT where", get(ca, lambda c: _nat(pa, c)[1]),
             get(cb, lambda c: _nat(pb, c)[1])),
        _row("path", "sidecar", get(ca, lambda c: _sidecar(pa, c)),
             get(cb, lambda c: _sidecar(pb, c))),
        _row("tls", "TLS", get(ca, _tls), get(cb, _tls)),
        _row("tls", "mTLS", get(ca, lambda c: _mtls(pa, c)), get(cb, lambda c: _mtls(pb, c))),
        _row("tls", "TLS time", _time(ta.get("tls_ms")), _time(tb.get("tls_ms")),
             _timing_differs(ta.get("tls_ms"), tb.get("tls_ms"))),
        _row("request", "request", get(ca, lambda c: _http(a.get("http"))),
             get(cb, lambda c: _http(b.get("http")))),
        _row("request", "TTFB", _time(((a or {}).get("http") or {}).get("ttfb_ms")),
             _time(((b or {}).get("http") or {}).get("ttfb_ms")),
             _timing_differs(((a or {}).get("http") or {}).get("ttfb_ms"),
                             ((b or {}).get("http") or {}).get("ttfb_ms"))),
        _row("teardown", "closed by", get(ca, lambda c: _closed(pa, c)),
             get(cb, lambda c: _closed(pb, c))),
        _row("teardown", "total", _time(ta.get("total_ms")), _time(tb.get("total_ms")),
             _timing_differs(ta.get("total_ms"), tb.get("total_ms"))),
    ]
    fa = {n["kind"]: n for n in (_findings_of(pa, ca) if ca else [])}
    fb = {n["kind"]: n for n in (_findings_of(pb, cb) if cb else [])}
    for kind in [*fa, *(k for k in fb if k not in fa)]:
        rows.append(_row("findings", kind,
                         _finding_words(fa[kind], pa.names) if kind in fa else "none",
                         _finding_words(fb[kind], pb.names) if kind in fb else "none",
                         kind not in fa or kind not in fb))
    # A row whose both sides are missing says nothing (e.g. TLS time of plain HTTP).
    return [r for r in rows if not (r["a"] == r["b"] == NONE)]


def _closed(side: Side, conn: dict) -> str:
    words = CLOSED.get(conn.get("closed"), conn.get("closed") or NONE)
    if conn.get("closed") == "rst":
        by = [n.get("by") for n in side.notes_of(conn) if n.get("kind") == "rst"]
        if by:
            words += f" from {side.names(by[0])}"
    return words


def _finding_words(note: dict, name) -> str:
    grade = happened.SEVERITY_WORDS.get(note.get("severity"))
    text = finding({**note, "connection": None}, name)
    return f"{grade}: {text}" if grade else text


def _title(key: dict) -> str:
    where = f"{key['destination']}:{key['port']}" if key.get("port") is not None \
        else key["destination"]
    if key.get("method") or key.get("target"):
        return f"{key.get('method') or '?'} {where}{key.get('target') or ''}"
    return f"TCP {where}"


def _connection_facts(item: dict | None, side: Side) -> dict | None:
    if item is None:
        return None
    conn = item["connection"]
    return {"connection": conn["id"], "client": side.names(conn.get("client")),
            "server": side.names(conn.get("server")), "t": round(item["t"], 6),
            "request": (item.get("http") or {}).get("n")}


def _status(rows: list[dict], a, b) -> str:
    if a is None:
        return "only_b"
    if b is None:
        return "only_a"
    return "differs" if any(r["differs"] for r in rows) else "same"


# -- findings (step 4) ---------------------------------------------------------------------------


def _subject(side: Side, note: dict) -> str:
    conn = side.connections.get(note.get("connection"))
    if conn is not None:
        _ip, port = split_endpoint(conn.get("server") or "")
        return f"{side.destination(conn, None)}:{port}"
    for key in ("name", "service", "server", "vantage"):
        if note.get(key):
            value = note[key]
            if key in ("service", "server"):
                ip, port = split_endpoint(value)
                named = side.by_ip.get(ip) or {}
                value = f"{named.get('name') or ip}:{port}" if port is not None else value
            return str(value)
    return ""


def _findings(side: Side) -> dict[tuple, dict]:
    found: dict[tuple, dict] = {}
    for note in side.annotations:
        if note.get("kind") in FACT_KINDS:
            continue
        key = (note.get("kind"), _subject(side, note))
        if key not in found:
            found[key] = {"kind": key[0], "subject": key[1],
                          "severity": note.get("severity"),
                          "text": _finding_words(note, side.names), "count": 0}
        found[key]["count"] += 1
    return found


def compare(doc_a: dict, doc_b: dict, label_a: str = "A", label_b: str = "B") -> dict:
    """The `kviz.diff/1` document of two sequence models (see the module's docstring)."""
    a, b = Side(doc_a, label_a), Side(doc_b, label_b)
    pairs, only_a, only_b = _pair(a.requests, b.requests, (_exact, _where_to))
    requests = []
    for item_a, item_b in ([*pairs, *((x, None) for x in only_a), *((None, y) for y in only_b)]):
        rows = _request_rows(a, item_a, b, item_b)
        # Named by the side that read the request (a failed one never sent its method).
        key = max((item["key"] for item in (item_a, item_b) if item),
                  key=lambda k: k.get("method") is not None)
        requests.append({
            "key": key, "title": _title(key),
            "status": _status(rows, item_a, item_b),
            "a": _connection_facts(item_a, a), "b": _connection_facts(item_b, b),
            "rows": rows,
        })
    dns_pairs, dns_a, dns_b = _pair(a.lookups, b.lookups, (_exact,))
    lookups = []
    for item_a, item_b in ([*dns_pairs, *((x, None) for x in dns_a),
                            *((None, y) for y in dns_b)]):
        ea, eb = (item_a or {}).get("exchange"), (item_b or {}).get("exchange")
        rows = [r for r in _dns_rows("dns", ea, eb) if not r["a"] == r["b"] == NONE]
        key = (item_a or item_b)["key"]
        lookups.append({
            "key": key, "title": f"DNS {key['type']} {key['name']}",
            "status": _status(rows, item_a, item_b),
            "a": {"client": a.names(ea.get("client")), "server": a.names(ea.get("server")),
                  "t": ea.get("t")} if ea else None,
            "b": {"client": b.names(eb.get("client")), "server": b.names(eb.get("server")),
                  "t": eb.get("t")} if eb else None,
            "rows": rows,
        })
    fa, fb = _findings(a), _findings(b)
    findings = {
        "only_a": [fa[k] for k in fa if k not in fb],
        "only_b": [fb[k] for k in fb if k not in fa],
        "both": [{**fa[k], "text_b": fb[k]["text"], "count_b": fb[k]["count"]}
                 for k in fa if k in fb],
    }
    every = [*requests, *lookups]
    return {
        "schema": SCHEMA,
        "a": _capture_facts(doc_a, label_a, a), "b": _capture_facts(doc_b, label_b, b),
        "summary": {
            "requests": len(requests), "lookups": len(lookups),
            "same": sum(1 for x in every if x["status"] == "same"),
            "differs": sum(1 for x in every if x["status"] == "differs"),
            "only_a": sum(1 for x in every if x["status"] == "only_a"),
            "only_b": sum(1 for x in every if x["status"] == "only_b"),
            "findings_only_a": len(findings["only_a"]),
            "findings_only_b": len(findings["only_b"]),
        },
        "requests": requests,
        "dns": lookups,
        "findings": findings,
    }


def _capture_facts(doc: dict, label: str, side: Side) -> dict:
    facts = doc.get("capture") or {}
    return {"label": label, "packets": facts.get("packets"), "start": facts.get("start"),
            "duration": facts.get("duration"), "partial": bool(facts.get("partial")),
            "requests": len(side.requests), "lookups": len(side.lookups),
            "not_compared": side.more}
