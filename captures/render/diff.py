"""A diff of two captures (`kviz.diff/1`, captures/analysis/compare.py) as text for a terminal
and as Markdown for a postmortem. The page draws the same document (captures/web/postmortem.py).

Everything in a diff came from packets or inventories: the Markdown escapes it as the
postmortem does (markdown.escape), so a hostile name renders as text.
"""

from __future__ import annotations

from .markdown import _cell, escape

STATUS_WORDS = {"same": "same", "differs": "differs", "only_a": "only in A",
                "only_b": "only in B"}


def _side_line(label: str, facts: dict) -> str:
    duration = facts.get("duration")
    partial = " (partial)" if facts.get("partial") else ""
    named = f"{facts.get('label')}: " if facts.get("label") != label else ""
    return (f"{label}: {named}{facts.get('packets')} packets, "
            f"{duration if duration is not None else '?'} s, "
            f"{_count(facts.get('requests') or 0, 'request')}, "
            f"{_count(facts.get('lookups') or 0, 'lookup')}{partial}")


def _count(number: int, word: str) -> str:
    return f"{number} {word}{'' if number == 1 else 's'}"


def summary_line(doc: dict) -> str:
    s = doc["summary"]
    return (f"{_count(s['requests'], 'request')} and {_count(s['lookups'], 'lookup')} "
            f"compared: {s['differs']} differ, {s['only_a']} only in A, {s['only_b']} only in B, "
            f"{s['same']} the same; findings: {s['findings_only_a']} only in A, "
            f"{s['findings_only_b']} only in B")


def render_text(doc: dict, *, all_rows: bool = False) -> str:
    """What differs, request by request; `all_rows` also lists what is the same."""
    out = [_side_line("A", doc["a"]), _side_line("B", doc["b"]), summary_line(doc), ""]
    findings = doc["findings"]
    for key, label in (("only_a", "Findings only in A"), ("only_b", "Findings only in B")):
        if findings[key]:
            out.append(f"{label}:")
            out += [f"  {f['text']}" for f in findings[key]]
            out.append("")
    for item in [*doc["requests"], *doc["dns"]]:
        rows = [r for r in item["rows"] if all_rows or r["differs"]]
        if item["status"] == "same" and not all_rows:
            continue
        out.append(f"{item['title']}: {STATUS_WORDS[item['status']]}")
        width = max((len(f"{r['phase']} {r['aspect']}") for r in rows), default=0)
        if item["status"] in ("only_a", "only_b"):  # one side: its values, no column of dashes
            side = "a" if item["status"] == "only_a" else "b"
            out += [f"    {(r['phase'] + ' ' + r['aspect']).ljust(width)}  {r[side]}"
                    for r in item["rows"]]
            out.append("")
            continue
        for row in rows:
            mark = "≠" if row["differs"] else "="
            head = f"{row['phase']} {row['aspect']}".ljust(width)
            out.append(f"  {mark} {head}  A: {row['a']}")
            out.append(f"    {' ' * width}  B: {row['b']}")
        out.append("")
    if doc["summary"]["same"] and not all_rows:
        same = [i["title"] for i in [*doc["requests"], *doc["dns"]] if i["status"] == "same"]
        out.append("The same in both: " + ", ".join(same))
    return "\n".join(out).rstrip("\n") + "\n"


def render_markdown(doc: dict, *, title: str | None = None) -> str:
    a, b = doc["a"], doc["b"]
    out = [f"# {escape(title or 'Diff: ' + a['label'] + ' vs ' + b['label'])}", "",
           f"- **A**: {escape(_side_line('A', a)[3:])}",
           f"- **B**: {escape(_side_line('B', b)[3:])}",
           f"- {escape(summary_line(doc))}", ""]
    findings = doc["findings"]
    if findings["only_a"] or findings["only_b"]:
        out += ["## Findings on one side only", "", "| side | finding |", "| --- | --- |"]
        out += [f"| A | {_cell(f['text'])} |" for f in findings["only_a"]]
        out += [f"| B | {_cell(f['text'])} |" for f in findings["only_b"]]
        out.append("")
    out += ["## Requests", ""]
    for item in [*doc["requests"], *doc["dns"]]:
        out += [f"### {escape(item['title'])}: {STATUS_WORDS[item['status']]}", "",
                "| | phase | aspect | A | B |", "| --- | --- | --- | --- | --- |"]
        for row in item["rows"]:
            mark = "**≠**" if row["differs"] else ""
            out.append(f"| {mark} | {_cell(row['phase'])} | {_cell(row['aspect'])} | "
                       f"{_cell(row['a'])} | {_cell(row['b'])} |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
