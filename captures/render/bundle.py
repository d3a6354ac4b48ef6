"""The postmortem bundle: one zip per capture that a team can attach to a postmortem and open
years later without kviz, without a network and without scripts.

    names = write_bundle(fp, model_dict, title="checkout 502s", facts={...}, notes=[...],
                         pcaps=[("pod-ubuntu.pcapng", Path(...))], inventory={...},
                         shares=[...], withheld=[...])

Inside one folder (`<slug>/`): `index.html` (every section in plain HTML with inline CSS: what
happened, the capture's facts, who is who, timings, DNS, requests, findings, notes, the diagram
as inline SVG and as PNG, the files and the share links), the diagram as `diagram.svg`,
`diagram.png`, `diagram.mmd` (Mermaid) and `diagram.puml` (PlantUML), the Markdown postmortem
`postmortem.md`, the sequence model `analysis.json`, and, when given, `inventory.json` and the
capture files under `pcap/`.

What goes in is the caller's choice: a redacted share passes its whitelisted model, no pcaps,
no inventory, and `withheld` (what it left out, said on the page). This module adds nothing the
caller did not pass; TLS key logs are never among what it is given.

index.html carries a Content-Security-Policy that forbids every fetch but its own images and
every script: what came from packets (names, HTTP targets, notes) is escaped, and even a bug in
that escaping could not make the page reach out.
"""

from __future__ import annotations

import html
import io
import json
import re
import time
import zipfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from captures.analysis import happened
from captures.analysis.words import Names, ms

from . import export
from .layout import format_seconds

