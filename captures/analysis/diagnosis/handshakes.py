"""What went wrong between TCP and the application: a TLS handshake the server refused, and a
client speaking the wrong protocol (plaintext to a TLS-only port, TLS to a plaintext one).

TLS 1.2 shows a refusal in the clear: the server's CertificateRequest, the client's empty
Certificate, the server's fatal alert. TLS 1.3 encrypts all of that: a server that requires a
client certificate lets the client finish, then sends one short encrypted record (the alert,
24 bytes with AES-GCM) and closes. That pattern is reported as an inference, and said to be
one. A handshake the server refused is never called mutual TLS (`withdrawn_mtls`).
"""

from __future__ import annotations

from ..records import endpoint_host, endpoint_port, split_endpoint
from ..words import TLS_ALERT_MEANINGS
from .view import CaptureView

ALERT_SIZED = 64  # bytes of TLS payload: an encrypted alert record, never a ticket or data
TLS_PORTS = {443, 6443, 8443, 9443}
MESH_MTLS_PORTS = {15006: "Istio's inbound mutual TLS", 4143: "Linkerd's inbound mutual TLS"}


def _from(message: dict, endpoint: str) -> bool:
    return message["hops"][0]["src"] == endpoint or message["src"] == endpoint


def _server_side(view: CaptureView, conn: dict) -> set[str]:
    """The server's endpoints as the messages show them (before and after a DNAT)."""
    sides = {conn["server"]}
    if conn.get("server_after_nat"):
        sides.add(conn["server_after_nat"])
    return sides


def tls13_refusal(view: CaptureView, conn: dict) -> list[dict] | None:
    """The messages that show a TLS 1.3 refusal after the client's Finished, else None."""
    server = _server_side(view, conn)
    if not view.closed_by(conn["id"], server):
        return None  # a refusal ends with the server's close
    messages = view.of_connection(conn["id"])
    hello = next((m for m in messages if "ServerHello" in m["label"]), None)
    if hello is None:
        return None
    after = [m for m in messages if m["t"] > hello["t"]]
    finished = next((m for m in after if m["src"] not in server
                     and "application data" in m["label"]), None)
    if finished is None:
        return None
    server_payload = [m for m in after if m["src"] in server and m["len"] > 0]
    closes = [m for m in after if m["src"] in server and set(m.get("flags") or "") & {"F", "R"}]
    if (len(server_payload) == 1 and server_payload[0]["len"] <= ALERT_SIZED
            and "application data" in server_payload[0]["label"] and closes):
        return [finished, server_payload[0], closes[0]]
    return None


def _mtls_expected(conn: dict, view: CaptureView) -> bool:
    port = split_endpoint(conn["server"])[1]
    tls = conn.get("tls") or {}
    mesh = any(a.get("kind") in ("sidecar", "mtls") and a.get("connection") == conn["id"]
               for a in view.annotations)
    return port in MESH_MTLS_PORTS or mesh or bool(tls.get("certificate_request"))


def rejections(view: CaptureView) -> list[dict]:
    findings = []
    for conn in view.connections:
        tls = conn.get("tls")
        if not tls:
            continue
        client, server = view.names(conn["client"]), view.names(conn["server"])
        fatal = [a for a in tls.get("alerts") or () if a["by"] == "server"
                 and a["level"] == "fatal"]
        if fatal:
            messages = view.of_connection(conn["id"])
            description = fatal[0]["description"]
            if tls.get("certificate_request") and not tls.get("client_certificate"):
                reason = "the server required a client certificate and none was sent"
            else:
                reason = TLS_ALERT_MEANINGS.get(description, description)
            evidence = [m["id"] for m in messages if m["label"].startswith("TLS ")
                        and ("CertificateRequest" in m["label"] or "Certificate," in m["label"]
                             or "Alert" in m["label"])]
            findings.append({
                "kind": "tls_rejected", "severity": "error", "connection": conn["id"],
                "server": conn["server"], "by": "server", "reason": reason, "inferred": False,
                "text": (f"{server} refused the {tls.get('version') or 'TLS'} handshake from "
                         f"{client} with a fatal {description} alert: {reason}."),
                "group": (f"{server} refused {tls.get('version') or 'TLS'} handshakes from "
                          f"{_client_ip(view, conn)} with a fatal {description} alert: "
                          f"{reason}."),
                "check": _tls_check(conn, view, client_certificate=True),
                "evidence": evidence,
            })
            continue
        refusing_client = [a for a in tls.get("alerts") or () if a["by"] == "client"
                           and a["level"] == "fatal"]
        if refusing_client:
            messages = view.of_connection(conn["id"])
            description = refusing_client[0]["description"]
            reason = TLS_ALERT_MEANINGS.get(description, description)
            findings.append({
                "kind": "tls_rejected", "severity": "error", "connection": conn["id"],
                "server": conn["server"], "by": "client", "reason": reason,
                "inferred": False,
                "text": (f"{client} refused {server} during the "
                         f"{tls.get('version') or 'TLS'} handshake with a fatal {description} "
                         f"alert: {reason}."),
                "group": (f"{_client_ip(view, conn)} refused {server} during "
                          f"{tls.get('version') or 'TLS'} handshakes with a fatal "
                          f"{description} alert: {reason}."),
                "check": (f"the certificate {conn['server']} presents and the CA bundle the "
                          f"client trusts (`openssl s_client -connect {conn['server']} "
                          f"-showcerts`); in a mesh, that both sides share a trust domain"),
                "evidence": [m["id"] for m in messages if "Alert" in m["label"]
                             or "Certificate" in m["label"]],
            })
            continue
        if tls.get("version") == "TLS 1.3":
            shown = tls13_refusal(view, conn)
            if shown is None:
                continue
            expected = _mtls_expected(conn, view)
            reason = ("inferred: the server requires a client certificate (mutual TLS) and "
                      "refused the one sent, or its absence" if expected else
                      "inferred: the server refused the handshake after the client's Finished")
            findings.append({
                "kind": "tls_rejected", "severity": "error", "connection": conn["id"],
                "server": conn["server"], "by": "server", "reason": reason, "inferred": True,
                "text": (f"{server} refused the TLS 1.3 handshake from {client} (an "
                         f"inference: TLS 1.3 encrypts the refusal). Right after the client's "
                         f"Finished it sent one short encrypted record, the size of an alert, "
                         f"and closed, with no application data."
                         + (" With mutual TLS expected here, that is how a server refuses a "
                            "client that sent no acceptable certificate." if expected else "")),
                "check": _tls_check(conn, view, client_certificate=expected),
                "evidence": [m["id"] for m in shown],
                "group": (f"{server} refused TLS 1.3 handshakes from {_client_ip(view, conn)} "
                          f"(an inference: a short encrypted record right after the client's "
                          f"Finished, then the close)."),
            })
    return findings


