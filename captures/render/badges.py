"""What each arrow says beyond its label: the model's findings, placed on the arrows they concern.

The model ties DNAT/SNAT to the messages whose hops show the rewrite (`messages[].annotations`);
every other finding names a connection or a DNS name, so it is placed here on the one arrow
where a reader looks for it (theory of operation):

| finding | arrow |
| --- | --- |
| dnat, snat, icmp_error (anything a message references) | every message that references it |
| sidecar, control_plane | the connection's first message |
| mtls | the connection's first TLS message (else its first message) |
| pooled | the connection's first request |
| kept_open | the connection's last message ("no FIN: kept open") |
| rst | every RST of the connection |
| retransmission | every message labelled "(retransmission)", else the connection's last |
| nxdomain, dns_unanswered | the n-th NXDOMAIN answer / query naming it, for the n-th finding |
| http request N | the request message at or just after `http[].t` on its connection |
| hops | every message seen at more than one vantage point (the interface chain) |
| a diagnosis cause | every message of its `evidence` (a lost packet's farthest copy: where) |
"""

from __future__ import annotations

from bisect import bisect_left


def badge(kind: str, text: str, detail: str | None = None, annotation: int | None = None) -> dict:
    return {"kind": kind, "text": text, "detail": detail, "annotation": annotation}


def hop_chain(hops: list[dict], several_files: bool = False) -> str:
    """Where a message was seen, in path order. A tunnelled hop names its underlay
    ("eth0 (VXLAN 8472 node-1 → node-2, vni 1)"). With several files, each file's hops are
    written once under its vantage and the files joined by ⇒; a tunnel crossing from one
    file to the next is named between them, once:
    "node/node-1: cbr0 → eth0 ⇒ VXLAN 8472 node-1 → node-2, vni 1 ⇒ node/node-2: eth0 → cbr0"."""
    if not several_files:
        return " → ".join(_hop_words(hop, hop.get("interface") or "?") for hop in hops)
    runs: list[tuple[str | None, list[dict]]] = []
    for hop in hops:
        label = hop.get("interface") or "?"
        # "vantage:interface"; a label without a colon (renamed by a redacted share) is whole.
        vantage = label.partition(":")[0] if ":" in label else None
        if runs and runs[-1][0] == vantage:
            runs[-1][1].append(hop)
        else:
            runs.append((vantage, [hop]))
    parts = []
    crossed = None  # the tunnel named between the previous file and this one
    for number, (vantage, run) in enumerate(runs):
        crossing = _crossing(run[-1], runs[number + 1][1][0]) if number + 1 < len(runs) else None
        words = [_hop_words(hop, _interface_of(hop, vantage),
                            (hop is run[-1] and crossing) or (hop is run[0] and crossed))
                 for hop in run]
        parts.append((f"{vantage}: " if vantage else "") + " → ".join(words))
        if crossing:
            parts.append(crossing)
        crossed = crossing
    return " ⇒ ".join(parts)


def _interface_of(hop: dict, vantage: str | None) -> str:
    label = hop.get("interface") or "?"
    return label[len(vantage) + 1:] if vantage else label


def _tunnel_words(hop: dict) -> str | None:
    if not hop.get("tunnel"):
        return None
    return (hop.get("underlay") or {}).get("name") or hop["tunnel"].upper()


def _crossing(last: dict, first: dict) -> str | None:
    """The tunnel two consecutive files' hops were both seen in: the underlay between them."""
    words = _tunnel_words(last)
    return words if words and words == _tunnel_words(first) else None


def _hop_words(hop: dict, name: str, named_apart=None) -> str:
    """A hop's interface, with its tunnel unless the chain names that tunnel apart."""
    words = _tunnel_words(hop)
    if not words or named_apart:
        return name
    return f"{name} ({words})"


