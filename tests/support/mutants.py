"""Captures made from real ones by changing a few bytes of one frame: the frame to change, and
what the analysis then says of it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from captures.analysis import CaptureFile, analyze_files
from captures.analysis.packets import decode_frame
from captures.analysis.pcapfile import Warnings, read_frames
from captures.analysis.records import PacketRecord, RawFrame


def first_frame(
    path: Path, wanted: Callable[[PacketRecord], bool]
) -> tuple[RawFrame, PacketRecord]:
    """The first frame of `path` whose record is `wanted`, and that record."""
    with open(path, "rb") as fp:
        _linktypes, frames = read_frames(fp, 0, Warnings())
        for frame in frames:
            record = decode_frame(frame, {})
            if record is not None and wanted(record):
                return frame, record
    raise AssertionError(f"{path.name} has no such frame")


def analysed(path: Path, number: int) -> tuple[dict, dict]:
    """The document of `path` alone, and the message of its frame `number`."""
    model = analyze_files([CaptureFile(path)])
    try:
        doc = model.to_dict()
    finally:
        model.close()
    [message] = [m for m in doc["messages"] if m["frame"] == [0, number]]
    return doc, message
