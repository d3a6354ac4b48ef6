"""Captures made in a test from a recorded file, as the runner or an upload would store them."""

from __future__ import annotations

import shutil
from pathlib import Path

from django.conf import settings

from captures.analysis import CaptureFile, analyze_files
from captures.models import StoredFile


def store_copy(capture, source: Path, position: int = 0, vantage: str = "",
               interfaces: dict | None = None) -> StoredFile:
    """Copy `source` (and its meta file, when it has one) into the capture's directory."""
    capture.directory.mkdir(parents=True, exist_ok=True)
    target = capture.directory / f"{StoredFile.stem(position)}{source.suffix}"
    shutil.copy(source, target)
    meta = source.with_name(source.name + ".meta.json")
    if meta.exists():
        shutil.copy(meta, target.with_name(target.name + ".meta.json"))
    return StoredFile.objects.create(
        capture=capture, position=position, vantage=vantage, interfaces=interfaces or {},
        path=str(target.relative_to(settings.DATA_DIR)), bytes=target.stat().st_size)


def stored_analysis(sources: list[Path], target: Path, folder: str = "stored-test") -> Path:
    """`sources` analysed together and written to `target` as the runner stores an analysis,
    from copies under DATA_DIR/captures/`folder` (so the owner's view has server paths to cut)."""
    copies = []
    for source in sources:
        copy = Path(settings.DATA_DIR) / "captures" / folder / source.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(source.read_bytes())
        copies.append(CaptureFile(copy))
    model = analyze_files(copies, None)
    try:
        with open(target, "w", encoding="utf-8") as fp:
            model.write_json(fp)
    finally:
        model.close()
    return target
