"""A standalone SVG of a layout: every style is a presentation attribute on the element (no CSS,
no scripts, no external fonts), so it reads the same opened alone, pasted into a document or
embedded as an image. Tooltips are SVG <title> elements: the full label, hop chain and details.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import SimpleNamespace
from xml.sax.saxutils import quoteattr

from .layout import AXIS_WIDTH, BADGE_LINE, CHAR_WIDTH, LABEL_CHARS, LANE_HEAD_HEIGHT, Layout

FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"
MONO = "ui-monospace, 'SFMono-Regular', Menlo, Consolas, monospace"
NAT_COLOUR = "#6d28d9"
ARROW_COLOUR = {"send": "#1f2937", "reply": "#4b5563", "rst": "#b91c1c",
                "retransmission": "#b45309"}
PHASE_FILL = {"dns": "#e0ecff", "handshake": "#e3f4e6", "tls": "#fff1d6", "exchange": "#f1f1f4",
              "teardown": "#fde7e7", "other": "#f3f3f3"}
BADGE_COLOUR = {"dnat": "#6d28d9", "snat": "#6d28d9", "sidecar": "#0e7490", "mtls": "#15803d",
                "rst": "#b91c1c", "retransmission": "#b45309", "kept_open": "#6b7280",
                "request": "#1d4ed8", "pooled": "#1d4ed8", "nxdomain": "#b91c1c",
                "dns_unanswered": "#b91c1c", "hops": "#6b7280", "control_plane": "#0e7490",
                # the diagnosis' causes (captures/analysis/diagnosis)
                **dict.fromkeys(("lost", "no_endpoints", "refused", "dns_retry", "mtu_blackhole",
                                 "tls_rejected", "protocol_mismatch", "port_reuse"), "#b91c1c"),
                "dns_search_expansion": "#b45309"}
# Characters XML 1.0 forbids; packet-derived labels (HTTP targets, SNI) may carry them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# text(): `_NOT_XML` characters to "?", then &, <, > escaped, in one C pass (a 200k-arrow SVG
# calls it a million times).
_TEXT = str.maketrans({**{chr(c): "?" for c in (*range(0x00, 0x09), 0x0B, 0x0C,
                                                 *range(0x0E, 0x20), 0xFFFE, 0xFFFF)},
                       "&": "&amp;", "<": "&lt;", ">": "&gt;"})


def text(value) -> str:
    return str(value).translate(_TEXT)


def attr(value) -> str:
    return quoteattr(_NOT_XML.sub("?", str(value)))


_MONO_ATTR = attr(MONO)


def cut(label: str, limit: int = LABEL_CHARS) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def render_svg(layout: Layout, title: str | None = None) -> str:
    return "".join(stream_svg(layout, title=title))


def stream_svg(layout, rows=None, title: str | None = None) -> Iterator[str]:
    """The SVG of `layout` in pieces, for a response or a file that never holds it whole.

    `layout` is a Layout, or a layout head as the diagram cache stores it (the layout's
    `to_dict()` without its rows, captures/jobs/diagram_cache.py) with `rows` an iterable of
    its row dicts in order (one chunk read at a time): then memory is bounded by a chunk, not
    by the capture. Both give the same text as `render_svg`."""
    if isinstance(layout, dict):
        layout = _HeadView(layout)
        rows = (_row_view(row) for row in rows or () if row.get("y") is not None)
    else:
        rows = layout.visible_rows()
    out: list[str] = []
    w, h = round(layout.width), round(layout.height)
    out.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family={attr(FONT)} font-size="11" fill="#111827" '
        # Named by its <title> (the capture's): a reference, so packet text stays a text node.
        'role="img" aria-labelledby="kviz-title">'
    )
    out.append(f"<title id=\"kviz-title\">{text(title or 'kviz sequence diagram')}</title>")
    out.append("<defs>")
    for style, colour in ARROW_COLOUR.items():
        out.append(
            f'<marker id="kviz-arrow-{style}" viewBox="0 0 10 10" refX="9" refY="5" '
            f'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    out.append(
        f'<marker id="kviz-arrow-nat" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" '
        f'markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        f'fill="{NAT_COLOUR}"/></marker>'
    )
    out.append("</defs>")
    out.append(f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>')
    _node_groups(out, layout, h)
    _phases(out, layout)
    _lanes(out, layout, h)
    _bands(out, layout)
    yield "".join(piece + "\n" for piece in out)
    out.clear()
    for row in rows:
        _row(out, layout.lanes, row)
        if len(out) >= 4096:
            yield "".join(piece + "\n" for piece in out)
            out.clear()
    out.append("</svg>")
    yield "".join(piece + "\n" for piece in out)


def _attrs(doc: dict) -> SimpleNamespace:
    return SimpleNamespace(**doc)


class _HeadView:
    """A cached layout head read as the Layout the drawing functions expect."""

    def __init__(self, head: dict):
        size = head["size"]
        self.width, self.height = size["width"], size["height"]
        self.head_height = size["lane_head_height"]
        self.node_head_height = size.get("node_head_height") or 0
        self.lanes = [_attrs(lane) for lane in head["lanes"]]
        self.nodes = [_attrs(group) for group in head.get("nodes") or ()]
        self.phases = [_attrs(group) for group in head["phases"]]
        self.folds = [_attrs(group) for group in head["folds"]]
        self.gaps = [_attrs(gap) for gap in head["gaps"]]


def _row_view(row: dict) -> SimpleNamespace:
    """A row dict of a cached chunk read as a layout Row (the names the drawing uses)."""
    view = SimpleNamespace(**row)
    view.src_lane, view.dst_lane, view.nat_lane = row["from"], row["to"], row.get("nat_to")
    return view


def _lane_span(layout: Layout, lanes: tuple[int, int], pad: float = 70) -> tuple[float, float]:
    left = layout.lanes[lanes[0]].x - pad
    right = layout.lanes[lanes[1]].x + pad
    return max(left, AXIS_WIDTH + 4), right


def _phases(out: list[str], layout: Layout) -> None:
    for group in layout.phases:
        if group.y_top is None or group.y_bottom is None:
            continue  # every row of it is folded away
        left, right = _lane_span(layout, group.lanes)
        fill = PHASE_FILL.get(group.phase, "#f3f3f3")
        out.append(
            f'<rect x="{left:.1f}" y="{group.y_top:.1f}" width="{right - left:.1f}" '
            f'height="{group.y_bottom - group.y_top:.1f}" rx="4" fill="{fill}" '
            f'fill-opacity="0.7" stroke="#d1d5db" stroke-width="0.5"/>'
        )
        out.append(
            f'<text x="{left + 6:.1f}" y="{group.y_top + 12:.1f}" font-size="10" '
            f'font-weight="600" fill="#374151">{text(group.title)}</text>'
        )


def _node_groups(out: list[str], layout: Layout, height: int) -> None:
    """Lanes of one node: a tinted box from its header down the lifelines, under the rest."""
    for group in layout.nodes:
        width = group.right - group.left
        out.append(f'<g class="kviz-node"><title>{text(group.title)}</title>')
        out.append(
            f'<rect x="{group.left:.1f}" y="2" width="{width:.1f}" height="{height - 12}" '
            f'rx="8" fill="#f1f5f9" fill-opacity="0.8" stroke="#94a3b8" stroke-dasharray="6 3"/>'
        )
        out.append(f'<text x="{group.left + width / 2:.1f}" y="16" text-anchor="middle" '
                   f'font-size="11" font-weight="700" fill="#334155">{text(group.title)}</text>')
        out.append("</g>")


def _lanes(out: list[str], layout: Layout, height: int) -> None:
    top = layout.node_head_height  # room for node headers above the lane heads
    head = layout.head_height
    out.append(
        f'<text x="{AXIS_WIDTH - 8}" y="{head - 6}" text-anchor="end" '
        f'font-size="10" fill="#6b7280">time (ms)</text>'
    )
    for lane in layout.lanes:
        head_width = lane.head_width
        x = lane.x
        out.append(
            f'<line x1="{x}" y1="{head}" x2="{x}" y2="{height - 20}" '
            f'stroke="#9ca3af" stroke-dasharray="4 4"/>'
        )
        out.append(f"<g><title>{text(_lane_tooltip(lane))}</title>")
        out.append(
            f'<rect x="{x - head_width / 2:.1f}" y="{top + 6}" width="{head_width:.1f}" '
            f'height="{LANE_HEAD_HEIGHT - 12}" rx="6" fill="#f9fafb" stroke="#6b7280"/>'
        )
        out.append(f'<text x="{x}" y="{top + 24}" text-anchor="middle" font-weight="700" '
                   f'font-size="12">{text(lane.name)}</text>')
        out.append(f'<text x="{x}" y="{top + 38}" text-anchor="middle" font-family={attr(MONO)} '
                   f'font-size="10" fill="#374151">{text(lane.caption)}</text>')
        out.append(f'<text x="{x}" y="{top + 51}" text-anchor="middle" font-size="9" '
                   f'fill="#0e7490">{text(lane.facts)}</text>')
        out.append("</g>")


def _lane_tooltip(lane) -> str:
    parts = [lane.name, lane.address, lane.kind]
    if lane.namespace:
        parts.append(f"namespace {lane.namespace}")
    return " · ".join(parts + lane.badges)


def _bands(out: list[str], layout: Layout) -> None:
    left = AXIS_WIDTH
    right = layout.width - 20
    for gap in layout.gaps:
        middle = gap.y + gap.height / 2
        out.append(
            f'<rect x="{left}" y="{gap.y + 4:.1f}" width="{right - left:.1f}" '
            f'height="{gap.height - 8:.1f}" fill="#f3f4f6" stroke="#9ca3af" '
            f'stroke-dasharray="2 3"/>'
        )
        out.append(f'<text x="{(left + right) / 2:.1f}" y="{middle + 4:.1f}" text-anchor="middle" '
                   f'font-style="italic" fill="#4b5563">{text(gap.text)}</text>')
    for group in layout.folds:
        if not group.collapsed or group.y is None or group.band is None:
            continue
        lo, hi = group.band
        out.append(
            f'<rect x="{lo:.1f}" y="{group.y + 4:.1f}" width="{hi - lo:.1f}" '
            f'height="{group.height - 8:.1f}" rx="4" fill="#eef2ff" stroke="#6366f1" '
            f'stroke-dasharray="5 3"/>'
        )
        out.append(f'<text x="{(lo + hi) / 2:.1f}" y="{group.y + group.height / 2 + 4:.1f}" '
                   f'text-anchor="middle" font-weight="600" fill="#3730a3">'
                   f'{text(group.text)}</text>')


def _rows(out: list[str], layout: Layout) -> None:
    for row in layout.visible_rows():
        _row(out, layout.lanes, row)


def _row(out: list[str], lanes, row) -> None:
    y = row.y
    colour = ARROW_COLOUR.get(row.style, "#1f2937")
    dash = ' stroke-dasharray="6 3"' if row.style in ("reply", "retransmission") else ""
    style = row.style if row.style in ARROW_COLOUR else "send"
    marker = f'marker-end="url(#kviz-arrow-{style})"'
    x1, x2 = lanes[row.src_lane].x, lanes[row.dst_lane].x
    out.append(f"<g><title>{text(_row_tooltip(row))}</title>")
    out.append(f'<text x="{AXIS_WIDTH - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="10" '
               f'font-family={_MONO_ATTR} fill="#6b7280">{row.t * 1000:.3f}</text>')
    if x1 == x2:  # a loopback conversation: both ends on one lifeline
        out.append(
            f'<path d="M{x1},{y - 8:.1f} h36 v14 h-34" fill="none" stroke="{colour}" '
            f'stroke-width="1.4"{dash} {marker}/>'
        )
        label_x, anchor, badge_x = x1 + 42, "start", x1 + 42
        label_y = y + 1
    else:
        out.append(
            f'<line x1="{x1}" y1="{y:.1f}" x2="{x2}" y2="{y:.1f}" stroke="{colour}" '
            f'stroke-width="1.4"{dash} {marker}/>'
        )
        label_x, anchor, badge_x = (x1 + x2) / 2, "middle", (x1 + x2) / 2
        label_y = y - 5
    if row.nat_lane is not None:  # on to the pod the DNAT chose
        x3 = lanes[row.nat_lane].x
        out.append(
            f'<line x1="{x2}" y1="{y:.1f}" x2="{x3}" y2="{y:.1f}" stroke="{NAT_COLOUR}" '
            f'stroke-width="1.2" stroke-dasharray="2 3" marker-end="url(#kviz-arrow-nat)"/>'
        )
    weight = ' font-weight="600"' if row.phase == "request" and row.label != "ACK" else ""
    out.append(f'<text x="{label_x:.1f}" y="{label_y:.1f}" text-anchor="{anchor}"{weight} '
               f'fill="{colour}">{text(cut(row.label))}</text>')
    line_y = y + 13 if x1 != x2 else y + 17
    for found in row.badges:
        shown = found.get("shown")
        if not shown:
            continue
        colour = BADGE_COLOUR.get(found["kind"], "#374151")
        if found["kind"] == "mtls":
            width = len(shown) * CHAR_WIDTH * 0.78
            lock_x = badge_x - width / 2 - 14 if anchor == "middle" else badge_x - 14
            out.append(_padlock(lock_x, line_y - 9))
        out.append(f'<text x="{badge_x:.1f}" y="{line_y:.1f}" text-anchor="{anchor}" '
                   f'font-size="9.5" fill="{colour}">{text(shown)}</text>')
        line_y += BADGE_LINE
    abbreviated = [nat_word(row, b["kind"]) for b in row.badges
                   if b["kind"] in ("dnat", "snat") and not b.get("shown")]
    if abbreviated:  # the full words were written on this finding's first arrow
        tag_x = x2 - 30 if x2 > x1 else x2 + 12
        out.append(f'<text x="{tag_x:.1f}" y="{y + 11:.1f}" font-size="8.5" '
                   f'fill="{BADGE_COLOUR["dnat"]}">{text(" ".join(abbreviated))}</text>')
    out.append("</g>")


def nat_word(row, kind: str) -> str:
    """The short mark of a NAT on an arrow it was spelled out on before: a reply carries the
    rewrite undone (conntrack turns the pod's address back into the Service's), not a DNAT."""
    return f"un-{kind.upper()}" if row.style == "reply" else kind.upper()


def _row_tooltip(row) -> str:
    lines = [f"{row.label}", f"{row.src} → {row.dst} ({row.proto}"
             + (f", flags {row.flags}" if row.flags else "") + ")",
             f"t = {row.t * 1000:.3f} ms, message {row.message}"
             + (f", connection {row.connection}" if row.connection is not None else "")
             + f", phase {row.phase}"]
    if row.frame:
        lines.append(f"frame {row.frame[1]} of file {row.frame[0]}")
    if len(row.hops) > 1:
        lines.append("hops: " + " → ".join(row.hops))
    for found in row.badges:
        if found["kind"] != "hops":
            lines.append(found["text"] + (f" ({found['detail']})" if found.get("detail") else ""))
    return "\n".join(lines)


def _padlock(x: float, y: float) -> str:
    """A small padlock drawn with paths: emoji fonts are not everywhere an SVG is opened."""
    return (
        f'<g fill="none" stroke="#15803d" stroke-width="1.2">'
        f'<path d="M{x + 2:.1f},{y + 4:.1f} v-1.5 a3,3 0 0 1 6,0 v1.5"/>'
        f'<rect x="{x:.1f}" y="{y + 4:.1f}" width="10" height="6" rx="1" fill="#15803d"/></g>'
    )