BUNDLE_SCHEMA = "kviz.bundle/1"
MAX_TABLE_ROWS = 2_000  # per table of index.html; the rest are in analysis.json
PNG_MAX_SIDE = 30_000  # px: cairo's surfaces stop at 32,767
PNG_MAX_ROWS = 3_000  # arrows drawn in the PNG; beyond, the SVG alone (rasterizing is slow)
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#111827;
margin:0;background:#fff}
main{max-width:1400px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.6em;margin:.4em 0}h2{font-size:1.25em;margin:1.6em 0 .5em;border-bottom:1px solid
#d1d5db;padding-bottom:.2em}
table{border-collapse:collapse;margin:.4em 0;font-size:.93em;max-width:100%}
th,td{border:1px solid #d1d5db;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6}
td.num{text-align:right;white-space:nowrap}
code{font:.92em ui-monospace,'SFMono-Regular',Menlo,Consolas,monospace;background:#f3f4f6;
padding:0 3px;border-radius:3px;overflow-wrap:anywhere}
.cause{border-left:4px solid #b91c1c;padding:4px 10px;margin:8px 0;background:#fef2f2}
.cause.warning{border-color:#b45309;background:#fffbeb}.cause.note{border-color:#6b7280;
background:#f9fafb}
.grade{font-weight:700}
.diagram{overflow:auto;border:1px solid #d1d5db;max-height:90vh}
.diagram svg{display:block}
.muted{color:#4b5563}
.withheld{border:1px solid #b45309;background:#fffbeb;padding:8px 12px}
.scroll{overflow-x:auto}
img.png{max-width:100%;height:auto;border:1px solid #d1d5db}
nav a{margin-right:.8em;display:inline-block}
@media (max-width:700px){main{padding:8px}body{font-size:14px}}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def slug(name: str) -> str:
    """A folder and file name from a capture's name: letters, digits, dot, dash, underscore."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return cleaned[:60] or "capture"


def rasterize(svg: str, layout) -> tuple[bytes | None, str | None]:
    """(PNG bytes, None), or (None, why there is none). cairosvg draws the same SVG (its
    styles are attributes, so it needs no browser); it needs libcairo and a font."""
    if layout.height > PNG_MAX_SIDE or layout.width > PNG_MAX_SIDE:
        return None, f"the diagram is {round(layout.height)} px tall: too big for a PNG"
    if sum(1 for _ in layout.visible_rows()) > PNG_MAX_ROWS:
        return None, f"more than {PNG_MAX_ROWS} arrows: the SVG alone"
    try:
        import cairosvg  # libcairo through cffi: kept out of the import of this module
    except (ImportError, OSError) as exc:
        return None, f"no SVG rasterizer on this server ({exc.__class__.__name__})"
    try:
        return cairosvg.svg2png(bytestring=svg.encode("utf-8")), None
    except Exception as exc:  # a drawing library's failure leaves the PNG out, never the bundle
        return None, f"the PNG could not be drawn ({exc.__class__.__name__})"


def write_bundle(fp, model: dict, *, title: str, facts: dict | None = None,
                 notes: list[dict] | None = None,
                 pcaps: Iterable[tuple[str, Path]] = (), inventory: dict | None = None,
                 shares: list[dict] | None = None, withheld: list[str] | None = None,
                 folder: str | None = None) -> list[str]:
    """Write the bundle as a zip to `fp` (a path or a binary file open for writing); returns
    the names written, in order. `model` is a kviz.sequence/1 document as the reader may see
    it, or a SequenceModel (its messages are streamed into the zip); `pcaps` are (name in the
    bundle, file on disk); `shares` are {url, redacted, expires, created} (url None when only
    the token's hash is kept)."""
    folder = slug(folder or title)
    layout = export.layout_for("svg", model)
    doc = _parts(model)
    svg = export.render("svg", model, layout=layout, title=title)
    png, no_png = rasterize(svg, layout)
    pcaps = list(pcaps)
    written: list[str] = []
    with zipfile.ZipFile(fp, "w", compression=zipfile.ZIP_DEFLATED) as archive:

        def put(name: str, data: str | bytes) -> None:
            archive.writestr(f"{folder}/{name}", data)
            written.append(f"{folder}/{name}")

        files = {"diagram.svg": "the diagram (SVG, tooltips with hop chains)",
                 "diagram.mmd": "the diagram in Mermaid", "diagram.puml": "the diagram in "
                 "PlantUML", "postmortem.md": "this page in Markdown",
                 "analysis.json": "the sequence model (kviz.sequence/1, docs/model.md)"}
        if png is not None:
            files["diagram.png"] = "the diagram (PNG)"
        if inventory is not None:
            files["inventory.json"] = "pods, Services and nodes as they were (kviz.inventory/1)"
        page = _index(doc, layout, svg, title=title, facts=facts or {}, notes=notes or [],
                      pcaps=[name for name, _path in pcaps], inventory=inventory,
                      shares=shares or [], withheld=withheld or [], files=files, no_png=no_png)
        put("index.html", page)
        put("diagram.svg", svg)
        if png is not None:
            put("diagram.png", png)
        put("diagram.mmd", export.render("mermaid", model, layout=layout, title=title))
        put("diagram.puml", export.render("plantuml", model, layout=layout, title=title))
        put("postmortem.md", export.render("markdown", model, layout=layout, title=title,
                                           facts=facts, notes=notes, svg_href="diagram.svg"))
        if isinstance(model, dict):
            put("analysis.json", json.dumps(model, ensure_ascii=False, separators=(",", ":")))
        else:  # a SequenceModel streams its (maybe spooled) messages into the zip
            entry = zipfile.ZipInfo(f"{folder}/analysis.json", time.localtime()[:6])
            entry.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(entry, "w") as raw, \
                    io.TextIOWrapper(raw, encoding="utf-8") as text:
                model.write_json(text)
            written.append(f"{folder}/analysis.json")
        if inventory is not None:
            put("inventory.json", json.dumps(inventory, ensure_ascii=False, indent=1))
        for name, path in pcaps:
            # Packets are mostly incompressible: stored, so a big capture costs no CPU.
            archive.write(path, f"{folder}/pcap/{name}", compress_type=zipfile.ZIP_STORED)
            written.append(f"{folder}/pcap/{name}")
        put("bundle.json", json.dumps({"schema": BUNDLE_SCHEMA, "title": title,
                                       "made": datetime.now(UTC).isoformat(),
                                       "files": written, "withheld": withheld or []},
                                      ensure_ascii=False, indent=1))
    return written


def _parts(model) -> dict:
    """What index.html reads of the model (everything but the messages), from the document or
    from a SequenceModel without building its messages."""
    if isinstance(model, dict):
        return model
    return {"capture": model.capture, "participants": model.participants,
            "connections": model.connections, "http": model.http,
            "annotations": model.annotations, "dns": model.dns}


# -- index.html --------------------------------------------------------------------------------


def _table(head: list[str], rows: Iterable[list[str]], total: int) -> list[str]:
    """`rows` are cells already escaped."""
    out = ['<div class="scroll"><table><thead><tr>',
           *(f"<th scope=\"col\">{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    count = 0
    for cells in rows:
        if count >= MAX_TABLE_ROWS:
            break
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        count += 1
    out.append("</tbody></table></div>")
    if total > count:
        out.append(f'<p class="muted">{total - count} more in analysis.json.</p>')
    return out


def _index(model: dict, layout, svg: str, *, title: str, facts: dict, notes: list[dict],
           pcaps: list[str], inventory: dict | None, shares: list[dict], withheld: list[str],
           files: dict[str, str], no_png: str | None) -> str:
    name = Names(model.get("participants"))
    capture = model.get("capture") or {}
    annotations = model.get("annotations") or []
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(title)} · kviz postmortem</title>", f"<style>{STYLE}</style>",
           "</head><body><main>", f"<h1>{_e(title)}</h1>",
           '<p class="muted">A kviz postmortem bundle: everything below is in this folder and '
           "reads without kviz or a network.</p>",
           '<nav aria-label="Sections"><a href="#happened">What happened</a>'
           '<a href="#diagram">Diagram</a><a href="#names">Who is who</a>'
           '<a href="#timing">Timing</a><a href="#findings">Findings</a>'
           '<a href="#notes">Notes</a><a href="#files">Files</a></nav>']
    if withheld:
        out += ['<section class="withheld" id="withheld"><h2>Withheld from this bundle</h2>',
                "<p>It was made from a redacted share link, which shows what happened but not "
                "where it was recorded or by whom. Left out:</p><ul>",
                *(f"<li>{_e(item)}</li>" for item in withheld), "</ul></section>"]
    # 1. What happened (the same summary as the capture page and `kviz analyze`).
    out += ['<section id="happened"><h2>What happened</h2>']
    causes = happened.causes(annotations)
    if not causes:
        out.append("<p>Nothing broke that this capture shows: no lost, refused or rejected "
                   "connection, no failed lookup.</p>")
    for cause in causes:
        grade = happened.SEVERITY_WORDS.get(cause["severity"], cause["severity"])
        evidence = ", ".join(f"#{i}" for i in (cause.get("evidence") or [])[:12])
        out += [f'<div class="cause {_e(cause["severity"])}"><p><span class="grade">'
                f"{_e(grade)}</span>: {_e(cause['text'])}</p>",
                f"<p>Check: {_e(cause.get('check'))}</p>"]
        if evidence:
            out.append(f'<p class="muted">Evidence: messages {_e(evidence)}</p>')
        out.append("</div>")
    out.append("</section>")
    # 2. The capture's facts.
    rows = [[_e(k), _e(v)] for k, v in facts.items()]
    if capture.get("start"):
        rows.append(["first packet", _e(datetime.fromtimestamp(capture["start"], UTC)
                                        .strftime("%Y-%m-%d %H:%M:%S UTC"))])
    rows += [["duration", _e(format_seconds(capture.get("duration") or 0.0))],
             ["packets", _e(capture.get("packets"))],
             ["messages", _e(f"{len(layout.rows)} (a packet seen at several places is one)")]]
    if capture.get("warnings"):
        rows.append(["partial" if capture.get("partial") else "warnings",
                     _e("; ".join(capture["warnings"]))])
    out += ['<section id="capture"><h2>Capture</h2>', *_table(["fact", "value"], rows, len(rows)),
            "</section>"]
    # 3. The diagram: inline SVG (its tooltips work here), and the PNG.
    out += ['<section id="diagram"><h2>Diagram</h2>',
            '<p class="muted">Hover an arrow for its hops. Also as <a href="diagram.svg">SVG</a>'
            + (', <a href="diagram.png">PNG</a>' if "diagram.png" in files else "")
            + ', <a href="diagram.mmd">Mermaid</a> and <a href="diagram.puml">PlantUML</a>.</p>',
            '<div class="diagram">', svg, "</div>"]
    if "diagram.png" in files:
        out += ['<details><summary>The diagram as a PNG image</summary>',
                f'<img class="png" src="diagram.png" alt="Sequence diagram of {_e(title)}">',
                "</details>"]
    elif no_png:
        out.append(f'<p class="muted">No PNG: {_e(no_png)}.</p>')
    out.append("</section>")
    # 4. Who is who.
    participants = model.get("participants") or []
    out += ['<section id="names"><h2>Who is who</h2>',
            "<p>Names as they were when the capture was taken.</p>",
            *_table(["IP", "name", "kind", "namespace", "ports"],
                    ([f"<code>{_e(p.get('ip'))}</code>", _e(p.get("name")), _e(p.get("kind")),
                      _e(p.get("namespace") or ""),
                      _e(", ".join(str(x) for x in p.get("ports") or []))]
                     for p in participants), len(participants)), "</section>"]
    # 5. Timing: connections, requests, lookups.
    connections = model.get("connections") or []
    out += ['<section id="timing"><h2>Timing</h2>', "<h3>Connections</h3>",
            *_table(["#", "client", "server", "after NAT", "outcome", "connect", "TLS", "TTFB",
                     "total", "closed"],
                    ([_e(c.get("id")), _e(name(c.get("client"))), _e(name(c.get("server"))),
                      _e(name(c["server_after_nat"]) if c.get("server_after_nat") else "—"),
                      _e(c.get("outcome") or c.get("handshake")),
                      *(_e(ms((c.get("timing") or {}).get(k), unknown="—"))
                        for k in ("connect_ms", "tls_ms", "ttfb_ms", "total_ms")),
                      _e(c.get("closed"))] for c in connections), len(connections))]
    http = model.get("http") or []
    if http:
        out += ["<h3>Requests</h3>",
                *_table(["connection", "n", "request", "host", "status", "TTFB"],
                        ([_e(r.get("connection")), _e(r.get("n")),
                          _e(" ".join(str(x) for x in (r.get("method"), r.get("target")) if x)
                             or f"stream {r.get('stream')}"), _e(r.get("host") or ""),
                          _e(r.get("status") if r.get("status") is not None else "none seen"),
                          _e(ms(r.get("ttfb_ms"), unknown="—"))] for r in http), len(http))]
    dns = model.get("dns") or []
    if dns:
        out += ["<h3>DNS lookups</h3>",
                *_table(["t", "client", "query", "answers", "rcode", "latency"],
                        ([_e(ms(d["t"] * 1000 if d.get("t") is not None else None, "—")),
                          _e(name(d.get("client"))), _e(f"{d.get('type')} {d.get('name')}"),
                          _e(", ".join((d.get("answers") or [])[:8]) or "—"),
                          _e(d.get("rcode") or "no answer"),
                          _e(ms(d.get("latency_ms"), unknown="—"))] for d in dns), len(dns))]
    out.append("</section>")
    # 6. The other findings.
    others = happened.also_seen(annotations, name)
    out += ['<section id="findings"><h2>Findings</h2>']
    out += (["<ul>", *(f"<li>{_e(item['text'])}</li>" for item in others[:MAX_TABLE_ROWS]),
             "</ul>"] if others else ["<p>Nothing else unusual.</p>"])
    out.append("</section>")
    # 7. Notes.
    out += ['<section id="notes"><h2>Notes</h2>']
    if notes:
        out += _table(["on", "note", "by"],
                      ([_e(n.get("target")), _e(n.get("text")), _e(n.get("author") or "")]
                       for n in notes), len(notes))
    else:
        out.append("<p>No notes.</p>")
    out.append("</section>")
    # 8. Files, inventory, share links.
    out += ['<section id="files"><h2>Files</h2><ul>']
    out += [f'<li><a href="{_e(f)}">{_e(f)}</a>: {_e(what)}</li>' for f, what in files.items()]
    out += [f'<li><a href="pcap/{_e(p)}">pcap/{_e(p)}</a>: packets as recorded</li>'
            for p in pcaps]
    out.append("</ul>")
    if inventory is not None:
        counts = ", ".join(f"{len(inventory.get(k) or [])} {k}" for k in
                           ("pods", "services", "nodes") if k in inventory)
        out.append(f"<p>Inventory at capture time: {_e(counts or 'see inventory.json')}.</p>")
    out += ['<h3 id="share">Share links</h3>']
    if shares:
        out += _table(["link", "kind", "created", "expires"],
                      ([f'<code>{_e(s["url"])}</code>' if s.get("url")
                        else "shown once when it was made (kviz keeps only its hash)",
                        "redacted" if s.get("redacted") else "full",
                        _e(s.get("created") or ""), _e(s.get("expires") or "")]
                       for s in shares), len(shares))
    else:
        out.append("<p>None.</p>")
    out += ["</section>", '<p class="muted">Made by kviz.</p>', "</main></body></html>"]
    return "\n".join(out) + "\n"

