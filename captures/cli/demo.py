"""Load demo captures for a user: the shared corpus, and recorded lab scenarios when root.

    python manage.py kviz demo [--owner admin] [--corpus DIR] [--lab] [--out data/demo]

With --lab, the lab's scenarios (captures `lab-pod-pod`, ...) and its faults (captures
`fault-NAME-pod` and `fault-NAME-node`, e.g. `fault-dns-lost-node`) are recorded and loaded too.
Idempotent: a file already uploaded for that user (same capture name) is skipped, and a lab
scenario or fault already recorded in --out is not recorded again. Each file goes through the same
upload action as the API (stored byte for byte, analysed by the worker).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")
SCENARIOS = ("pod", "node", "mesh")
EMBEDDED_WAIT = 120  # seconds: without Redis the analysis runs in this very process


def add_arguments(parser) -> None:
    parser.add_argument("--owner", help="username (default: the first superuser)")
    parser.add_argument("--corpus", type=Path, help="a folder of pcap/pcapng files "
                        "(default: shared/corpus beside the checkout, when present)")
    parser.add_argument("--lab", action="store_true",
                        help="also record the lab scenarios pod, node, mesh and the lab "
                        "faults (needs root)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where lab recordings go (default: DATA_DIR/demo)")


def capture_name(prefix: str, path: Path) -> str:
    """A DNS-1123 label from a file name: `demo-skydive-dns-a-aaaa-…`, at most 63 chars.

    Without a prefix the stem alone (lab faults' files are already named `fault-NAME-pod`)."""
    stem = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")
    return (f"{prefix}-{stem}" if prefix else stem)[:63].rstrip("-")


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in CAPTURE_SUFFIXES)


def _record_lab(out_dir: Path, out, err) -> list[Path]:
    from captures.sources import lab

    recorded = []
    for scenario in SCENARIOS:
        folder = out_dir / scenario
        existing = _files(folder) if folder.is_dir() else []
        if not existing:
            out.write(f"recording lab scenario {scenario} into {folder}")
            try:
                existing = [p for p in lab.run_scenario(scenario, folder)
                            if p.suffix in CAPTURE_SUFFIXES]
            except Exception as exc:  # a lab that cannot run here: the corpus still loads
                err.write(f"kviz demo: lab scenario {scenario} failed: {exc}")
                continue
        recorded += existing
    return recorded


def _record_faults(out_dir: Path, out, err) -> list[Path]:
    """Each lab fault's pod and node captures (with inventory.json and truth.json beside)."""
    from captures.lab import faults
    from captures.sources import lab

    recorded = []
    for name in faults.FAULTS:
        folder = out_dir / name
        existing = _files(folder) if folder.is_dir() else []
        if not existing:
            out.write(f"recording lab fault {name} into {folder}")
            try:
                existing = [p for p in faults.run(lab.get_lab(), name, folder)
                            if p.suffix in CAPTURE_SUFFIXES]
            except Exception as exc:  # a lab that cannot run here: the rest still loads
                err.write(f"kviz demo: lab fault {name} failed: {exc}")
                continue
        recorded += existing
    return recorded


def run(options, out, err) -> int:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.files import File

    from captures.jobs import actions
    from captures.models import Capture

    users = get_user_model().objects
    owner = (users.filter(username=options["owner"]).first() if options.get("owner")
             else users.filter(is_superuser=True).order_by("id").first())
    if owner is None:
        err.write("kviz demo: no such user (create one, or pass --owner)")
        return 1

    files: list[tuple[str, Path]] = []
    corpus = options.get("corpus") or settings.BASE_DIR.parent / "shared" / "corpus"
    if corpus.is_dir():
        files += [("demo", p) for p in _files(corpus)]
    elif options.get("corpus"):
        err.write(f"kviz demo: {corpus} is not a folder")
        return 1
    if options.get("lab"):
        if os.geteuid() != 0:
            err.write("kviz demo: the lab needs root; skipping the lab scenarios")
        else:
            out_dir = options.get("out") or settings.DATA_DIR / "demo"
            files += [(f"lab-{p.parent.name}", p) for p in _record_lab(out_dir, out, err)]
            files += [("", p) for p in _record_faults(out_dir, out, err)]

    queued = []
    for prefix, path in files:
        name = capture_name(prefix, path)
        if Capture.objects.filter(owner=owner, name=name).exists():
            continue
        # Lab recordings keep their interface names and pod/Service names (written beside).
        meta = path.with_name(path.name + ".meta.json")
        inventory = path.with_name("inventory.json")
        try:
            with open(path, "rb") as fp:
                capture = actions.upload_capture(
                    owner, name, File(fp, name=path.name),
                    meta=meta.read_bytes() if meta.is_file() else None,
                    inventory=inventory.read_bytes() if inventory.is_file() else None)
        except actions.ActionError as exc:
            err.write(f"kviz demo: {path.name}: {exc.message}")
            continue
        queued.append(capture.id)
        out.write(f"uploaded {path.name} as {name}")
    if queued and settings.CELERY_TASK_ALWAYS_EAGER:
        # Embedded mode analyses in threads of this process: wait for them before exiting.
        deadline = time.monotonic() + EMBEDDED_WAIT
        while time.monotonic() < deadline and Capture.objects.filter(
                id__in=queued, finished__isnull=True).exists():
            time.sleep(0.5)
    out.write(f"kviz demo: {len(queued)} captures added for {owner.get_username()}, "
              f"{len(files) - len(queued)} already there or refused")
    return 0
