"""Models of every corpus capture, computed once per session, and the layouts drawn from them.

The corpus is found the way tests/analysis finds it (beside the checkout, or KVIZ_CORPUS)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from tests.analysis.conftest import corpus_dir, corpus_files, corpus_id

__all__ = ["corpus_dir", "corpus_files", "corpus_id", "model_of"]


@cache
def model_of(path: str) -> dict:
    from captures.analysis import CaptureFile, analyze_files

    return analyze_files([CaptureFile(path)], inventory=None).to_dict()


def corpus_params(subdir: str | None = None):
    files = [p for p in corpus_files() if subdir is None or p.parent.name == subdir]
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no capture corpus found"))]
    return [pytest.param(p, id=corpus_id(p)) for p in files]


def corpus_path(relative: str) -> Path:
    root = corpus_dir()
    if root is None or not (root / relative).is_file():
        pytest.skip(f"corpus capture {relative} not found")
    return root / relative
