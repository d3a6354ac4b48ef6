"""A capture's analysis (`kviz.sequence/1`) in short sentences: what happened, and each
section as lines (the detail and share pages' "What happened" and "Analysis", through
captures.web.present).

Pure Python on the analysis document without its messages (it never reads them): the worker
writes the owner's from the model it has just stored, the web the others' from the stored head
(captures.jobs.described).
"""

from __future__ import annotations

from captures.analysis import happened
from captures.analysis.words import Names, finding, ms

MAX_LINES = 300  # per section; the full story is in the diagram and the downloads
MAX_EVIDENCE = 12  # links to the arrows that prove a cause

CLOSED = {"fin": "closed by FIN", "rst": "reset (RST)", "open": "no FIN: kept open"}
HANDSHAKE = {"complete": "", "refused": "refused (SYN answered by RST)",
             "no-answer": "SYN never answered", "midstream": "began before the capture"}


def _timings(timing: dict | None) -> str:
    timing = timing or {}
    parts = [f"{label} {ms(timing.get(key))}" for key, label in
             (("connect_ms", "connect"), ("tls_ms", "TLS"), ("ttfb_ms", "TTFB"),
              ("total_ms", "total")) if timing.get(key) is not None]
    return ", ".join(parts)


def dns_line(entry: dict, name) -> str:
    answers = ", ".join(entry.get("answers") or []) or "no answer"
    rcode = entry.get("rcode") or "unanswered"
    latency = ms(entry.get("latency_ms"), unknown="")
    extra = f"{rcode}, {latency}" if latency else rcode
    return (f"DNS {entry.get('type', '?')} {entry.get('name', '?')} → {answers} ({extra}) "
            f"asked by {name(entry.get('client'))} of {name(entry.get('server'))}")


def connection_line(conn: dict, name) -> str:
    server = name(conn.get("server"))
    if conn.get("server_after_nat"):
        server += f" → {conn['server_after_nat']}"
    app = f" {conn['app']}" if conn.get("app") else ""
    facts = [HANDSHAKE.get(conn.get("handshake"), conn.get("handshake") or "")]
    if conn.get("requests"):
        facts.append(f"{conn['requests']} request{'s' if conn['requests'] != 1 else ''}")
    facts.append(CLOSED.get(conn.get("closed"), conn.get("closed") or ""))
    if conn.get("retransmissions"):
        facts.append(f"{conn['retransmissions']} retransmissions")
    timing = _timings(conn.get("timing"))
    return (f"TCP #{conn.get('id')}{app}: {name(conn.get('client'))} → {server}: "
            + "; ".join(f for f in facts if f) + (f"; {timing}" if timing else ""))


def http_line(request: dict) -> str:
    what = " ".join(str(x) for x in (request.get("method"), request.get("host") or "",
                                     request.get("target") or "") if x)
    if request.get("stream") is not None and not request.get("method"):
        what = f"stream {request['stream']}"
    status = request.get("status")
    answer = f"→ {status}" if status is not None else "→ no response seen"
    ttfb = ms(request.get("ttfb_ms"), unknown="")
    return (f"{request.get('protocol', 'http')} request {request.get('n', '?')} on connection "
            f"#{request.get('connection')}: {what} {answer}" + (f" (TTFB {ttfb})" if ttfb else ""))



def _section(items, line, *args) -> dict:
    items = items or []
    return {"lines": [line(item, *args) for item in items[:MAX_LINES]],
            "more": max(0, len(items) - MAX_LINES)}


def describe(doc: dict) -> dict:
    """{dns, connections, http, annotations: {lines, more}, participants, facts}."""
    name = Names(doc.get("participants"))
    facts = doc.get("capture") or {}
    return {
        "participants": [f"{p.get('name')} ({p.get('ip')}, {p.get('kind')})"
                         for p in (doc.get("participants") or [])[:MAX_LINES]],
        "dns": _section(doc.get("dns"), dns_line, name),
        "connections": _section(doc.get("connections"), connection_line, name),
        "http": _section(doc.get("http"), http_line),
        "annotations": _section(doc.get("annotations"), finding, name),
        # "What happened" (captures/analysis/happened.py): causes first, the rest grouped
        "causes": [{**cause, "severity_words": happened.SEVERITY_WORDS.get(cause["severity"]),
                    "evidence": (cause.get("evidence") or [])[:MAX_EVIDENCE]}
                   for cause in happened.causes(doc.get("annotations") or [])[:MAX_LINES]],
        "also_seen": [item["text"] for item in
                      happened.also_seen(doc.get("annotations") or [], name)[:MAX_LINES]],
        "warnings": list(facts.get("warnings") or []),
        "partial": bool(facts.get("partial")),
    }
