"""The words for a capture, one way: `kviz analyze --format text` (narrative.py), the Markdown
postmortem (render/markdown.py) and the capture pages (web/present.py) all say things with
these, so they say them alike.

- A duration in milliseconds has one decimal from 1 ms up ("12.3 ms") and three below
  ("0.042 ms"): steps on one host take microseconds, which one decimal would show as 0.0. An
  unknown duration is the medium's placeholder ("?" in a sentence, "—" in a table cell, nothing
  on a page), chosen by the caller.
- A participant is "name (ip:port)", with "service" or "node" after the name of a Service's
  or a node's address, or the bare "ip:port" when nothing names it.
- A finding (an annotation of the model) is one sentence: `finding`.
"""

from __future__ import annotations

from typing import Any, Protocol

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


def ms(value: float | None, unknown: str = "?") -> str:
    """A duration in milliseconds (see the module docstring); `unknown` when there is none."""
    if value is None:
        return unknown
    return f"{value:.1f} ms" if value >= 1 else f"{value:.3f} ms"


class Directory(Protocol):
    """Participants by IP: the model's own (a dict), or one that knows more addresses."""

    def get(self, ip: str, default: Any = None) -> Any: ...


class Names:
    """Calling it turns an "ip:port" (or a bare ip) into what a reader knows it by, from the
    model's participants. `code`: the endpoint in backticks, for Markdown."""

    def __init__(self, participants: list[dict] | None, *, code: bool = False) -> None:
        self.by_ip: Directory = {p["ip"]: p for p in participants or ()}
        self.code = code

    def __call__(self, ep: str | None) -> str:
        if not ep:
            return "?"
        ip, _port = split_endpoint(ep)
        shown = f"`{ep}`" if self.code else ep
        found = self.by_ip.get(ip)
        if found is None or not found.get("name") or found["name"] == ip:
            return shown
        kind = found.get("kind")
        suffix = f" {kind}" if kind in ("service", "node") else ""
        return f"{found['name']}{suffix} ({shown})"


def icmp_answer(note: dict, name) -> str:
    about = f" for {note['about']}" if note.get("about") else ""
    times = f" ({note['count']}×)" if note.get("count", 1) > 1 else ""
    return f"{name(note.get('from'))} answered {note.get('error')}{about}{times}"


def tls_alert(note: dict, name) -> str:
    description = note.get("description")
    why = TLS_ALERT_MEANINGS.get(description)
    return f"{name(note.get('by'))} ended the TLS handshake with a fatal alert, {description}" + (
        f": {why}" if why else ""
    )


def finding(note: dict, name=str) -> str:
    """One annotation as a sentence (the dashboard's findings list, the Markdown postmortem).
    `name` turns an "ip:port" into what a reader knows it by."""
    kind = note.get("kind")
    if note.get("severity") and note.get("text"):
        return note["text"]  # the diagnosis says its causes in its own sentence
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
        return f"{on}{tls_alert(note, name)}."
    if kind == "zero_window":
        return (
            f"{on}{name(note.get('by'))} advertised a zero receive window "
            f"{note.get('count')} time(s): its application stopped reading for a while."
        )
    times = f" ({note['count']}×)" if note.get("count", 1) > 1 else ""
    if kind == "icmp_error":
        return f"{on}ICMP: {icmp_answer(note, name)}."
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


def grpc_call(request: dict) -> str:
    """A gRPC call and how it ended: "gRPC /pkg.Service/Method → OK" (the grpc-status of its
    trailers, with grpc-message), or its HTTP status when the trailers were not captured."""
    call = request.get("grpc") or {}
    text = f"gRPC {call.get('method') or request.get('target') or '?'}"
    if call.get("status"):
        text += f" → {call['status']}"
        if call.get("message"):
            text += f" ({call['message']})"
    elif request.get("status") is not None:
        text += f" → HTTP {request['status']}, no grpc-status in the capture"
    elif request.get("response_t") is None:
        text += " → no response in the capture"
    return text


def grpc_messages(call: dict) -> str:
    """"3 messages sent, 1 received (client streaming)": a call's length-prefixed messages."""
    sent, received = call.get("sent", 0), call.get("received", 0)
    kind = (
        "bidirectional streaming" if sent > 1 and received > 1
        else "client streaming" if sent > 1
        else "server streaming" if received > 1
        else None
    )
    text = f"{sent} message{'s' if sent != 1 else ''} sent, {received} received"
    if kind:
        text += f" ({kind})"
    if call.get("gaps"):
        text += "; the capture missed bytes of this call, so it may have had more"
    return text
