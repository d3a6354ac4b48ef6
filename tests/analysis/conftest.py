"""Every capture under the shared corpus, read once by tshark and once by the engine.

The corpus lives beside the checkout (`<root>/main` and `<root>/shared/corpus`); CI clones the
repository into another folder with a copy of shared/ beside it, so the relative location is the
stable one. KVIZ_CORPUS overrides it.
"""

from __future__ import annotations

import shutil
from functools import cache
from pathlib import Path

import pytest

from tests.support.corpus import corpus_dir, corpus_files

from . import tshark_reference

__all__ = ["corpus_dir", "corpus_files", "corpus_id"]


def corpus_id(path: Path) -> str:
    root = corpus_dir()
    return path.relative_to(root).as_posix() if root else path.name


def pytest_generate_tests(metafunc):
    """Any test asking for `corpus_file` runs once per capture in the corpus, unless it
    parametrises `corpus_file` itself with a chosen few."""
    chosen = any(
        "corpus_file" in str(marker.args[0])
        for marker in metafunc.definition.iter_markers("parametrize")
        if marker.args
    )
    if "corpus_file" in metafunc.fixturenames and not chosen:
        files = corpus_files()
        if files:
            metafunc.parametrize("corpus_file", files, ids=[corpus_id(p) for p in files])
        else:
            metafunc.parametrize(
                "corpus_file",
                [pytest.param(None, marks=pytest.mark.skip(reason="no capture corpus found"))],
            )


def require_tshark() -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")


@cache
def _model(path: str) -> dict:
    from captures.analysis import CaptureFile, analyze_files

    return analyze_files([CaptureFile(path)], inventory=None).to_dict()


@pytest.fixture
def reference(corpus_file):
    """tshark's reading of the capture (see tshark_reference.py)."""
    require_tshark()
    return tshark_reference.read(corpus_file, corpus=corpus_dir())


@pytest.fixture
def model(corpus_file):
    """The engine's `kviz.sequence/1` document for the capture alone, computed once."""
    return _model(str(corpus_file))


@pytest.fixture
def corpus():
    root = corpus_dir()
    if root is None:
        pytest.skip("no capture corpus found (set KVIZ_CORPUS)")
    return root
