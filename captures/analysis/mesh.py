"""What a service mesh leaves on the wire, read from finished connections.

Istio redirects an app's outbound TCP to its sidecar on 127.0.0.1:15001 and inbound TCP to
15006; Envoy delivers inbound requests to the app from 127.0.0.6; istiod serves xDS and
certificates on 15012. Linkerd's proxy listens on 4140 (outbound) and 4143 (inbound, mTLS).
Mutual TLS is claimed only on evidence: a client certificate actually sent, or Istio's own SNI
and ALPN values; the port alone proves nothing.
"""

from __future__ import annotations

import ipaddress
import re

from .records import endpoint

ISTIO_OUTBOUND, ISTIO_INBOUND, ISTIOD = 15001, 15006, 15012
LINKERD_OUTBOUND, LINKERD_INBOUND = 4140, 4143
# Ports only a proxy listens on in its own pod (a client of them may be anything: Prometheus,
# the kubelet), so they show a proxy only where the pod is their server.
PROXY_OWN_PORTS = {15090: ("istio", "Envoy's metrics port 15090"),
                   15020: ("istio", "istio-agent's port 15020"),
                   15021: ("istio", "the proxy's health port 15021"),
                   4191: ("linkerd", "Linkerd's admin port 4191")}
ENVOY_INBOUND_PASSTHROUGH = "127.0.0.6"
ISTIO_SNI = re.compile(r"^outbound_\.\d+_\.[^_]*_\.")
ISTIO_ALPN = frozenset(
    {"istio-peer-exchange", "istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"}
)


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def sidecar_findings(conn) -> list[dict]:
    """Sidecar interception, mesh control traffic and mTLS evidence on one connection."""
    findings = []
    client_ip, _client_port = conn.client
    server_ip, server_port = conn.server
    base = {"connection": conn.id}
    if server_port == ISTIO_OUTBOUND and is_loopback(server_ip):
        findings.append(
            {
                "kind": "sidecar",
                "mesh": "istio",
                "direction": "outbound",
                "port": server_port,
                "app": client_ip,
                **base,
            }
        )
    elif server_port == ISTIO_INBOUND:
        findings.append(
            {
                "kind": "sidecar",
                "mesh": "istio",
                "direction": "inbound",
                "port": server_port,
                "app": server_ip,
                **base,
            }
        )
    elif client_ip == ENVOY_INBOUND_PASSTHROUGH:
        findings.append(
            {
                "kind": "sidecar",
                "mesh": "istio",
                "direction": "inbound",
                "port": server_port,
                "app": server_ip,
                "via": client_ip,
                **base,
            }
        )
    elif server_port == LINKERD_OUTBOUND and is_loopback(server_ip):
        findings.append(
            {
                "kind": "sidecar",
                "mesh": "linkerd",
                "direction": "outbound",
                "port": server_port,
                "app": client_ip,
                **base,
            }
        )
    elif server_port == LINKERD_INBOUND:
        findings.append(
            {
                "kind": "sidecar",
                "mesh": "linkerd",
                "direction": "inbound",
                "port": server_port,
                "app": server_ip,
                **base,
            }
        )
    if conn.original_server is not None:  # the address the app meant, from the replies
        meant_ip, meant_port = conn.original_server
        for finding in findings:
            finding["original_dst"] = endpoint(meant_ip, meant_port, conn.version)
    if server_port == ISTIOD:
        findings.append(
            {"kind": "control_plane", "mesh": "istio", "server": conn.endpoint(1), **base}
        )
    evidence = mtls_evidence(conn)
    if evidence:
        findings.append(
            {
                "kind": "mtls",
                "client": conn.endpoint(0),
                "server": conn.endpoint(1),
                "evidence": evidence,
                **base,
            }
        )
    return findings


def mtls_evidence(conn) -> list[str]:
    tls = conn.tls
    if not tls:
        return []
    evidence = []
    if tls["client_certificate"]:
        evidence.append("client-certificate")
    if tls["sni"] and ISTIO_SNI.match(tls["sni"]):
        evidence.append("istio-sni")
    evidence.extend(f"alpn:{p}" for p in tls["alpn_offered"] if p in ISTIO_ALPN)
    port = conn.server[1]
    if not evidence and port == LINKERD_INBOUND:
        evidence.append("linkerd-inbound-port")
    if not evidence:
        return []
    if tls["certificate_request"]:
        evidence.append("certificate-request")
    if port in (ISTIO_INBOUND, LINKERD_INBOUND):
        evidence.append(f"port:{port}")
    return evidence


def mesh_of_mtls(evidence) -> str | None:
    """The mesh an `mtls` finding's evidence names, or None when it names none (a client
    certificate alone is any application's mutual TLS, not a mesh's)."""
    evidence = set(evidence or ())
    if "istio-sni" in evidence or f"port:{ISTIO_INBOUND}" in evidence or any(
            item.startswith("alpn:istio") for item in evidence):
        return "istio"
    if "linkerd-inbound-port" in evidence or f"port:{LINKERD_INBOUND}" in evidence:
        return "linkerd"
    return None
