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


def mermaid_parts(layout: Layout, max_arrows: int = MAX_ARROWS) -> int:
    """How many diagrams of at most `max_arrows` arrows `layout` needs (at least one)."""
    return max(1, -(-sum(1 for _ in layout.visible_rows()) // max_arrows))


def render_mermaid_parts(layout: Layout, max_arrows: int = MAX_ARROWS) -> list[str]:
    """Every part of `layout` as its own diagram (each parses and renders alone)."""
    return [render_mermaid(layout, max_arrows, part)
            for part in range(1, mermaid_parts(layout, max_arrows) + 1)]


def render_mermaid(layout: Layout, max_arrows: int = MAX_ARROWS, part: int = 1) -> str:
    """One diagram: the drawn rows of part `part` (1-based) of `mermaid_parts`, each part with
    every participant, the phase headers, folds and gaps it crosses, and NAT findings spelled
    out again (a reader may paste part 3 alone). Mermaid renders a few hundred arrows at most
    (GitHub refuses past its maxTextSize), hence the parts; one part says where the others are."""
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
    visible = list(layout.visible_rows())
    parts = max(1, -(-len(visible) // max_arrows))
    part = min(max(part, 1), parts)
    first, last = (part - 1) * max_arrows, min(part * max_arrows, len(visible))
    kind = "after folding repeats" if layout.folded else "every message drawn"
    if parts > 1:
        lines.append(f"    Note over {everyone}: " + escape(
            f"part {part} of {parts}, arrows {first + 1}–{last} of {len(visible)} ({kind}; "
            f"Mermaid draws at most {max_arrows} arrows a diagram)"))
    open_fold = None
    if first > 0:  # a fold begun in the part before goes on here
        row = visible[first]
        for group in folds.values():
            if group.first_row < row.index <= group.shown_last_row:
                open_fold = group
                lines.append(f"    loop {escape(group.text)} (continued)")
    headed: set[int] = set()
    named: set[int] = set()
    for row in visible[first:last]:
        if row.index in gaps:
            lines.append(f"    Note over {everyone}: {escape(gaps[row.index].text)}")
        if row.index in folds:
            open_fold = folds[row.index]
            lines.append(f"    loop {escape(open_fold.text)}")
        group = layout.phases[row.group] if row.group is not None else None
        if group is not None and group.id not in headed:
            headed.add(group.id)
            # a phase the part before began: its header again, said to go on
            title = group.title + (" (continued)" if first and
                                   group.first_row < visible[first].index else "")
            lines.append(f"    Note over {_over(layout, *group.lanes)}: {escape(title)}")
        words = [row.label, *_badge_words(row, named)]
        arrow = ARROW.get(row.style, "->>")
        lines.append(f"    {participant_id(row.src_lane)}{arrow}{participant_id(row.dst_lane)}: "
                     f"{escape(' · '.join(words))}")
        if open_fold is not None and row.index == open_fold.shown_last_row:
            lines.append("    end")
            open_fold = None
    if open_fold is not None:
        lines.append("    end")
    if part < parts:
        lines.append(f"    Note over {everyone}: " + escape(
            f"{len(visible) - last} more arrows in parts {part + 1}–{parts} (the Mermaid export "
            f"with part={part + 1}; the SVG and the JSON layout have them all; a filter by "
            f"connection draws fewer)"))
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
