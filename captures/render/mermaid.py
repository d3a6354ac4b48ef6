"""Mermaid `sequenceDiagram` text for GitHub/GitLab Markdown.

Mermaid's grammar has a few traps for packet-derived text: `;` and `#` end or start an entity,
`%%` starts a comment (and `%%{init}%%` a directive), `<`/`>` are taken as HTML; `#59;`-style
entity codes are the escape Mermaid documents. Every string from a packet or an inventory goes
through `escape`: with no newline and no `;` it cannot end its statement and start another
(`click`, `link`, `links` would add an href), and with no `<` it carries no element.

Phase groups may interleave across connections, which `rect`/`critical` blocks cannot express
(they nest), so a phase starts with a Note over its lanes instead.
"""

from __future__ import annotations

import re

from .layout import Layout
from .svg import nat_word

# Markdown renderers refuse diagrams past a size (Mermaid's default maxTextSize is 50,000
# characters); past this many arrows the text says where the rest is rather than breaking.
MAX_ARROWS = 400
_UNSAFE = re.compile(r"[#;<>&%\"`{}|\[\]\\:]|[\x00-\x1f\x7f\u2028\u2029]")
ARROW = {"send": "->>", "reply": "-->>", "rst": "-x", "retransmission": "--)"}
SHORT_BADGES = ("dnat", "snat", "sidecar", "mtls", "request", "kept_open", "rst",
                "retransmission", "nxdomain", "dns_unanswered", "control_plane", "pooled")


def escape(value: str) -> str:
    return _UNSAFE.sub(lambda m: f"#{ord(m.group(0))};", value)


def participant_id(lane_index: int) -> str:
    return f"P{lane_index}"


def render_mermaid(layout: Layout, max_arrows: int = MAX_ARROWS) -> str:
    lines = ["sequenceDiagram"]
    # Lanes grouped by node are contiguous (layout.py): each group is a box named for its node.
    opens = {group.first_lane: group for group in layout.nodes}
    closes = {group.last_lane for group in layout.nodes}
    for lane in layout.lanes:
        if lane.index in opens:  # "transparent" first: else a title's first word may be a colour
            lines.append(f"    box transparent {escape(opens[lane.index].title)}")
        extra = " · ".join(lane.badges)
        shown = escape(lane.name) + (f"<br/>{escape(lane.caption)}" if lane.caption else "")
        if lane.kind not in ("external",):
            shown += f"<br/>{escape(lane.kind)}"
        if extra:
            shown += f"<br/>{escape(extra)}"
        lines.append(f"    participant {participant_id(lane.index)} as {shown}")
        if lane.index in closes:
            lines.append("    end")
    if not layout.lanes:
        lines.append("    Note over P0: no messages in this capture")
        return "\n".join(lines) + "\n"
    everyone = _over(layout, 0, len(layout.lanes) - 1)
    gaps = {gap.before_row: gap for gap in layout.gaps}
    folds = {group.first_row: group for group in layout.folds if group.collapsed}
    open_fold = None
    headed: set[int] = set()
    named: set[int] = set()
    visible = list(layout.visible_rows())
    for drawn, row in enumerate(visible):
        if drawn >= max_arrows:
            if open_fold is not None:
                lines.append("    end")
            lines.append(f"    Note over {everyone}: {len(visible) - drawn} more arrows not "
                         f"drawn here (see the SVG or the JSON layout)")
            break
        if row.index in gaps:
            lines.append(f"    Note over {everyone}: {escape(gaps[row.index].text)}")
        if row.index in folds:
            open_fold = folds[row.index]
            lines.append(f"    loop {escape(open_fold.text)}")
        group = layout.phases[row.group] if row.group is not None else None
        if group is not None and group.id not in headed:
            headed.add(group.id)
            lines.append(f"    Note over {_over(layout, *group.lanes)}: {escape(group.title)}")
        words = [row.label, *_badge_words(row, named)]
        arrow = ARROW.get(row.style, "->>")
        lines.append(f"    {participant_id(row.src_lane)}{arrow}{participant_id(row.dst_lane)}: "
                     f"{escape(' · '.join(words))}")
        if open_fold is not None and row.index == open_fold.shown_last_row:
            lines.append("    end")
            open_fold = None
    return "\n".join(lines) + "\n"


def _over(layout: Layout, low: int, high: int) -> str:
    if low == high:
        return participant_id(low)
    return f"{participant_id(low)},{participant_id(high)}"


def _badge_words(row, named: set[int]) -> list[str]:
    words = []
    for found in row.badges:
        kind = found["kind"]
        if kind not in SHORT_BADGES:
            continue
        if kind in ("dnat", "snat") and found["annotation"] in named:
            words.append(nat_word(row, kind))
            continue
        if found["annotation"] is not None:
            named.add(found["annotation"])
        words.append(("🔒 " if kind == "mtls" else "") + found["text"])
    return words
