"""A capture for the detail and share pages in short words: its target, its files, the finding
kinds the list searches by, the path form's choices. The analysis' own sentences are
captures.render.describe's (kept per view by captures.jobs.described).

Pure Python: the wording lives here, not in templates, so the pages stay simple and the words
can be tested without a browser.
"""

from __future__ import annotations

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