def _client_ip(view: CaptureView, conn: dict) -> str:
    """The client without its port: the same for all its connections (a cause's `group`)."""
    return view.names(endpoint_host(conn["client"]))


def _tls_check(conn: dict, view: CaptureView, client_certificate: bool) -> str:
    checks = []
    if client_certificate:
        checks.append("that the client presents a certificate the server's CA trusts (in a "
                      "mesh: the client pod has a sidecar, `istioctl proxy-status`, and the "
                      "PeerAuthentication mode, `kubectl get peerauthentication -A`)")
    checks.append(f"the server's TLS log for {conn['server']}")
    return "; ".join(checks)


def mismatches(view: CaptureView) -> list[dict]:
    findings = []
    tls_ports = {endpoint_port(c["server"]) for c in view.connections
                 if c.get("app") in ("tls", "h2") and c.get("tls")}
    for conn in view.connections:
        port = endpoint_port(conn["server"])
        server = _server_side(view, conn)
        if conn.get("app") == "http/1.1" and not conn.get("tls"):
            expected = MESH_MTLS_PORTS.get(port) or (
                "TLS" if port in TLS_PORTS or port in tls_ports else None)
            if not expected or view.answered(conn["id"]):
                continue
            messages = view.of_connection(conn["id"])
            server_data = any(m["src"] in server and m["len"] > 0 for m in messages)
            closed = any(m["src"] in server and set(m.get("flags") or "") & {"F", "R"}
                         for m in messages)
            if not server_data and closed:
                request = next((m for m in messages if m["phase"] == "request"), None)
                findings.append(_mismatch(view, conn, expected, "plaintext HTTP", request,
                                          messages))
        elif conn.get("tls") and not conn["tls"].get("version"):
            # A server that answers TLS in plaintext never sent a ServerHello (no version)
            messages = view.of_connection(conn["id"])
            response = next((m for m in messages if m["src"] in server
                             and m["label"].startswith("HTTP ")), None)
            if response is not None:
                findings.append(_mismatch(view, conn, "plaintext HTTP", "TLS", response,
                                          messages))
    return findings


def _mismatch(view, conn, expected, seen, shown, messages) -> dict:
    client, server = view.names(conn["client"]), view.names(conn["server"])
    port = split_endpoint(conn["server"])[1]
    if seen == "TLS":
        what = (f"{client} started TLS to {server}, which answered in plaintext HTTP: the "
                f"port serves plaintext, so the client should speak http:// to it (or the "
                f"server needs TLS configured).")
    else:
        what = (f"{client} sent plaintext HTTP to {server}, which expects {expected} on port "
                f"{port}: it closed the connection without answering.")
    evidence = [shown["id"]] if shown else []
    evidence += [m["id"] for m in messages if set(m.get("flags") or "") & {"F", "R"}][:2]
    return {
        "kind": "protocol_mismatch", "severity": "error", "connection": conn["id"],
        "server": conn["server"], "expected": expected, "seen": seen, "text": what,
        "group": (f"{_client_ip(view, conn)} spoke {seen} to {server}, which expects "
                  f"{expected}."),
        "check": ("the client's URL scheme and port; in a mesh, that the client pod has its "
                  "sidecar (it upgrades plaintext to mutual TLS) and the DestinationRule's TLS "
                  "mode" if seen != "TLS" else
                  "the client's URL scheme (http:// for this port) and the Service's port "
                  "name or appProtocol"),
        "evidence": evidence,
    }


def diagnose(view: CaptureView) -> tuple[list[dict], set[int]]:
    """Findings, and the connections whose mutual-TLS claim must be withdrawn."""
    refused = rejections(view)
    withdrawn = {f["connection"] for f in refused}
    return refused + mismatches(view), withdrawn
