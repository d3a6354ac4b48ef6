"""Load demo captures for a user: the shared corpus, and recorded lab scenarios when root.

    python manage.py kviz demo [--owner admin] [--corpus DIR] [--lab [--only NAME ...]]
                               [--out data/demo]

With --lab, the lab's scenarios and faults are recorded and loaded too. A scenario recorded at
one place is one capture (`lab-pod-pod`, `lab-node-node`); one recorded at several places at
once is one capture of all its files, each with where it was taken (`lab-mesh`: the node and
the client pod; `lab-path`: the two-node `path` scenario, at every hop). Each fault gives two
captures, `fault-NAME-pod` and `fault-NAME-node` (e.g. `fault-dns-lost-node`). --only limits
the lab to the scenarios and faults named.
Idempotent: a capture already loaded for that user (same name) is skipped, and a lab scenario
or fault already recorded in --out is not recorded again. Each capture goes through the same
upload action as the API (stored byte for byte, analysed by the worker).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")
SCENARIOS = ("pod", "node", "mesh")
PATH = "path"  # recorded last: it rebuilds the lab with two nodes, then puts it back
META_SCHEMA = "kviz.capture-meta/1"
EMBEDDED_WAIT = 120  # seconds: without Redis the analysis runs in this very process


def add_arguments(parser) -> None:
    parser.add_argument("--owner", help="username (default: the first superuser)")
    parser.add_argument("--corpus", type=Path, help="a folder of pcap/pcapng files "
                        "(default: shared/corpus beside the checkout, when present)")
    parser.add_argument("--lab", action="store_true",
                        help="also record the lab scenarios pod, node, mesh and path and the "
                        "lab faults (needs root)")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="with --lab: only these scenarios or faults (e.g. mesh path "
                        "fault-dns-lost)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where lab recordings go (default: DATA_DIR/demo)")


def capture_name(prefix: str, path: Path) -> str:
    """A DNS-1123 label from a file name: `demo-skydive-dns-a-aaaa-…`, at most 63 chars.

    Without a prefix the stem alone (lab faults' files are already named `fault-NAME-pod`)."""
    stem = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")
    return (f"{prefix}-{stem}" if prefix else stem)[:63].rstrip("-")


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in CAPTURE_SUFFIXES)


def _recorded(folder: Path, record, what: str, out, err) -> list[Path]:
    """The capture files in `folder`, recorded there by `record(folder)` if there are none."""
    existing = _files(folder) if folder.is_dir() else []
    if existing:
        return existing
    out.write(f"recording lab {what} into {folder}")
    try:
        return [p for p in record(folder) if p.suffix in CAPTURE_SUFFIXES]
    except Exception as exc:  # a lab that cannot run here: the rest still loads
        err.write(f"kviz demo: lab {what} failed: {exc}")
        return []


def _in_order(files: list[Path], names: list[str]) -> list[Path]:
    """`files` in the order the scenario lists its places (client first), others after."""
    rank = {name: index for index, name in enumerate(names)}
    return sorted(files, key=lambda p: (rank.get(p.name, len(rank)), p.name))


def _scenario_captures(prefix: str, files: list[Path]) -> list[tuple[str, list[Path]]]:
    # A single place keeps the name it always had (lab-pod-pod); several are one capture.
    if len(files) == 1:
        return [(capture_name(prefix, files[0]), files)]
    return [(prefix, files)] if files else []


def _record_path(folder: Path) -> list[Path]:
    """The path scenario on a two-node lab, then the lab as it was before: the other scenarios,
    the faults and the dashboard's lab targets expect its usual layout."""
    from captures.lab import path as lab_path
    from captures.sources import lab

    the_lab = lab.get_lab()
    before, nodes = the_lab.status(), the_lab.plan.node_count
    try:
        return lab_path.run(the_lab, folder)
    finally:
        if before["status"] == "up":
            the_lab.up(sidecar_enabled=before["sidecar"], mode=before["mode"] or "auto",
                       nodes=nodes)
        else:
            the_lab.down()


