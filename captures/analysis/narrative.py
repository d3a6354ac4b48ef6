"""The model as an expert would tell it after an hour with tcpdump: one line per step, in time
order (DNS answers with latency, each connection with its NAT and how it ended, each request
with its status and time, what the mesh did)."""

from __future__ import annotations

from .records import split_endpoint

TLS_ALERT_MEANINGS = {
    "unknown_ca": "it does not trust the authority that signed its peer's certificate",
    "bad_certificate": "it refused its peer's certificate",
    "certificate_unknown": "it refused its peer's certificate",
    "certificate_expired": "a certificate has expired",
    "certificate_required": "a client certificate is required (mutual TLS) and none came",
    "handshake_failure": "no acceptable parameters, or a certificate it requires was missing",
    "protocol_version": "no TLS version in common",
    "no_application_protocol": "no ALPN protocol in common",
    "unrecognized_name": "the server does not know the name asked for (SNI)",
    "access_denied": "the peer is not allowed",
}


def _ms(value) -> str:
    return "?" if value is None else f"{value:.1f} ms" if value >= 1 else f"{value:.3f} ms"


class _Names:
    def __init__(self, participants):
        self.by_ip = {p["ip"]: p for p in participants}

    def __call__(self, ep: str | None) -> str:
        if not ep:
            return "?"
        ip, _port = split_endpoint(ep)
        found = self.by_ip.get(ip)
        if found is None or found["name"] == ip:
            return ep
        kind = found.get("kind")
        suffix = f" {kind}" if kind in ("service", "node") else ""
        return f"{found['name']}{suffix} ({ep})"


def _icmp_answer(note: dict, name) -> str:
    about = f" for {note['about']}" if note.get("about") else ""
    times = f" ({note['count']}×)" if note.get("count", 1) > 1 else ""
    return f"{name(note.get('from'))} answered {note.get('error')}{about}{times}"


def _tls_alert(note: dict, name) -> str:
    description = note.get("description")
    why = TLS_ALERT_MEANINGS.get(description)
    return f"{name(note.get('by'))} ended the TLS handshake with a fatal alert, {description}" + (
        f": {why}" if why else ""
    )


def finding(note: dict, name=str) -> str:
    """One annotation as a sentence (the dashboard's findings list, the Markdown postmortem).
    `name` turns an "ip:port" into what a reader knows it by."""
    kind = note.get("kind")
    connection = note.get("connection")
    on = f"Connection {connection}: " if connection is not None else ""
    if kind in ("dnat", "snat"):
        what = "destination" if kind == "dnat" else "source"
        where = note.get("where")
        at = f" between {where}" if where and where != "unknown" else ""
        how = " by a REDIRECT to a local port" if note.get("mechanism") == "redirect" else ""
        seen = " (seen in the replies)" if note.get("seen_on") == "reply" else ""
        return (
            f"{on}{kind.upper()}: the {what} {note.get('before')} was rewritten to "
            f"{name(note.get('after'))}{how}{at}{seen}."
        )
    if kind == "sidecar":
        via = f" via {note['via']}" if note.get("via") else ""
        meant = f" (the app meant {note['original_dst']})" if note.get("original_dst") else ""
        return (
            f"{on}the {note.get('mesh')} sidecar intercepted {note.get('direction')} traffic "
            f"on port {note.get('port')}{via} for the app at {name(note.get('app'))}{meant}."
        )
    if kind == "mtls":
        return (
            f"{on}mutual TLS between {name(note.get('client'))} and "
            f"{name(note.get('server'))} (evidence: {', '.join(note.get('evidence') or [])})."
        )
    if kind == "pooled":
        basis = (
            " (counted by encrypted request/response turns)"
            if note.get("basis", "requests") != "requests"
            else ""
        )
        return f"{on}{note.get('requests')} requests reused this one connection{basis}."
    if kind == "kept_open":
        return f"{on}no FIN: the connection was kept open when the capture ended."
    if kind == "control_plane":
        return f"{on}{note.get('mesh')} control-plane traffic to {name(note.get('server'))}."
    if kind == "retransmission":
        return f"{on}{note.get('count')} retransmitted segment(s)."
    if kind == "rst":
        return f"{on}reset (RST) by {name(note.get('by'))}."
    if kind == "tls_alert":
        return f"{on}{_tls_alert(note, name)}."
    if kind == "zero_window":
        return (
            f"{on}{name(note.get('by'))} advertised a zero receive window "
            f"{note.get('count')} time(s): its application stopped reading for a while."
        )
    times = f" ({note['count']}×)" if note.get("count", 1) > 1 else ""
    if kind == "icmp_error":
        return f"{on}ICMP: {_icmp_answer(note, name)}."
    if kind == "nxdomain":
        return f"DNS: {note.get('name')} does not exist (NXDOMAIN){times}."
    if kind == "dns_unanswered":
        return f"DNS: the query for {note.get('name')} got no answer in the capture{times}."
    if kind == "dns_truncated":
        retried, count = note.get("retried_over_tcp", 0), note.get("count", 1)
        if retried >= count:
            then = "the client asked again over TCP"
        elif retried:
            then = f"{retried} of them were asked again over TCP"
        else:
            then = "no retry over TCP was seen, so the client had only part of the answer"
        return (
            f"DNS: the answer for {note.get('name')} was too big for UDP and came "
            f"truncated{times}; {then}."
        )
    fields = ", ".join(f"{k} {v}" for k, v in note.items() if k not in ("kind", "connection"))
    return f"{on}{kind}: {fields}."


