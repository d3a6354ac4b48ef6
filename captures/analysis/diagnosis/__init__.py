"""Diagnosis: what broke, where on the path, what to check next, and which messages prove it.

Theory of operation. The engine's findings are symptoms, one per packet or connection ("3
retransmissions", "reset by …"). The diagnosis reads the finished analysis (a `CaptureView`:
connections, DNS exchanges, annotations, and the few messages that prove something) and turns
symptoms into causes, each an annotation of kind `lost`, `no_endpoints`, `refused`,
`dns_search_expansion`, `dns_retry`, `mtu_blackhole`, `tls_rejected`, `protocol_mismatch`,
`port_reuse`, `listen_overflow`, `server_first_stall` (servers.py), `hairpin`,
`injected_reset`, `idle_reset` (paths.py), `capture_gap`, `nat_unseen` or
`capture_missed_loopback` (docs/model.md). The last three are notes about the capture itself:
what it lost or could not see from where it was taken. Every one carries:

- `severity`: `error`, `warning` or `note`, as Wireshark's Expert Info grades them;
- `text`: one plain sentence, what happened and where (node, interface, before or after the
  DNAT) as far as the capture can show it, and saying so when it cannot;
- `check`: what to look at next;
- `evidence`: the ids of the messages that prove it, which the diagram highlights;
- `connection` or `exchange` when it concerns one;
- `group`, for a cause of one connection: the sentence that holds for every connection with
  the same cause, so that "What happened" says it once for all of them (happened.py).

Rules never claim what the capture cannot show: a place only seen from inside the client's pod
is said to be unseen, a TLS 1.3 refusal is called an inference, and a handshake the server
refused is not mutual TLS (the engine withdraws that claim), and a connection a hairpin
explains is not also called lost. Each connection also gets an
`outcome` code (connections.OUTCOMES). `rank` orders the findings by impact for the "What
happened" summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import connections, coverage, handshakes, lookups, paths, servers
from .places import Places
from .view import CaptureView

SEVERITIES = ("error", "warning", "note")
CAUSE_KINDS = ("lost", "no_endpoints", "refused", "dns_search_expansion", "dns_retry",
               "mtu_blackhole", "tls_rejected", "protocol_mismatch", "port_reuse",
               "listen_overflow", "injected_reset", "hairpin", "idle_reset",
               "server_first_stall", "capture_gap", "nat_unseen", "capture_missed_loopback")


@dataclass
class Diagnosis:
    findings: list[dict] = field(default_factory=list)
    outcomes: dict[int, str] = field(default_factory=dict)  # connection id -> outcome code
    withdrawn_mtls: set[int] = field(default_factory=set)  # connections not mutual TLS


def nat_unseen(view: CaptureView) -> list[dict]:
    """Only pods were captured: a Service's DNAT happens on the node, out of sight."""
    if view.vantage_kinds() != {"pod"}:
        return []
    by_service: dict[str, list[dict]] = {}
    for conn in view.connections:
        if view.kind_of(conn["server"]) == "service" and conn.get("handshake") == "complete":
            by_service.setdefault(conn["server"], []).append(conn)
    findings = []
    for service, conns in by_service.items():
        name = view.names(service)
        first = view.of_connection(conns[0]["id"])[:1]
        findings.append({
            "kind": "nat_unseen", "severity": "note", "connection": conns[0]["id"],
            "connections": [c["id"] for c in conns], "service": service,
            "text": (f"From inside the pod, connections to {name} show only the Service's "
                     f"address: kube-proxy's DNAT to a backend pod happens on the node, so "
                     f"which pod answered cannot be seen from here."),
            "check": "capture the node too (-i any), or use a path capture, to see the DNAT",
            "evidence": [m["id"] for m in first],
        })
    return findings


def rank(findings: list[dict]) -> list[dict]:
    """Most severe first; then what affects most; then the earliest evidence."""
    def key(finding):
        return (SEVERITIES.index(finding.get("severity", "note")),
                -len(finding.get("connections") or [None]),
                min(finding.get("evidence") or [1 << 62]))
    return sorted(findings, key=key)


def diagnose(view: CaptureView) -> Diagnosis:
    places = Places(view.files, view.names)
    hairpins = paths.hairpins(view, places)
    conn_findings, outcomes = connections.diagnose(
        view, places, {finding["connection"] for finding in hairpins})
    tls_findings, withdrawn = handshakes.diagnose(view)
    findings = [*conn_findings, *hairpins, *paths.diagnose(view, places),
                *servers.diagnose(view, places), *lookups.diagnose(view, places),
                *tls_findings, *nat_unseen(view),
                *coverage.missed_loopback(view, places, withdrawn)]
    for finding in findings:
        # What a redacted share must rename in the sentences (captures/web/redaction.py).
        finding["places"] = places.mentioned_in(
            f"{finding['text']} {finding['check']} {finding.get('group', '')}")
    return Diagnosis(rank(findings), outcomes, withdrawn)


__all__ = ["CAUSE_KINDS", "CaptureView", "Diagnosis", "diagnose"]
