""""What happened": the summary at the top of every view of a capture (the capture page, the
Markdown postmortem, `kviz analyze --format text`), so that all three say the same.

The diagnosis' causes come first, each with its sentence, what to check, and its evidence;
the same cause for several connections is one line (its `group` sentence, or the same `text`):
"3 connections: Connections from ubuntu (10.244.10.89) were refused by … (#1, #5–#6)", with
the connections listed, the evidence of each, and the most severe grading. Causes keep the
diagnosis' ranking, except that a cause shared by more connections goes before a single one
of the same severity. Then the other findings, grouped the same way by sentence. Findings
about a connection that already has a cause are left out of that list: the cause explains them.
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


SEVERITIES = tuple(SEVERITY_WORDS)
EVIDENCE_PER_MEMBER = 2  # of a grouped cause: each connection's first proofs
EVIDENCE_PER_GROUP = 24


def each_cause(annotations: list[dict]) -> list[dict]:
    """The diagnosis' causes as the model holds them: one per connection or exchange."""
    return [a for a in annotations if a.get("severity") and a.get("text")]


def causes(annotations: list[dict]) -> list[dict]:
    """The causes to show, one item per distinct cause: a cause's own annotation when it
    concerns one connection (or none), else one item for all the connections that share it,
    with `text` saying how many and which, `connections`, `count`, the evidence of each and
    the most severe grading. Every item has `kind`, `severity`, `text`, `check`, `evidence`."""
    groups: dict[tuple, list[dict]] = {}
    for index, cause in enumerate(each_cause(annotations)):
        # Only causes of a connection are grouped: a lookup's or a vantage's stands alone.
        key = ((cause["kind"], cause.get("group") or cause["text"])
               if cause.get("connection") is not None else (index,))
        groups.setdefault(key, []).append(cause)
    items = [item for members in groups.values() for item in _grouped(members)]
    # Stable: the diagnosis' ranking, but a cause of many connections before one of few.
    return sorted(items, key=lambda item: (SEVERITIES.index(item["severity"])
                                           if item["severity"] in SEVERITIES else 99,
                                           -item["count"]))


def _grouped(members: list[dict]) -> list[dict]:
    """One item for causes of several connections, else each cause as it is."""
    numbered = sorted({c["connection"] for c in members if c.get("connection") is not None})
    if len(numbered) < 2:
        items = []
        for cause in members:
            listed = list(cause.get("connections") or  # nat_unseen lists its own
                          ([cause["connection"]] if cause.get("connection") is not None else []))
            items.append({**cause, "connections": listed, "count": max(len(listed), 1)})
        return items
    severity = min((c["severity"] for c in members),
                   key=lambda s: SEVERITIES.index(s) if s in SEVERITIES else 99)
    evidence: list[int] = []
    for cause in members:
        evidence += [i for i in (cause.get("evidence") or [])[:EVIDENCE_PER_MEMBER]
                     if i not in evidence]
    sentence = members[0].get("group") or members[0]["text"]
    return [{**members[0], "severity": severity,
             "text": f"{len(numbered)} connections: {sentence} ({ranges(numbered)})",
             "connections": numbered, "count": len(numbered),
             "evidence": evidence[:EVIDENCE_PER_GROUP]}]


def also_seen(annotations: list[dict], name) -> list[dict]:
    """The other findings, one item per distinct sentence: {"text", "connections",
    "count"}; `text` names the connections when there are several."""
    explained = {c.get("connection") for c in each_cause(annotations)} - {None}
    for cause in each_cause(annotations):
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
