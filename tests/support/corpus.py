"""Where the shared corpus of real captures is: beside the checkout (`<root>/shared/corpus`,
as CI lays it out), or KVIZ_CORPUS. Under CI a missing corpus is an error, not a skip: tests
parametrised over it would otherwise pass by running nothing."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")


def corpus_dir() -> Path | None:
    candidates = [ROOT.parent / "shared" / "corpus"]
    if os.environ.get("KVIZ_CORPUS"):
        candidates.insert(0, Path(os.environ["KVIZ_CORPUS"]))
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    if os.environ.get("CI"):
        raise RuntimeError(f"no capture corpus at {candidates[-1]} (or KVIZ_CORPUS)")
    return None


def corpus_files() -> list[Path]:
    root = corpus_dir()
    if root is None:
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in CAPTURE_SUFFIXES)