def annotation_badge(index: int, note: dict) -> dict:
    """The words for one top-level annotation, short enough to sit under an arrow."""
    kind = note.get("kind", "?")
    if kind in ("dnat", "snat"):
        return badge(kind, f"{kind.upper()} {note['before']} → {note['after']}{nat_place(note)}",
                     None, index)
    if kind == "sidecar":
        mesh = note.get("mesh") or "mesh"
        via = f" via {note['via']}" if note.get("via") else ""
        direction = note.get("direction", "?")
        text = f"{mesh} sidecar redirect ({direction}, port {note.get('port')}{via})"
        return badge(kind, text, f"app {note.get('app')}", index)
    if kind == "mtls":
        evidence = ", ".join(note.get("evidence") or [])
        return badge(kind, f"mTLS ({evidence})", f"{note.get('client')} ⇄ {note.get('server')}",
                     index)
    if kind == "pooled":
        return badge(kind, f"pooled: {note.get('requests')} requests on connection "
                     f"{note.get('connection')}", None, index)
    if kind == "kept_open":
        return badge(kind, "no FIN: kept open", "still open when the capture ended", index)
    if kind == "control_plane":
        return badge(kind, f"{note.get('mesh')} control plane ({note.get('server')})", None, index)
    if kind == "retransmission":
        return badge(kind, "retransmission",
                     f"{note.get('count')} retransmission(s) on connection "
                     f"{note.get('connection')}", index)
    if kind == "rst":
        return badge(kind, f"RST by {note.get('by')}", None, index)
    if kind == "nxdomain":
        return badge(kind, f"NXDOMAIN {note.get('name')}", None, index)
    if kind == "dns_unanswered":
        return badge(kind, f"no answer for {note.get('name')}", None, index)
    if kind == "tls_alert":
        return badge(kind, f"TLS alert {note.get('description')}", f"from {note.get('by')}",
                     index)
    if kind == "zero_window":
        return badge(kind, f"zero window from {note.get('by')}",
                     f"{note.get('count')} zero-window advertisement(s)", index)
    if kind == "dns_truncated":
        return badge(kind, f"truncated answer {note.get('name')}",
                     f"{note.get('retried_over_tcp', 0)} of {note.get('count')} asked again "
                     "over TCP", index)
    if kind == "icmp_error":
        times = f" ×{note['count']}" if note.get("count", 1) > 1 else ""
        return badge(kind, f"{note.get('error')}{times}", note.get("about"), index)
    if note.get("severity") and note.get("text"):
        return badge(kind, cause_words(note), note["text"], index)
    fields = ", ".join(f"{k}={v}" for k, v in note.items() if k != "kind")
    return badge(kind, kind, fields or None, index)


def nat_place(note: dict) -> str:
    """Where a DNAT/SNAT happened, in words: " at cbr0 → veth1"; with several captures, the
    node it happened on once rather than on each interface (" at veth1 → cbr0 on node-1")."""
    where = note.get("where")
    if not where or where == "unknown":
        return " (where: unknown)" + (f" on {note['node']}" if note.get("node") else "")
    node = note.get("node")
    prefix = f"node/{node}:"
    sides = where.split(" → ")
    if node and all(side.startswith(prefix) for side in sides):
        return f" at {' → '.join(side[len(prefix):] for side in sides)} on {node}"
    return f" at {where}"


def cause_words(note: dict) -> str:
    """A diagnosis cause in a few words, under each arrow of its evidence."""
    kind = note.get("kind")
    if kind == "lost":
        return "✗ SYN lost: no answer"
    if kind == "no_endpoints":
        return f"✗ no endpoints: {note.get('name')}"
    if kind == "refused":
        return f"✗ refused by {note.get('by_name') or note.get('by')}"
    if kind == "dns_retry":
        return f"✗ DNS asked again ({note.get('attempts')} times)"
    if kind == "dns_search_expansion":
        return f"search list: +{note.get('extra_queries')} queries for {note.get('name')}"
    if kind == "mtu_blackhole":
        return f"✗ MTU black hole: {note.get('lost_size')} B never delivered"
    if kind == "tls_rejected":
        return "✗ TLS refused" + (" (inferred)" if note.get("inferred") else "")
    if kind == "protocol_mismatch":
        return f"✗ {note.get('seen')} to a port expecting {note.get('expected')}"
    if kind == "port_reuse":
        return "✗ port reused: challenge ACK"
    if kind == "capture_missed_loopback":
        return "no lo captured: the app's side of its sidecar is missing"
    return kind or "?"