def narrate(model) -> list[str]:
    name = _Names(model.participants)
    capture = model.capture
    lines = [
        f"capture: {len(capture['files'])} file(s), {capture['packets']} packets, "
        f"{capture['messages']} logical messages, {capture['duration']:.3f} s"
        + (" (PARTIAL)" if capture["partial"] else "")
    ]
    lines += [f"warning: {w}" for w in capture["warnings"]]
    events: list[tuple[float, int, str]] = []
    annotations = model.annotations

    for exchange in model.dns:
        t = exchange["t"] if exchange["t"] is not None else 0.0
        who = f"{name(exchange['client'])} asked {name(exchange['server'])}"
        query = f"{exchange['type']} {exchange['name']}"
        if exchange["rcode"] is None:
            text = f"DNS  {who}: {query}: no answer in the capture"
        elif exchange["rcode"] != "NOERROR":
            text = f"DNS  {who}: {query} → {exchange['rcode']} in {_ms(exchange['latency_ms'])}"
        else:
            answers = ", ".join(exchange["answers"][:4]) or "no records"
            text = f"DNS  {who}: {query} → {answers} in {_ms(exchange['latency_ms'])}"
        if exchange.get("truncated"):
            text += f" over {exchange['transport'].upper()}, truncated (too big)"
        if exchange.get("retries"):
            text += f" (asked {exchange['retries'] + 1} times)"
        events.append((t, 0, text))

    for conn in model.connections:
        timing = conn["timing"]
        start = timing["start"]
        notes = [annotations[i] for i in conn["annotations"]]
        text = f"TCP  #{conn['id']} {name(conn['client'])} → {name(conn['server'])}"
        for note in notes:
            if note["kind"] in ("dnat", "snat"):
                text += (
                    f"; {note['kind'].upper()} {note['before']} → {name(note['after'])}"
                    f" at {note['where']}"
                )
        handshake = conn["handshake"]
        if handshake == "complete":
            text += f"; handshake {_ms(timing['connect_ms'])}"
        elif handshake == "midstream":
            text += "; already open when the capture began"
        else:
            text += f"; handshake {handshake}"
        tls = conn["tls"]
        if tls:
            text += f"; {tls['version'] or 'TLS'}"
            if tls["sni"]:
                text += f" SNI {tls['sni']}"
            if tls["alpn"]:
                text += f" ALPN {tls['alpn']}"
            if timing["tls_ms"] is not None:
                text += f" in {_ms(timing['tls_ms'])}"
        events.append((start, 1, text))
        for note in notes:
            kind = note["kind"]
            if kind == "sidecar":
                events.append(
                    (
                        start,
                        2,
                        f"MESH #{conn['id']} {note['mesh']} sidecar "
                        f"{note['direction']} interception on port {note['port']} "
                        f"for app {name(note['app'])}",
                    )
                )
            elif kind == "mtls":
                events.append(
                    (
                        start,
                        2,
                        f"MESH #{conn['id']} mutual TLS (evidence: {', '.join(note['evidence'])})",
                    )
                )
            elif kind == "tls_alert":
                events.append((start, 2, f"TLS  #{conn['id']} {_tls_alert(note, name)}"))
            elif kind == "control_plane":
                events.append(
                    (
                        start,
                        2,
                        f"MESH #{conn['id']} {note['mesh']} control plane "
                        f"traffic to {note['server']}",
                    )
                )
        end = start + (timing["total_ms"] or 0) / 1000
        closed = conn["closed"]
        if closed == "open":
            tail = "no FIN: kept open at the end of the capture"
        elif closed == "rst":
            rst = next((n for n in notes if n["kind"] == "rst"), None)
            tail = f"reset by {name(rst['by'])}" if rst else "reset"
        else:
            tail = "closed by FIN"
        extras = []
        if conn["requests"] > 1:
            extras.append(f"{conn['requests']} requests on this connection (pooled)")
        if conn["retransmissions"]:
            extras.append(f"{conn['retransmissions']} retransmissions")
        if conn.get("zero_windows"):
            extras.append(f"{conn['zero_windows']} zero-window advertisements")
        events.append(
            (
                end,
                4,
                f"TCP  #{conn['id']} {tail} after {_ms(timing['total_ms'])}"
                + (f"; {'; '.join(extras)}" if extras else ""),
            )
        )

    for request in model.http:
        what = (
            " ".join(
                str(part)
                for part in (
                    request["method"],
                    request["target"],
                    f"(HTTP/2 stream {request['stream']})" if request.get("stream") else None,
                )
                if part
            )
            or "request"
        )
        host = f" (Host {request['host']})" if request.get("host") else ""
        if request["status"] is not None:
            outcome = f"{request['status']} in {_ms(request['ttfb_ms'])}"
        elif request["response_t"] is not None:
            outcome = f"response in {_ms(request['ttfb_ms'])}"
        else:
            outcome = "no response in the capture"
        events.append(
            (
                request["t"],
                3,
                f"HTTP #{request['connection']} request {request['n']}: {what}{host} → {outcome}",
            )
        )

    for note in annotations:
        if note.get("kind") == "icmp_error":
            events.append((note["t"], 3, f"ICMP {_icmp_answer(note, name)}"))

    events.sort(key=lambda e: (e[0], e[1]))
    lines += [f"{t * 1000:10.3f} ms  {text}" for t, _order, text in events]
    return lines
