"""A Markdown postmortem of one capture: facts, who was who, the diagram, timings, findings in
words and the team's notes. Renders on GitHub/GitLab (the diagram is a mermaid block).

Everything that came from a packet or an inventory (names, HTTP targets, SNI, DNS names, the
sentences built from them, notes) goes through `escape`, because many renderers (wikis, MkDocs)
pass raw HTML through: the document must render to text only, never to an element, a link or
an image chosen by whoever sent the packet. Endpoints stay code spans, which are never parsed.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from captures.analysis import happened
from captures.analysis.records import split_endpoint
from captures.analysis.words import grpc_call, ms

from .layout import Layout, format_seconds
from .mermaid import render_mermaid_parts

FACT_ORDER = ("target", "time", "filter", "limits", "files")


def render_markdown(layout: Layout, *, facts: dict | None = None, notes: list[dict] | None = None,
                    svg_href: str | None = None, title: str | None = None) -> str:
    facts = dict(facts or {})
    names = _Endpoints(layout.participants)
    heading = title or facts.pop("title", None) or _default_title(layout, facts)
    out = [f"# {_inline(heading)}", ""]
    out += _what_happened(layout)
    out += _facts(layout, facts)
    out += _name_table(layout)
    out += ["## Sequence", ""]
    for diagram in render_mermaid_parts(layout):  # Mermaid draws a few hundred arrows a diagram
        out += ["```mermaid", diagram.rstrip("\n"), "```", ""]
    if svg_href:
        out += [f"![Sequence diagram (SVG)]({svg_href})", "",
                f"Full diagram with hop chains in tooltips: [{svg_href}]({svg_href})", ""]
    out += _timing(layout, names)
    out += _dns_table(layout)
    out += _findings(layout, names)
    out += _notes(layout, notes or [])
    return "\n".join(out).rstrip("\n") + "\n"


# 1. HTML: `&` first, so packet text that spells an entity shows as typed.
# 2. Markdown inline syntax: links and images need `[`, emphasis `*`/`_`/`~`, code spans a
#    backtick, attribute lists (MkDocs' attr_list) braces. A numeric character reference is
#    text to every renderer (CommonMark: "not markup"; Python-Markdown passes it to the HTML).
# 3. Bare-URL autolinks (GFM, markdown-it's linkify): no `://`, `www.` or `@` survives as is.
# Newlines and other controls would start a block (a heading, a list, a raw HTML block).
_MARKUP = {**{c: f"&#{ord(c)};" for c in "\\`*_[]~{}$"},
           "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}
# An underscore inside a word opens no emphasis (CommonMark, Python-Markdown), so file and pod
# names keep theirs.
_SPECIAL = re.compile(r"[\\`*\[\]~{}$&<>\"']|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_AUTOLINK = re.compile(r"(?i)(?<=[a-z0-9])://|(?<![a-z0-9])www\.|@")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def escape(value) -> str:
    """Packet or inventory text as Markdown that renders to exactly that text."""
    value = _CONTROLS.sub(" ", str(value))
    value = _SPECIAL.sub(lambda m: _MARKUP[m.group(0)], value)
    return _AUTOLINK.sub(lambda m: m.group(0).replace(":", "&#58;").replace(".", "&#46;")
                         .replace("@", "&#64;"), value)


def _code(value) -> str:
    """An endpoint as a code span: nothing inside one is parsed, but a backtick or a pipe
    (a table cell's end, even there) would close it."""
    return "`" + _CONTROLS.sub(" ", str(value)).replace("`", "'").replace("|", "¦") + "`"


def _cell(value) -> str:
    """Packet text in a table cell."""
    if value is None:
        return "—"
    return escape(value).replace("|", "\\|")


def _pipes(markdown: str) -> str:
    """Markdown made by this module (escaped text, code spans) in a table cell."""
    return markdown.replace("|", "\\|")


def _inline(value) -> str:
    """Packet text in a heading or a list item."""
    return escape(value)


class _Endpoints:
    """`words.Names` for sentences that are escaped as a whole: each endpoint becomes a token
    that `escape` leaves alone (the nonce keeps packet text from forging one), replaced after
    escaping by the escaped name and the endpoint as a code span."""

    def __init__(self, participants: list[dict]) -> None:
        self.by_ip = {p["ip"]: p for p in participants or ()}
        self.nonce = secrets.token_hex(8)
        self.shown: list[str] = []
        self.token: dict[str | None, str] = {}  # one per endpoint: also_seen groups sentences
        self.tokens = re.compile(rf"\ue000{self.nonce}(\d+)\ue001")

    def markdown(self, ep: str | None) -> str:
        if not ep:
            return "?"
        found = self.by_ip.get(split_endpoint(ep)[0])
        if found is None or not found.get("name") or found["name"] == split_endpoint(ep)[0]:
            return _code(ep)
        kind = found.get("kind")
        suffix = f" {kind}" if kind in ("service", "node") else ""
        return f"{escape(found['name'])}{suffix} ({_code(ep)})"

    def __call__(self, ep: str | None) -> str:
        if ep not in self.token:
            self.shown.append(self.markdown(ep))
            self.token[ep] = f"\ue000{self.nonce}{len(self.shown) - 1}\ue001"
        return self.token[ep]

    def sentence(self, value: str) -> str:
        """A sentence built with this object as its `name`, escaped, endpoints put back."""
        return self.tokens.sub(lambda m: self.shown[int(m.group(1))], escape(value))


def _ms_cell(value) -> str:
    """A duration in a table cell: words.ms, a dash when there is none."""
    return ms(value, unknown="—")


def _default_title(layout: Layout, facts: dict) -> str:
    target = facts.get("target")
    if target:
        return f"Postmortem: {target}"
    files = [f.get("path", "?").rsplit("/", 1)[-1] for f in layout.capture.get("files", [])]
    return "Postmortem: " + (", ".join(files) if files else "capture")


def _facts(layout: Layout, facts: dict) -> list[str]:
    capture = layout.capture
    rows: list[tuple[str, object]] = [(key, facts[key]) for key in FACT_ORDER if key in facts]
    rows += [(key, value) for key, value in facts.items() if key not in FACT_ORDER]
    if "time" not in facts and capture.get("start"):
        rows.append(("time", datetime.fromtimestamp(capture["start"], UTC).isoformat()))
    rows += [
        ("duration", format_seconds(capture.get("duration") or 0.0)),
        ("packets", capture.get("packets")),
        ("messages", f"{len(layout.rows)} (copies seen at several vantage points count once)"),
    ]
    if capture.get("partial"):
        rows.append(("partial", "yes: " + "; ".join(capture.get("warnings") or [])))
    elif capture.get("warnings"):
        rows.append(("warnings", "; ".join(capture["warnings"])))
    out = ["## Capture", "", "| fact | value |", "| --- | --- |"]
    out += [f"| {_cell(key)} | {_cell(value)} |" for key, value in rows]
    return [*out, ""]


def _name_table(layout: Layout) -> list[str]:
    out = ["## Who is who", "", "Names as they were when the capture was taken.", "",
           "| IP | name | kind | namespace | ports |", "| --- | --- | --- | --- | --- |"]
    for lane in layout.lanes:
        ports = ", ".join(str(p) for p in lane.ports)
        kind = lane.kind + (f" ({', '.join(lane.badges)})" if lane.badges else "")
        out.append(f"| {_code(lane.ip)} | {_cell(lane.name)} | {_cell(kind)} | "
                   f"{_cell(lane.namespace)} | {_cell(ports or None)} |")
    return [*out, ""]


def _request_ends(layout: Layout) -> dict[tuple[int, int], float]:
    """(connection, request number) → time of the last packet of that request's exchange."""
    ends = {}
    for row in layout.rows:
        for found in row.badges:
            if found["kind"] == "request" and row.group is not None:
                number = int(found["text"].split()[1])
                group = layout.phases[row.group]
                ends[(row.connection, number)] = layout.rows[group.last_row].t
    return ends


def _lookup(layout: Layout, connection: dict) -> dict | None:
    """The DNS answer this connection's server address came from, if the capture has it."""
    server_ip = split_endpoint(connection["server"])[0]
    start = connection["timing"].get("start") or 0.0
    found = None
    for exchange in layout.dns:
        if server_ip in (exchange.get("answers") or []) and (exchange.get("t") or 0) <= start:
            found = exchange
    return found


def _timing(layout: Layout, names: _Endpoints) -> list[str]:
    out = ["## Timing", "",
           "DNS, connect and TLS belong to a connection's first request; later requests on a "
           "kept-open connection reuse it. Total runs from the first of those steps to the last "
           "packet of the response.", "",
           "| connection | request | what | DNS | connect | TLS | TTFB | total |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    ends = _request_ends(layout)
    requests_by_connection: dict[int, list[dict]] = {}
    for request in layout.http:
        requests_by_connection.setdefault(request["connection"], []).append(request)
    for connection in layout.connections:
        timing = connection.get("timing") or {}
        lookup = _lookup(layout, connection)
        who = f"{connection['id']}: {names(connection['client'])} → {names(connection['server'])}"
        requests = requests_by_connection.get(connection["id"], [])
        if not requests:
            tls = connection.get("tls") or {}
            what = connection.get("app") or "tcp"
            if tls.get("sni"):
                what += f" (SNI {tls['sni']})"
            out.append(f"| {_pipes(names.sentence(who))} | — | {_cell(what)} | "
                       f"{_ms_cell(lookup and lookup.get('latency_ms'))} | "
                       f"{_ms_cell(timing.get('connect_ms'))} | {_ms_cell(timing.get('tls_ms'))} | "
                       f"{_ms_cell(timing.get('ttfb_ms'))} | {_ms_cell(timing.get('total_ms'))} |")
            continue
        for request in requests:
            first = request["n"] == 1
            start = request["t"]
            if first and timing.get("start") is not None:
                start = min(start, timing["start"])
            if first and lookup and lookup.get("t") is not None:
                start = min(start, lookup["t"])
            end = ends.get((connection["id"], request["n"]))
            total = (end - start) * 1000 if end is not None and request.get("response_t") else None
            what = (f"{request['method']} {request['target']}" if request.get("method")
                    else f"stream {request.get('stream')}")
            what += f" → {request['status']}" if request.get("status") else (
                "" if request.get("response_t") else " → no response")
            if request.get("grpc") is not None:
                what = grpc_call(request)
            out.append(
                f"| {_pipes(names.sentence(who))} | {request['n']} | {_cell(what)} | "
                f"{_ms_cell(lookup.get('latency_ms')) if first and lookup else '—'} | "
                f"{_ms_cell(timing.get('connect_ms')) if first else 'reused'} | "
                f"{_ms_cell(timing.get('tls_ms')) if first else '—'} | "
                f"{_ms_cell(request.get('ttfb_ms'))} | {_ms_cell(total)} |")
    if not layout.connections:
        out.append("| — | — | no TCP connections in this capture | — | — | — | — | — |")
    return [*out, ""]


def _dns_table(layout: Layout) -> list[str]:
    if not layout.dns:
        return []
    out = ["### DNS lookups", "", "| t | client | query | answer | rcode | latency |",
           "| --- | --- | --- | --- | --- | --- |"]
    for exchange in layout.dns:
        answers = ", ".join((exchange.get("answers") or [])[:4])
        t = exchange.get("t")
        at = _ms_cell(t * 1000 if t is not None else None)
        out.append(f"| {at} | {_code(exchange.get('client'))} | "
                   f"{_cell(exchange.get('type'))} {_cell(exchange.get('name'))} | "
                   f"{_cell(answers or None)} | {_cell(exchange.get('rcode') or 'no answer')} | "
                   f"{_ms_cell(exchange.get('latency_ms'))} |")
    return [*out, ""]



def _what_happened(layout: Layout) -> list[str]:
    """The diagnosis' causes first (happened.py), each with what to check and its proof."""
    found = happened.causes(layout.annotations)
    out = ["## What happened", ""]
    if not found:
        return [*out, "Nothing broke that this capture shows: no lost, refused or rejected "
                      "connection, no failed lookup. The findings below say what the path did.",
                ""]
    for cause in found:
        severity = happened.SEVERITY_WORDS.get(cause["severity"], cause["severity"])
        evidence = ", ".join(f"#{i}" for i in cause.get("evidence", [])[:12])
        out.append(f"- **{severity}**: {_inline(cause['text'])}")
        out.append(f"  - Check: {_inline(cause['check'])}")
        if evidence:
            out.append(f"  - Evidence: messages {evidence}")
    return [*out, ""]


def _findings(layout: Layout, names) -> list[str]:
    out = ["## Findings", ""]
    out += [f"- {names.sentence(item['text'])}"
            for item in happened.also_seen(layout.annotations, names)]
    for group in layout.folds:
        if group.collapsed:
            out.append(f"- Folded in the diagram: {escape(group.text.lstrip('↻ '))}, messages "
                       f"{layout.rows[group.first_row].message}–"
                       f"{layout.rows[group.last_row].message}.")
    if len(out) == 2:
        out.append("- Nothing unusual: no NAT, mesh, reset, retransmission or DNS failure seen.")
    return [*out, ""]


def _notes(layout: Layout, notes: list[dict]) -> list[str]:
    if not notes:
        return []
    by_message = {row.message: row for row in layout.rows}
    out = ["## Notes", ""]
    for note in notes:
        target = str(note.get("target") or "")
        kind, _, ref = target.partition(":")
        if kind == "message" and ref.isdigit() and int(ref) in by_message:
            row = by_message[int(ref)]
            where = (f"message {ref} ({row.label}, {row.src} → {row.dst}, "
                     f"{row.t * 1000:.3f} ms)")
        elif kind == "phase" and ref.isdigit() and int(ref) < len(layout.phases):
            where = f"phase {layout.phases[int(ref)].title}"
        elif kind == "phase":
            where = f"phase {ref}"
        else:
            where = target or "the capture"
        author = note.get("author") or "someone"
        out.append(f"- **{_inline(author)}** on {_inline(where)}: {_inline(note.get('text', ''))}")
    return [*out, ""]