def lost_here(note: dict) -> str:
    """The mark on a lost packet's farthest copy: where it was last seen, and not after."""
    seen = note.get("last_seen") or {}
    where = seen.get("interface") or "?"
    if seen.get("vantage"):
        where = f"{seen['vantage']}:{where}"
    nxt = (note.get("next_expected") or {}).get("description")
    return f"✗ lost after {where}" + (f", never on {nxt}" if nxt else "")


def request_badge(request: dict) -> dict:
    stream = f" (stream {request['stream']})" if request.get("stream") is not None else ""
    what = f"{request['method']} {request['target']}" if request.get("method") else None
    return badge("request", f"request {request['n']} on connection {request['connection']}"
                 f"{stream}", what)


class ConnectionIndex:
    """Rows of interest per connection, gathered in the one pass over the messages."""

    def __init__(self) -> None:
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.first_tls: dict[int, int] = {}
        self.resets: dict[int, list[int]] = {}
        self.retransmissions: dict[int, list[int]] = {}
        self.request_rows: dict[int, list[tuple[float, int]]] = {}
        self.nxdomain_rows: dict[str, list[int]] = {}
        self.query_rows: dict[str, list[int]] = {}
        self.row_of: dict[int, int] = {}  # message id -> row

    def see(self, row: int, message: dict) -> None:
        self.row_of[message["id"]] = row
        connection = message.get("connection")
        label = message.get("label") or ""
        if connection is not None:
            self.first.setdefault(connection, row)
            self.last[connection] = row
            phase = message.get("phase")
            if phase == "tls":
                self.first_tls.setdefault(connection, row)
            elif phase == "request":
                self.request_rows.setdefault(connection, []).append((message["t"], row))
            if "R" in (message.get("flags") or ""):
                self.resets.setdefault(connection, []).append(row)
        if label.endswith("(retransmission)") and connection is not None:
            self.retransmissions.setdefault(connection, []).append(row)
        if label.startswith("DNS "):
            # "DNS NXDOMAIN AAAA name" / "DNS query A name": the name is the last word.
            words = label.split(" ")
            if words[1] == "NXDOMAIN":
                self.nxdomain_rows.setdefault(words[-1], []).append(row)
            elif words[1] == "query":
                self.query_rows.setdefault(words[-1], []).append(row)

    def request_row(self, request: dict) -> int | None:
        rows = self.request_rows.get(request.get("connection"))
        if not rows or request.get("t") is None:
            return self.first.get(request.get("connection"))
        at = bisect_left(rows, (request["t"] - 1e-7, -1))
        return rows[min(at, len(rows) - 1)][1]

    def rows_for(self, note: dict, seen_names: dict[tuple[str, str], int]) -> list[int]:
        """The rows a connection- or name-level annotation belongs on (see the table above)."""
        kind = note.get("kind")
        connection = note.get("connection")
        if note.get("severity") and note.get("evidence") is not None:
            return [self.row_of[i] for i in note["evidence"] if i in self.row_of]
        if kind in ("nxdomain", "dns_unanswered"):
            name = note.get("name") or ""
            rows = (self.nxdomain_rows if kind == "nxdomain" else self.query_rows).get(name, [])
            nth = seen_names.get((kind, name), 0)
            seen_names[(kind, name)] = nth + 1
            return [rows[min(nth, len(rows) - 1)]] if rows else []
        if connection is None or connection not in self.first:
            return []
        if kind == "mtls":
            return [self.first_tls.get(connection, self.first[connection])]
        if kind == "pooled":
            requests = self.request_rows.get(connection)
            return [requests[0][1] if requests else self.first[connection]]
        if kind == "kept_open":
            return [self.last[connection]]
        if kind == "rst":
            return self.resets.get(connection) or [self.last[connection]]
        if kind == "retransmission":
            return self.retransmissions.get(connection) or [self.last[connection]]
        return [self.first[connection]]
