"""A capture's TLS key log: secrets, so kept apart from the capture and its shares.

The key log of capture X is `DATA_DIR/keys/X/keylog` (the directory 0700, the file 0600),
never under `DATA_DIR/captures/X/`: nothing that serves a capture's files (downloads, share
links, bundles) walks into it. The analysis reads it when present; deleting it on its own
removes the secrets and queues the analysis again without them, so what was decrypted goes
too. No database column: whether a capture has a key log is whether the file exists.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from django.conf import settings

from captures.adapters import storage
from captures.analysis.tlsdecrypt import KeyLog, KeyLogError

MAX_KEYLOG_BYTES = 16 * 1024 * 1024  # curl's key log grows ~250 bytes per connection


class KeyLogRefused(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def directory(capture_id) -> Path:
    return Path(settings.DATA_DIR) / "keys" / str(capture_id)


def path(capture_id) -> Path | None:
    """The capture's key log, or None when it has none. With a remote storage
    (KVIZ_STORAGE=s3) it is kept in the bucket too, at `keys/<id>/keylog` (never under
    `captures/`), and fetched to this process' DATA_DIR/keys/<id>/ (0700/0600) on first use."""
    found = directory(capture_id) / "keylog"
    if storage.is_local():
        return found if found.is_file() else None
    # The bucket decides: a key log deleted through another process is gone here too.
    if not storage.exists(_stored_name(capture_id)):
        shutil.rmtree(directory(capture_id), ignore_errors=True)
        return None
    with storage.local_copies([_stored_name(capture_id)]) as (copy,):
        return store(capture_id, copy.read_bytes(), push=False)


def _stored_name(capture_id) -> str:
    return f"keys/{capture_id}/keylog"


def read_upload(uploaded) -> bytes:
    """The bytes of an uploaded key log (a file or a form field), checked to be one."""
    if isinstance(uploaded, str):
        data = uploaded.encode()
    else:
        if (uploaded.size or 0) > MAX_KEYLOG_BYTES:
            raise KeyLogRefused(f"the key log is larger than {MAX_KEYLOG_BYTES} bytes", 413)
        data = uploaded.read(MAX_KEYLOG_BYTES + 1)
    if len(data) > MAX_KEYLOG_BYTES:
        raise KeyLogRefused(f"the key log is larger than {MAX_KEYLOG_BYTES} bytes", 413)
    try:
        KeyLog.parse(data)
    except KeyLogError as exc:
        raise KeyLogRefused(f"keylog: {exc}") from None
    return data


def store(capture_id, data: bytes, push: bool = True) -> Path:
    folder = directory(capture_id)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    target = folder / "keylog"
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as fp:
        fp.write(data)
    if push and not storage.is_local():  # the worker that analyses may be another machine
        storage.put(_stored_name(capture_id), target)
    return target


def delete(capture_id) -> bool:
    """Remove the capture's key log; False when it had none."""
    folder = directory(capture_id)
    stored = not storage.is_local() and storage.exists(_stored_name(capture_id))
    if stored:
        storage.delete([_stored_name(capture_id)])
    if not folder.exists():
        return stored
    shutil.rmtree(folder, ignore_errors=True)
    return True