def _lab_captures(out_dir: Path, only, out, err) -> list[tuple[str, list[Path]]]:
    """(capture name, files) of each lab recording, recorded first where it is missing."""
    from captures.lab import faults, scenarios
    from captures.lab import path as lab_path
    from captures.sources import lab

    wanted = set(only or ())
    captures = []
    for name in SCENARIOS:
        if wanted and name not in wanted:
            continue
        files = _recorded(out_dir / name, lambda folder, name=name: lab.run_scenario(
            name, folder), f"scenario {name}", out, err)
        order = [v.file_name for v in scenarios.scenario(name).vantages]
        captures += _scenario_captures(f"lab-{name}", _in_order(files, order))
    for name in faults.FAULTS:
        if wanted and name not in wanted:
            continue
        files = _recorded(out_dir / name, lambda folder, name=name: faults.run(
            lab.get_lab(), name, folder), f"fault {name}", out, err)
        captures += [(capture_name("", p), [p]) for p in files]
    if not wanted or PATH in wanted:
        files = _recorded(out_dir / PATH, _record_path, f"scenario {PATH}", out, err)
        order = [v.file_name for v in lab_path.VANTAGES]
        captures += _scenario_captures(f"lab-{PATH}", _in_order(files, order))
    return captures


def _upload(owner, name: str, paths: list[Path]):
    """One capture of `paths`, each with the meta file written beside it (where it was taken,
    its interfaces' names) and the folder's inventory (the pods' and Services' names)."""
    from django.core.files import File

    from captures.jobs import actions

    metas = [path.with_name(path.name + ".meta.json") for path in paths]
    # One meta per file or none: a file without its own says only the schema.
    metas = [meta.read_text() if meta.is_file() else f'{{"schema": "{META_SCHEMA}"}}'
             for meta in metas] if any(meta.is_file() for meta in metas) else []
    inventory = paths[0].with_name("inventory.json")
    opened = [open(path, "rb") for path in paths]  # noqa: SIM115 - closed below
    try:
        return actions.upload_capture(
            owner, name, [File(fp, name=path.name) for fp, path in zip(opened, paths,
                                                                         strict=True)],
            metas=metas, inventory=inventory.read_text() if inventory.is_file() else None)
    finally:
        for fp in opened:
            fp.close()


def run(options, out, err) -> int:
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from captures.jobs import actions
    from captures.models import Capture

    users = get_user_model().objects
    owner = (users.filter(username=options["owner"]).first() if options.get("owner")
             else users.filter(is_superuser=True).order_by("id").first())
    if owner is None:
        err.write("kviz demo: no such user (create one, or pass --owner)")
        return 1

    captures: list[tuple[str, list[Path]]] = []
    corpus = options.get("corpus") or settings.BASE_DIR.parent / "shared" / "corpus"
    if corpus.is_dir():
        captures += [(capture_name("demo", p), [p]) for p in _files(corpus)]
    elif options.get("corpus"):
        err.write(f"kviz demo: {corpus} is not a folder")
        return 1
    if options.get("lab"):
        if os.geteuid() != 0:
            err.write("kviz demo: the lab needs root; skipping the lab scenarios")
        else:
            out_dir = options.get("out") or settings.DATA_DIR / "demo"
            captures += _lab_captures(out_dir, options.get("only"), out, err)

    queued = []
    for name, paths in captures:
        if Capture.objects.filter(owner=owner, name=name).exists():
            continue
        try:
            capture = _upload(owner, name, paths)
        except actions.ActionError as exc:
            err.write(f"kviz demo: {', '.join(p.name for p in paths)}: {exc.message}")
            continue
        queued.append(capture.id)
        out.write(f"uploaded {', '.join(p.name for p in paths)} as {name}")
    if queued and settings.CELERY_TASK_ALWAYS_EAGER:
        # Embedded mode analyses in threads of this process: wait for them before exiting.
        deadline = time.monotonic() + EMBEDDED_WAIT
        while time.monotonic() < deadline and Capture.objects.filter(
                id__in=queued, finished__isnull=True).exists():
            time.sleep(0.5)
    out.write(f"kviz demo: {len(queued)} captures added for {owner.get_username()}, "
              f"{len(captures) - len(queued)} already there or refused")
    return 0
