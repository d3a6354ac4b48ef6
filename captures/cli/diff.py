"""Compare two captures request by request: what the healthy one did that the failing one did not.

A and B are each a pcap/pcapng file, several files of one capture joined by commas (taken at
the same time at several places: `pod.pcapng,node.pcapng`), a folder of them (with an
inventory.json beside them, as the lab writes), a `kviz.sequence/1` JSON analysis
(`kviz analyze --format json`), or the id of a capture stored by the dashboard.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from captures.analysis import CaptureError, CaptureFile, analyze_files
from captures.analysis.compare import compare
from captures.render import diff as diff_render

CAPTURE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
PCAP_SUFFIXES = (".pcap", ".pcapng", ".cap")


def add_arguments(parser) -> None:
    parser.add_argument("a", metavar="A", help="the capture that worked (or the first): files, "
                        "a folder, an analysis JSON or a capture id")
    parser.add_argument("b", metavar="B", help="the capture to compare with it")
    parser.add_argument("--inventory-a", metavar="FILE", help="kviz.inventory/1 JSON for A")
    parser.add_argument("--inventory-b", metavar="FILE", help="kviz.inventory/1 JSON for B")
    parser.add_argument("--format", choices=["text", "markdown", "json"], default="text",
                        help="text: what differs; markdown: a postmortem section with every "
                        "row; json: the kviz.diff/1 document (docs/api.md)")
    parser.add_argument("--all", action="store_true",
                        help="text: list what is the same too")
    parser.add_argument("--out", metavar="PATH", help="write here instead of standard output")


def _inventory(path: str | None, beside: list[Path]) -> dict | None:
    if path is None:
        folders = {p.parent for p in beside}
        found = [f / "inventory.json" for f in folders if (f / "inventory.json").exists()]
        if len(found) != 1:
            return None
        path = str(found[0])
    try:
        with open(path, encoding="utf-8") as fp:
            doc = json.load(fp)
    except OSError as exc:
        raise CaptureError(f"{path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise CaptureError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise CaptureError(f"{path}: an inventory is a JSON object (see docs/inventory.md)")
    return doc


def _stored(capture_id: str) -> tuple[dict, str]:
    """A dashboard capture's stored analysis (this needs Django: `manage.py kviz diff`)."""
    from captures.models import Capture

    capture = Capture.objects.filter(id=capture_id).first()
    if capture is None:
        raise CaptureError(f"no capture {capture_id}")
    path = capture.analysis_file
    if path is None or not path.exists():
        raise CaptureError(f"capture {capture_id} ({capture.name}) has no analysis yet")
    with open(path, encoding="utf-8") as fp:
        return json.load(fp), capture.name


def load_side(spec: str, inventory: str | None) -> tuple[dict, str]:
    """(sequence model document, label) for one side of the diff."""
    if CAPTURE_ID.match(spec) and not Path(spec).exists():
        return _stored(spec)
    parts = [Path(p) for p in spec.split(",") if p]
    label = ", ".join(p.name for p in parts)
    if len(parts) == 1 and parts[0].is_dir():
        folder = parts[0]
        parts = sorted(p for p in folder.iterdir() if p.suffix in PCAP_SUFFIXES)
        if not parts:
            raise CaptureError(f"{folder}: no pcap or pcapng files in it")
    for part in parts:
        if not part.exists():
            raise CaptureError(f"{part}: no such file")
    if len(parts) == 1 and parts[0].suffix == ".json":
        try:
            doc = json.loads(parts[0].read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CaptureError(f"{parts[0]}: not valid JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("schema") != "kviz.sequence/1":
            raise CaptureError(f"{parts[0]}: not a kviz.sequence/1 analysis")
        return doc, label
    model = analyze_files([CaptureFile.from_path(p) for p in parts], _inventory(inventory, parts))
    try:
        return model.to_dict(), label
    finally:
        model.close()


def run(options, out, err) -> int:
    try:
        doc_a, label_a = load_side(options["a"], options.get("inventory_a"))
        doc_b, label_b = load_side(options["b"], options.get("inventory_b"))
    except CaptureError as exc:
        err.write(f"kviz diff: {exc}")
        return 2
    doc = compare(doc_a, doc_b, label_a, label_b)
    if options["format"] == "json":
        text = json.dumps(doc, ensure_ascii=False, indent=1) + "\n"
    elif options["format"] == "markdown":
        text = diff_render.render_markdown(doc)
    else:
        text = diff_render.render_text(doc, all_rows=options.get("all", False))
    try:
        if options.get("out"):
            Path(options["out"]).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
    except OSError as exc:
        err.write(f"kviz diff: {exc}")
        return 2
    return 0
