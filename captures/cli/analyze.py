"""Analyse capture files: print the sequence model as JSON or as an expert's narrative."""

from __future__ import annotations

import json
import sys

from django.conf import settings

from captures.analysis import CaptureError, CaptureFile, analyze_files
from captures.analysis.narrative import narrate


def add_arguments(parser) -> None:
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="pcap or pcapng files taken at the same time (PATH.meta.json beside "
        "a file names its vantage point and interfaces)",
    )
    parser.add_argument(
        "--inventory", metavar="FILE", help="kviz.inventory/1 JSON naming pods, Services and nodes"
    )
    parser.add_argument("--format", choices=["json", "text"], default="text")


def run(options, out, err) -> int:
    try:
        inventory = _load_inventory(options["inventory"]) if options["inventory"] else None
        files = [CaptureFile.from_path(path) for path in options["files"]]
        model = analyze_files(files, inventory, max_flows=settings.KVIZ_MAX_FLOWS)
    except CaptureError as exc:
        err.write(f"kviz analyze: {exc}")
        return 2
    try:
        if options["format"] == "json":
            model.write_json(sys.stdout)
            sys.stdout.flush()
        else:
            for line in narrate(model):
                out.write(line)
    finally:
        model.close()
    return 0


def _load_inventory(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fp:
            inventory = json.load(fp)
    except OSError as exc:
        raise CaptureError(f"{path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise CaptureError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(inventory, dict):
        raise CaptureError(f"{path}: an inventory is a JSON object (see docs/inventory.md)")
    return inventory
