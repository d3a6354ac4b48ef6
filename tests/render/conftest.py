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


JS = Path(__file__).resolve().parent / "js"


def mermaid_errors(diagrams: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """Parse every diagram with the real `mermaid` package under Node, in one process (the
    package is installed by `npm ci --prefix tests/render/js`); returns name → parse error."""
    import json
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs npm)")
    assert (JS / "node_modules" / "mermaid").is_dir(), (
        "the mermaid package is missing: run `npm ci --prefix tests/render/js`")
    source = tmp_path / "diagrams.json"
    source.write_text(json.dumps(diagrams), encoding="utf-8")
    done = subprocess.run([node, str(JS / "check_mermaid.mjs"), str(source)], cwd=JS,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) == len(diagrams)
    return {name: error for name, error in results.items() if error}
