"""The model as an expert would tell it after an hour with tcpdump: what happened first
(happened.py), then one line per step, in time order (DNS answers with latency, each connection
with its NAT and how it ended, each request with its status and time, what the mesh did). The
words are words.py's."""

from __future__ import annotations

from . import happened
from .words import Names, grpc_call, grpc_messages, icmp_answer, ms, tls_alert

# Events at the same time are told in this order (ICMP errors rank with requests).
DNS, OPENED, MESH, REQUEST, CLOSED = range(5)


def narrate(model) -> list[str]:
    """The capture's facts, then one line per event, in time order since the capture began."""
    name = Names(model.participants)
    events = [
        *_dns_events(model.dns, name),
        *_connection_events(model.connections, model.annotations, name),
        *_http_events(model.http),
        *_icmp_events(model.annotations, name),
    ]
    events.sort(key=lambda e: (e[0], e[1]))
    return [
        *_capture_lines(model.capture),
        *happened.text_lines(model.annotations, name),
        *(f"{t * 1000:10.3f} ms  {text}" for t, _order, text in events),
    ]


def _capture_lines(capture: dict) -> list[str]:
    """What was read, and what went wrong reading it."""
    return [
        f"capture: {len(capture['files'])} file(s), {capture['packets']} packets, "
        f"{capture['messages']} logical messages, {capture['duration']:.3f} s"
        + (" (PARTIAL)" if capture["partial"] else ""),
        *(f"warning: {w}" for w in capture["warnings"]),
    ]


def _dns_events(exchanges: list[dict], name) -> list[tuple[float, int, str]]:
    """Each question, who asked whom, and the answer with its latency."""
    events = []
    for exchange in exchanges:
        t = exchange["t"] if exchange["t"] is not None else 0.0
        who = f"{name(exchange['client'])} asked {name(exchange['server'])}"
        query = f"{exchange['type']} {exchange['name']}"
        if exchange["rcode"] is None:
            text = f"DNS  {who}: {query}: no answer in the capture"
        elif exchange["rcode"] != "NOERROR":
            text = f"DNS  {who}: {query} → {exchange['rcode']} in {ms(exchange['latency_ms'])}"
        else:
            answers = ", ".join(exchange["answers"][:4]) or "no records"
            text = f"DNS  {who}: {query} → {answers} in {ms(exchange['latency_ms'])}"
        if exchange.get("truncated"):
            text += f" over {exchange['transport'].upper()}, truncated (too big)"
        if exchange.get("retries"):
            text += f" (asked {exchange['retries'] + 1} times)"
        events.append((t, DNS, text))
    return events


def _connection_events(connections, annotations, name) -> list[tuple[float, int, str]]:
    """Each connection opening, what the mesh did to it, and its end."""
    events = []
    for conn in connections:
        start = conn["timing"]["start"]
        notes = [annotations[i] for i in conn["annotations"]]
        events.append((start, OPENED, _opened(conn, notes, name)))
        events += [(start, MESH, text) for text in _mesh_lines(conn, notes, name)]
        end = start + (conn["timing"]["total_ms"] or 0) / 1000
        events.append((end, CLOSED, _closed(conn, notes, name)))
    return events


def _opened(conn: dict, notes: list[dict], name) -> str:
    """Who connected to whom, through which NAT, how the handshake went, and TLS."""
    timing = conn["timing"]
    text = f"TCP  #{conn['id']} {name(conn['client'])} → {name(conn['server'])}"
    for note in notes:
        if note["kind"] in ("dnat", "snat"):
            text += (
                f"; {note['kind'].upper()} {note['before']} → {name(note['after'])}"
                f" at {note['where']}"
            )
    handshake = conn["handshake"]
    if handshake == "complete":
        text += f"; handshake {ms(timing['connect_ms'])}"
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
            text += f" in {ms(timing['tls_ms'])}"
        if tls.get("decrypted"):
            text += "; decrypted with the key log"
            if tls.get("decryption"):
                text += f" ({tls['decryption']})"
        elif tls.get("decryption"):
            text += f"; not decrypted: {tls['decryption']}"
    return text


def _mesh_lines(conn: dict, notes: list[dict], name) -> list[str]:
    """Sidecars, mutual TLS, fatal TLS alerts and control-plane traffic on a connection."""
    lines = []
    for note in notes:
        kind = note["kind"]
        if kind == "sidecar":
            lines.append(
                f"MESH #{conn['id']} {note['mesh']} sidecar "
                f"{note['direction']} interception on port {note['port']} "
                f"for app {name(note['app'])}"
            )
        elif kind == "mtls":
            lines.append(f"MESH #{conn['id']} mutual TLS (evidence: {', '.join(note['evidence'])})")
        elif kind == "tls_alert":
            lines.append(f"TLS  #{conn['id']} {tls_alert(note, name)}")
        elif kind == "control_plane":
            lines.append(
                f"MESH #{conn['id']} {note['mesh']} control plane traffic to {note['server']}"
            )
    return lines


def _closed(conn: dict, notes: list[dict], name) -> str:
    """How a connection ended, after how long, and what went on in it."""
    closed = conn["closed"]
    if closed == "open" and conn.get("handshake") == "no-answer":
        tail = "never answered"
    elif closed == "open":
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
    return f"TCP  #{conn['id']} {tail} after {ms(conn['timing']['total_ms'])}" + (
        f"; {'; '.join(extras)}" if extras else ""
    )


def _http_events(requests: list[dict]) -> list[tuple[float, int, str]]:
    """Each request and its answer, with the time to its first byte."""
    events = []
    for request in requests:
        if request.get("grpc") is not None:
            events.append((request["t"], REQUEST, _grpc_line(request)))
            continue
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
            outcome = f"{request['status']} in {ms(request['ttfb_ms'])}"
        elif request["response_t"] is not None:
            outcome = f"response in {ms(request['ttfb_ms'])}"
        else:
            outcome = "no response in the capture"
        events.append(
            (
                request["t"],
                REQUEST,
                f"HTTP #{request['connection']} request {request['n']}: {what}{host} → {outcome}",
            )
        )
    return events


def _grpc_line(request: dict) -> str:
    """A gRPC call: its method, grpc-status, first response time and messages each way."""
    stream = f" (HTTP/2 stream {request['stream']})" if request.get("stream") else ""
    host = f" (Host {request['host']})" if request.get("host") else ""
    call = grpc_call(request)
    first = f"; first response in {ms(request['ttfb_ms'])}" if request["response_t"] else ""
    return (
        f"gRPC #{request['connection']} call {request['n']}: {call.removeprefix('gRPC ')}"
        f"{stream}{host}{first}; {grpc_messages(request['grpc'])}"
    )


def _icmp_events(annotations: list[dict], name) -> list[tuple[float, int, str]]:
    """ICMP errors, each where its first one came."""
    return [
        (note["t"], REQUEST, f"ICMP {icmp_answer(note, name)}")
        for note in annotations
        if note.get("kind") == "icmp_error"
    ]
