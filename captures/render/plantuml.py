"""PlantUML sequence diagram text: participants declared first, `== phase ==` dividers, `...`
delays for idle gaps, `loop` blocks for folded repetitions.

Every string from a packet or an inventory goes through `escape`. PlantUML runs a preprocessor
over the whole text before drawing (`%getenv("HOME")`, `%load_json(...)`, `!include`,
`!define` wherever they appear), then reads creole and HTML-like markup in labels (`[[url]]`
links, `<img:url>`, `<color>`, `**bold**`); a diagram drawn by a server or an IDE plugin must not
read the drawer's environment or files, fetch a URL, or carry a link chosen by a packet's sender.
"""

from __future__ import annotations

import re

from .layout import Layout
from .svg import nat_word

ARROW = {"send": "->", "reply": "-->", "rst": "-[#b91c1c]>", "retransmission": "-[#b45309]->"}
# A label is one line: newlines would end the statement and PlantUML reads `\n` as one.
_BREAKS = re.compile(r"[\r\n\x00-\x1f\x7f\u2028\u2029]")
# Preprocessor (`%` functions, `!` directives, `$` variables), markup (`<...>`, `[[...]]`,
# `{{...}}` embedded diagrams, `**`, creole's `~` escape, table `|`) and the quote that ends a
# participant's name become numeric character references, which PlantUML draws as the character
# and neither the preprocessor nor creole reads. An `&` too, so packet text spelling a
# reference shows as typed.
_SPECIAL = re.compile(r"[&%!$<>\[\]{}*~|\"]")
# The other creole pairs (`//italic//`, `--strike--`, `__underline__`, `==`): break the pair.
_PAIRS = re.compile(r"(?<=/)/|(?<=-)-|(?<=_)_|(?<==)=")


def escape(value) -> str:
    value = _BREAKS.sub(" ", str(value)).replace("\\", "∖")
    value = _SPECIAL.sub(lambda m: f"&#{ord(m.group(0))};", value)
    return _PAIRS.sub(lambda m: f"&#{ord(m.group(0))};", value)


def participant_id(lane_index: int) -> str:
    return f"P{lane_index}"


def render_plantuml(layout: Layout, title: str | None = None) -> str:
    lines = ["@startuml", "skinparam responseMessageBelowArrow true",
             "skinparam sequenceMessageAlign center"]
    if title:
        lines.append(f"title {escape(title)}")
    opens = {group.first_lane: group for group in layout.nodes}  # lanes grouped by node
    closes = {group.last_lane for group in layout.nodes}
    for lane in layout.lanes:
        if lane.index in opens:
            lines.append(f'box "{escape(opens[lane.index].title)}"')
        facts = [lane.kind] + ([lane.namespace] if lane.namespace else []) + lane.badges
        shown = "\\n".join(escape(part) for part in (lane.name, lane.caption, " · ".join(facts))
                            if part)
        lines.append(f'participant "{shown}" as {participant_id(lane.index)}')
        if lane.index in closes:
            lines.append("end box")
    gaps = {gap.before_row: gap for gap in layout.gaps}
    folds = {group.first_row: group for group in layout.folds if group.collapsed}
    open_fold = None
    headed: set[int] = set()
    named: set[int] = set()
    for row in layout.visible_rows():
        if row.index in gaps:
            lines.append(f"...{escape(gaps[row.index].text.strip('… '))}...")
        if row.index in folds:
            open_fold = folds[row.index]
            lines.append(f"loop {escape(open_fold.text)}")
        group = layout.phases[row.group] if row.group is not None else None
        if group is not None and group.id not in headed:
            headed.add(group.id)
            lines.append(f"== {escape(group.title)} ==")
        words = [row.label]
        for found in row.badges:
            if found["kind"] == "hops":
                continue
            if found["kind"] in ("dnat", "snat") and found["annotation"] in named:
                words.append(nat_word(row, found["kind"]))
                continue
            if found["annotation"] is not None:
                named.add(found["annotation"])
            words.append(found["text"])
        arrow = ARROW.get(row.style, "->")
        lines.append(f"{participant_id(row.src_lane)} {arrow} {participant_id(row.dst_lane)} : "
                     f"{escape(' · '.join(words))}")
        if open_fold is not None and row.index == open_fold.shown_last_row:
            lines.append("end")
            open_fold = None
    lines.append("@enduml")
    return "\n".join(lines) + "\n"
