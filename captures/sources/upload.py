"""Uploaded captures: checked by content, stored byte for byte.

A file is accepted when it starts with a pcap or pcapng magic number and the analysis engine
can read its first frames in a supported link type; its name proves nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from captures.analysis.packets import SUPPORTED_LINKTYPES
from captures.analysis.pcapfile import PCAP_MAGICS, PCAPNG_SHB, Warnings, read_frames
from captures.analysis.records import CaptureError
from captures.sources.base import TargetError, register

PROBE_FRAMES = 1000  # enough to meet a broken file early, bounded so a request stays quick


class UploadError(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def kind_of(head: bytes) -> str | None:
    if head[:4] in PCAP_MAGICS:
        return "pcap"
    if head[:4] == PCAPNG_SHB:
        return "pcapng"
    return None


def inspect(path: Path) -> str:
    """'pcap' or 'pcapng' when the engine can read the file, else UploadError."""
    with open(path, "rb") as fp:
        kind = kind_of(fp.read(4))
        if kind is None:
            raise UploadError("not a pcap or pcapng capture (checked by content)", 415)
        fp.seek(0)
        warnings = Warnings()
        try:
            linktypes, frames = read_frames(fp, 0, warnings, "upload")
            seen = set(linktypes)
            for count, frame in enumerate(frames):
                seen.add(frame.linktype)
                if count >= PROBE_FRAMES:
                    break
        except CaptureError as exc:
            raise UploadError(f"the capture cannot be read: {exc}", 415) from exc
    unsupported = sorted(seen - SUPPORTED_LINKTYPES)
    if unsupported:
        raise UploadError(f"link type {unsupported[0]} is not supported", 415)
    return kind


def store(uploaded, directory: Path, stem: str, max_bytes: int) -> Path:
    """Write `uploaded` (a Django UploadedFile) into `directory` as `<stem>.pcap(ng)`.

    The bytes are copied as they came; a file over `max_bytes` or not a capture leaves nothing
    behind (the caller removes the directory when one file of several fails).
    """
    part = directory / f"{stem}.part"
    try:
        written = 0
        with open(part, "wb") as out:
            for chunk in uploaded.chunks():
                written += len(chunk)
                if written > max_bytes:
                    raise UploadError(f"the files are larger than {max_bytes} bytes", 413)
                out.write(chunk)
        if written == 0:
            raise UploadError(f"{_shown_name(uploaded)} is empty")
        try:
            kind = inspect(part)
        except UploadError as exc:
            raise UploadError(f"{_shown_name(uploaded)}: {exc}", exc.status) from None
        final = directory / f"{stem}.{kind}"
        part.rename(final)
        return final
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _shown_name(uploaded) -> str:
    name = (getattr(uploaded, "name", "") or "").replace("\n", " ")[:100]
    return f"the file {name!r}" if name else "the file"


MAX_SIDECAR_BYTES = 4 * 1024 * 1024


def _json_part(part, what: str):
    """An optional JSON part of the upload form: a file or a text field."""
    if part is None or part == "":
        return None
    if hasattr(part, "chunks"):
        if part.size is not None and part.size > MAX_SIDECAR_BYTES:
            raise UploadError(f"the {what} is larger than {MAX_SIDECAR_BYTES} bytes", 413)
        part = b"".join(part.chunks())
    if len(part) > MAX_SIDECAR_BYTES:
        raise UploadError(f"the {what} is larger than {MAX_SIDECAR_BYTES} bytes", 413)
    try:
        value = json.loads(part)
    except ValueError as exc:
        raise UploadError(f"the {what} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UploadError(f"the {what} must be a JSON object")
    return value


def capture_meta(part) -> dict | None:
    """Where an uploaded capture was taken (docs/model.md: kviz.capture-meta/1), checked."""
    meta = _json_part(part, "capture metadata")
    if meta is None:
        return None
    if meta.get("schema") != "kviz.capture-meta/1":
        raise UploadError("capture metadata must have \"schema\": \"kviz.capture-meta/1\"")
    vantage = meta.get("vantage")
    interfaces = meta.get("interfaces") or {}
    if vantage is not None and (not isinstance(vantage, str) or len(vantage) > 300):
        raise UploadError("capture metadata: vantage must be a short string")
    if not isinstance(interfaces, dict) or not all(
        str(k).isdigit() and isinstance(v, str) and 0 < len(v) <= 64
        for k, v in interfaces.items()
    ):
        raise UploadError("capture metadata: interfaces must map interface indexes to names")
    return {"schema": "kviz.capture-meta/1", "vantage": vantage,
            "interfaces": {str(k): v for k, v in interfaces.items()}}


def inventory(part) -> dict | None:
    """Names for the capture's IPs (docs/inventory.md: kviz.inventory/1), checked."""
    document = _json_part(part, "inventory")
    if document is None:
        return None
    if document.get("schema", "kviz.inventory/1") != "kviz.inventory/1":
        raise UploadError("an inventory must have \"schema\": \"kviz.inventory/1\"")
    for section in ("pods", "services", "endpoints", "nodes"):
        if not isinstance(document.get(section, []), list):
            raise UploadError(f"inventory: {section} must be a list")
    return document


# -- as a target kind: offered in the picker, never captured live ------------------------------


def targets(user=None) -> list[dict]:
    return [{"kind": "upload"}]


def resolve(target: dict, user=None):
    raise TargetError("uploads are sent as multipart/form-data with a `file` field")


register(["upload"], resolve=resolve, targets=targets)
