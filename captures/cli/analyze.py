"""Analyse capture files: the sequence model as JSON, a narrative, or a diagram/postmortem.

It needs no database and no Django app: manage.py calls `main` directly for `kviz analyze`,
because Django's start-up (0.4 s) would be a large part of analysing a typical capture.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from captures.analysis import CaptureError, CaptureFile, analyze_files
from captures.analysis.engine import DEFAULT_MAX_FLOWS, MAX_CONNECTIONS
from captures.analysis.hops import DEFAULT_WINDOW
from captures.analysis.narrative import narrate
from captures.render import export


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
    parser.add_argument(
        "--format",
        choices=["json", "text", *export.FORMATS, "bundle"],
        default="text",
        help="json: the sequence model; text: a narrative; svg/mermaid/plantuml: the diagram; "
        "markdown: a postmortem; layout: the diagram layout as JSON for the browser "
        "(docs/layout.md); bundle: a zip that opens offline (index.html, the diagram as SVG "
        "and PNG, the Markdown postmortem, the model, the inventory and the files; --out "
        "required)",
    )
    parser.add_argument(
        "--out",
        metavar="PATH",
        help="write svg/mermaid/plantuml/markdown/layout here instead of standard output; "
        "markdown also writes the SVG beside it (PATH with .svg) and links it",
    )
    parser.add_argument(
        "--keylog",
        metavar="FILE",
        help="a TLS key log (the NSS format SSLKEYLOGFILE writes): TLS 1.2 and 1.3 "
        "connections it has keys for are decrypted and the HTTP inside is read",
    )
    parser.add_argument(
        "--copy-window",
        type=float,
        default=DEFAULT_WINDOW,
        metavar="SECONDS",
        help="how far apart two copies of one packet may be seen and still be folded into one "
        f"message (default {DEFAULT_WINDOW}); raise it for captures from several hosts whose "
        "clocks differ",
    )
    parser.add_argument(
        "--no-fold",
        action="store_true",
        help="draw every message (repeated exchanges are folded into one with a count by "
        "default; the layout format never hides any)",
    )
    parser.add_argument(
        "--max-flows",
        type=int,
        default=None,
        metavar="N",
        help="track at most N UDP flows, DNS exchanges and TCP connections (connections: "
        f"never more than {MAX_CONNECTIONS}); later ones are counted in a warning (default: "
        f"$KVIZ_MAX_FLOWS, else {DEFAULT_MAX_FLOWS}; docs/model.md, Bounds)",
    )


def main(argv: list[str]) -> int:
    """`manage.py kviz analyze ARGS` without Django: the same arguments and output."""
    parser = argparse.ArgumentParser(prog="manage.py kviz analyze", description=__doc__)
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    return run(options, _Lines(sys.stdout), _Lines(sys.stderr))


def exit_now(code: int) -> None:
    """End the process once its output is out, without freeing the analysis object by object:
    after a million-packet capture that took a fifth of a second, for nothing. Only for the
    process that is the command (manage.py's), never for one that goes on after `main`."""
    try:
        sys.stdout.flush()
    except OSError as exc:  # the reader went away: said (once), as a failed write in run() is
        if not code:
            with contextlib.suppress(OSError):
                sys.stderr.write(f"kviz analyze: {exc}\n")
            code = 2
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(code)


class _Lines:
    """Ends each write with a newline, as Django's command output does for `run`."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        self.stream.write(text if text.endswith("\n") else text + "\n")


def _max_flows(options) -> int:
    if options.get("max_flows") is not None:
        value = str(options["max_flows"])
    else:
        value = os.environ.get("KVIZ_MAX_FLOWS", str(DEFAULT_MAX_FLOWS))
    try:
        flows = int(value)
    except ValueError:
        raise CaptureError(f"KVIZ_MAX_FLOWS={value!r} is not an integer") from None
    if flows < 1:
        raise CaptureError("the flow limit must be at least 1")
    return flows


def run(options, out, err) -> int:
    try:
        inventory = _load_inventory(options["inventory"]) if options["inventory"] else None
        files = [CaptureFile.from_path(path) for path in options["files"]]
        if not 0 < options["copy_window"] <= 60:
            raise CaptureError("--copy-window must be between 0 and 60 seconds")
        model = analyze_files(files, inventory, window=options["copy_window"],
                              max_flows=_max_flows(options), keylog=options.get("keylog"))
    except CaptureError as exc:
        err.write(f"kviz analyze: {exc}")
        return 2
    try:
        if options["format"] == "json":
            model.write_json(sys.stdout)
            sys.stdout.flush()
        elif options["format"] == "bundle":
            _write_bundle(model, options, inventory)
        elif options["format"] in export.FORMATS:
            _write_diagram(model, options)
        else:
            for line in narrate(model):
                out.write(line)
    except OSError as exc:
        err.write(f"kviz analyze: {exc}")
        return 2
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


def _write_bundle(model, options, inventory) -> None:
    """The postmortem bundle (captures/render/bundle.py) of these files."""
    from captures.render.bundle import write_bundle

    if not options.get("out"):
        raise OSError("--format bundle writes a zip: give it a path with --out")
    paths = [Path(f) for f in options["files"]]
    names = [p.name for p in paths]
    facts = {"files": ", ".join(names)}
    title = Path(options["out"]).stem.removesuffix("-postmortem") or "postmortem"
    write_bundle(options["out"], model, title=title, facts=facts, inventory=inventory,
                 pcaps=[(f"{i + 1}-{p.name}" if len(paths) > 1 else p.name, p)
                        for i, p in enumerate(paths)])


def _write_diagram(model, options) -> None:
    fmt = options["format"]
    layout = export.layout_for(fmt, model, fold=not options["no_fold"])
    names = [Path(f).name for f in options["files"]]
    title = "kviz: " + ", ".join(names)
    out_path = Path(options["out"]) if options.get("out") else None
    facts, svg_href = None, None
    if fmt == "markdown":
        if out_path is not None:
            svg_path = out_path.with_suffix(".svg")
            svg_path.write_text(export.render("svg", model, layout=layout, title=title),
                                encoding="utf-8")
            svg_href = svg_path.name
        start = model.capture.get("start")
        facts = {"files": ", ".join(names)}
        if start:
            facts["time"] = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        title = f"Postmortem: {', '.join(names)}"
    text = export.render(fmt, model, layout=layout, title=title, facts=facts, svg_href=svg_href)
    if fmt == "layout":
        text += "\n"
    if out_path is not None:
        out_path.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
