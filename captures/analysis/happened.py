""""What happened": the summary at the top of every view of a capture (the capture page, the
Markdown postmortem, `kviz analyze --format text`), so that all three say the same.

The diagnosis' causes come first, in the order it ranked them, each with its sentence, what to
check, and its evidence. Then the other findings, grouped: the same sentence for several
connections is one line ("10 connections: … (#1, #5–#12)") instead of ten. Findings about a
connection that already has a cause are left out of that list: the cause explains them.
"""

from __future__ import annotations

from .words import finding

SEVERITY_WORDS = {"error": "Error", "warning": "Warning", "note": "Note"}


def ranges(numbers) -> str:
    """"#1, #5–#12" for [1, 5, 6, ..., 12]."""
    numbers = sorted(set(numbers))
    parts = []
    start = previous = None
    for number in numbers:
        if previous is not None and number == previous + 1:
            previous = number
            continue
        if start is not None:
            parts.append(f"#{start}" if start == previous else f"#{start}–#{previous}")
        start = previous = number
    if start is not None:
        parts.append(f"#{start}" if start == previous else f"#{start}–#{previous}")
    return ", ".join(parts)


def causes(annotations: list[dict]) -> list[dict]:
    return [a for a in annotations if a.get("severity") and a.get("text")]


def also_seen(annotations: list[dict], name) -> list[dict]:
    """The other findings, one item per distinct sentence: {"text", "connections",
    "count"}; `text` names the connections when there are several."""
    explained = {c.get("connection") for c in causes(annotations)} - {None}
    for cause in causes(annotations):
        explained.update(cause.get("connections") or ())
    groups: dict[str, list] = {}
    for note in annotations:
        if note.get("severity"):
            continue
        connection = note.get("connection")
        if connection in explained:
            continue
        sentence = finding({**note, "connection": None}, name)
        groups.setdefault(sentence, []).append(connection)
    items = []
    for sentence, connections in groups.items():
        numbered = [c for c in connections if c is not None]
        if len(numbered) > 1:
            text = f"{len(numbered)} connections: {sentence} ({ranges(numbered)})"
        elif numbered:
            text = f"Connection {numbered[0]}: {sentence}"
        else:
            text = sentence
        items.append({"text": text, "connections": numbered, "count": len(connections)})
    return items


def text_lines(annotations: list[dict], name) -> list[str]:
    """The summary as plain text lines (`kviz analyze --format text`)."""
    found = causes(annotations)
    others = also_seen(annotations, name)
    if not found and not others:
        return ["What happened: nothing unusual."]
    lines = ["What happened:"]
    for cause in found:
        lines.append(f"  {SEVERITY_WORDS.get(cause['severity'], cause['severity'])}: "
                     f"{cause['text']}")
        lines.append(f"    check: {cause['check']}")
        if cause.get("evidence"):
            lines.append("    evidence: messages "
                         + ", ".join(str(i) for i in cause["evidence"][:12]))
    if others:
        lines.append("  Also seen:" if found else "  Seen:")
        lines.extend(f"    {item['text']}" for item in others)
    return lines
