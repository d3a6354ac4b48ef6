"""A capture's analysis (`kviz.sequence/1`) as short sentences for the detail and share pages.

Pure Python on the analysis document: the wording lives here, not in templates, so the pages
stay simple and the sentences can be tested without a browser.
"""

from __future__ import annotations

import json
from pathlib import Path

from captures.analysis import happened
from captures.analysis.words import Names, finding, ms

MAX_LINES = 300  # per section; the full story is in the diagram and the downloads
MAX_EVIDENCE = 12  # links to the arrows that prove a cause
MAX_LISTED_BYTES = 64 * 1024 * 1024  # a bigger analysis is summarised, not listed

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


# The list's finding filter (captures/web/listing.py): the diagnosis' causes first, then the
# other findings; labels say what a person looks for.
FINDING_KINDS = [
    ("lost", "lost packet"), ("refused", "connection refused"),
    ("no_endpoints", "Service without endpoints"), ("dns_retry", "DNS retry"),
    ("dns_search_expansion", "DNS search-list expansion"), ("mtu_blackhole", "MTU black hole"),
    ("tls_rejected", "TLS refused"), ("protocol_mismatch", "protocol mismatch"),
    ("port_reuse", "port reuse"), ("listen_overflow", "listen queue overflow"),
    ("injected_reset", "injected reset"), ("hairpin", "hairpin"), ("idle_reset", "idle reset"),
    ("server_first_stall", "server-first stall"), ("capture_gap", "capture gap"),
    ("nat_unseen", "NAT not seen"), ("capture_missed_loopback", "loopback not captured"),
    ("retransmission", "retransmission"), ("rst", "reset (RST)"),
    ("zero_window", "zero window"), ("tls_alert", "TLS alert"), ("icmp_error", "ICMP error"),
    ("nxdomain", "NXDOMAIN"), ("dns_unanswered", "DNS unanswered"),
    ("dns_truncated", "DNS truncated"), ("kept_open", "kept open"), ("dnat", "DNAT"),
    ("sidecar", "sidecar"), ("mtls", "mTLS"), ("pooled", "pooled connection"),
]


def target_label(capture) -> str:
    """What a capture was taken of, in a few words: `lab pod/default/ubuntu`, `local eth0`,
    `upload node.pcapng` (the pages' facts and the Markdown postmortem)."""
    spec = capture.target_spec or {}
    if capture.target_kind == "path":
        return f"path {spec.get('from', '')} → {spec.get('to', '')} ({spec.get('where', '')})"
    if capture.target_kind == "upload":
        # Where the files were taken, when their metadata says (a lab scenario, a node's
        # capture): that says more than a file name.
        places = list(dict.fromkeys(f.vantage for f in capture.files.all() if f.vantage))
        if places:
            more = f" and {len(places) - 2} more" if len(places) > 2 else ""
            return f"upload taken at {', '.join(places[:2])}{more}"
    detail = spec.get("target") or spec.get("interface") or spec.get("file_name") or ""
    if spec.get("files"):
        detail += f" and {spec['files'] - 1} more"
    return f"{capture.target_kind} {detail}".strip()


def describe_file(path: Path | None, prepare=None) -> dict | None:
    """The description of a stored analysis, `prepare`d first (what a reader may see); None
    when there is none or it is too big to list."""
    if path is None or not path.exists() or path.stat().st_size > MAX_LISTED_BYTES:
        return None
    with open(path, encoding="utf-8") as fp:
        doc = json.load(fp)
    return describe(prepare(doc) if prepare else doc)


def files(doc: dict, pcap_url: str | None) -> dict:
    """The files of a capture (its `doc` from capture_json, as the reader may see it) for the
    pages: {"rows": [{label, role, file_name, packets, bytes, url, error}], "merged", "show",
    "roles" (whether any file has one)}.

    `url` downloads that one file (`?file=<index>`: a file's index is fixed from its first
    packet on, while a capture still runs too); `merged` the merged pcapng, offered when two or
    more files are stored."""
    rows = []
    for entry in doc.get("files") or []:
        label = entry.get("vantage") or entry.get("file_name") or f"file {entry['index'] + 1}"
        rows.append({
            "label": label, "role": entry.get("role") or "",
            "file_name": entry.get("file_name") if entry.get("vantage") else "",
            "packets": entry.get("packets") or 0, "bytes": entry.get("bytes") or 0,
            "error": entry.get("error") or "",
            "url": f"{pcap_url}?file={entry['index']}" if pcap_url and entry.get("stored")
            else None,
        })
    downloadable = sum(1 for row in rows if row["url"])
    # One file says nothing the page's facts (target, download) do not: no list for it.
    show = len(rows) > 1
    return {"rows": rows, "merged": pcap_url if downloadable > 1 else None, "show": show,
            "roles": any(row["role"] for row in rows)}


def path_choices(targets: list[dict]) -> dict | None:
    """What the new-capture form offers for a path (captures/sources/path.py): where it may
    run, and per place the pods it may start from and the pods and Services it may go to, as
    {"where": [...], "lab": {"from": [(value, label)], "to": [...]}, "cluster": {...}}; None
    when no path can be captured."""
    path = next((t for t in targets if t["kind"] == "path"), None)
    if path is None or not path.get("where"):
        return None
    choices = {where: {"from": [], "to": []} for where in ("lab", "cluster")}
    choices["lab"]["to"] += [(service, f"lab {service}")
                             for service in path.get("lab_services") or []]
    for target in targets:
        if target["kind"] == "lab" and target.get("type") == "pod":
            option = (target["target"], f"lab pod {target['target']}")
            choices["lab"]["from"].append(option)
            choices["lab"]["to"].append(option)
        elif target["kind"] == "cluster" and not target.get("error"):
            for namespace in target.get("namespaces") or []:
                ns = namespace["namespace"]
                for pod in namespace.get("pods") or []:
                    if pod.get("phase", "Running") != "Running":
                        continue
                    option = (f"pod/{ns}/{pod['name']}",
                              f"pod {ns}/{pod['name']} {', '.join(pod.get('ips') or [])}")
                    choices["cluster"]["from"].append(option)
                    choices["cluster"]["to"].append(option)
                for service in namespace.get("services") or []:
                    choices["cluster"]["to"].append((
                        f"service/{ns}/{service['name']}",
                        f"service {ns}/{service['name']} "
                        f"{', '.join(service.get('cluster_ips') or [])}"))
    # Services first among the destinations: a path usually goes to one.
    for place in choices.values():
        place["to"].sort(key=lambda option: not option[0].startswith("service/"))
    return {"where": list(path["where"]), **{w: choices[w] for w in path["where"]}}
