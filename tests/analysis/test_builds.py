"""The compiled analysis (mypyc, captures/analysis/build.py) and the interpreted source: the
same output, and the compiled one only ever runs when built from the sources on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from captures.analysis import build
from captures.analysis.engine import META_SCHEMA
from tests.support.corpus import corpus_files
from tests.support.dnat import record_dnat

ROOT = Path(__file__).resolve().parents[2]


def analyze(paths: Path | list[Path], which: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KVIZ_ANALYSIS_BUILD": which}
    paths = paths if isinstance(paths, list) else [paths]
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "kviz", "analyze", *map(str, paths), *extra],
        capture_output=True, env=env, timeout=300, check=False)


def which_runs(which: str, cwd: Path = ROOT, said: list[str] | None = None,
               module: str = "engine") -> str:
    """`BUILD` and where `module` came from, in a new process started in `cwd`; what it
    wrote to standard error goes to `said`."""
    code = (f"import captures.analysis as a, captures.analysis.{module} as e; "
            "print(a.BUILD, e.__file__)")
    env = {**os.environ, "KVIZ_ANALYSIS_BUILD": which}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    if said is not None:
        said.append(done.stderr)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def compiled_or_skip():
    reason = build.stale_reason()
    if reason is not None:
        if os.environ.get("KVIZ_ANALYSIS_BUILD") == "compiled":
            pytest.fail(f"the suite runs against the compiled build, but {reason}")
        pytest.skip(reason)


def test_both_builds_write_the_same_bytes_for_every_corpus_capture():
    compiled_or_skip()
    captures = corpus_files()
    if not captures:
        pytest.skip("no capture corpus here")
    for path in captures:
        for fmt in ("json", "text"):
            interpreted = analyze(path, "interpreted", "--format", fmt)
            compiled = analyze(path, "compiled", "--format", fmt)
            assert (compiled.returncode, compiled.stdout, compiled.stderr) == (
                interpreted.returncode, interpreted.stdout, interpreted.stderr), (path, fmt)


def test_both_builds_agree_on_a_recorded_path_through_a_dnat(tmp_path):
    compiled_or_skip()
    recorded = record_dnat(tmp_path, "kvbuild")
    (tmp_path / "router.pcapng.meta.json").write_text(json.dumps({
        "schema": META_SCHEMA, "vantage": "node/router",
        "interfaces": {str(k): v for k, v in recorded.router_interfaces.items()}}))
    files = [recorded.client, recorded.router, recorded.server]
    for fmt in ("json", "text"):
        interpreted = analyze(files, "interpreted", "--format", fmt)
        compiled = analyze(files, "compiled", "--format", fmt)
        assert interpreted.returncode == 0, interpreted.stderr
        assert b"dnat" in interpreted.stdout.lower()  # the path the test is about was seen
        assert compiled.stdout == interpreted.stdout


def test_the_compiled_build_runs_only_from_the_sources_it_was_built_from(tmp_path):
    compiled_or_skip()
    assert which_runs("auto").startswith("compiled ")
    assert ".so" in which_runs("compiled")
    assert which_runs("interpreted").endswith("engine.py")
    # A copy of the project whose engine.py differs by one comment: its compiled build is
    # stale, so `auto` falls back to the source and `compiled` refuses to run.
    copy = tmp_path / "kviz"
    shutil.copytree(ROOT / "captures", copy / "captures",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(build.BUILD_DIR, copy / "build" / "analysis")
    said: list[str] = []
    assert which_runs("auto", cwd=copy, said=said).startswith("compiled ")
    assert said == [""]
    engine = copy / "captures" / "analysis" / "engine.py"
    engine.write_text(engine.read_text() + "\n# edited after the build\n")
    assert which_runs("auto", cwd=copy, said=said) == f"interpreted {engine}"
    # Said once, where the process logs (here: standard error, no logging set up).
    assert "the compiled analysis is not used: compiled from other sources than engine.py" \
        in said[-1]
    refused = which_runs("compiled", cwd=copy)
    assert "compiled from other sources than engine.py" in refused


def test_the_diagnosis_is_compiled_with_the_rest_and_falls_back_with_it(tmp_path):
    compiled_or_skip()
    view = "diagnosis.view"
    compiled = which_runs("compiled", module=view)
    assert "/build/analysis/captures/analysis/diagnosis/view." in compiled
    assert compiled.endswith(".so")
    assert which_runs("interpreted", module=view).endswith("diagnosis/view.py")
    copy = tmp_path / "kviz"
    shutil.copytree(ROOT / "captures", copy / "captures",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(build.BUILD_DIR, copy / "build" / "analysis")
    source = copy / "captures" / "analysis" / "diagnosis" / "view.py"
    source.write_text(source.read_text() + "\n# edited after the build\n")
    said: list[str] = []
    # The engine, unchanged, falls back too: a build runs whole or not at all.
    assert which_runs("auto", cwd=copy, said=said) == (
        f"interpreted {copy / 'captures' / 'analysis' / 'engine.py'}")
    assert "compiled from other sources than diagnosis/view.py" in said[-1]
    assert which_runs("auto", cwd=copy, module=view) == f"interpreted {source}"


def test_an_unknown_choice_is_refused():
    assert "KVIZ_ANALYSIS_BUILD must be one of auto, compiled, interpreted" in which_runs("fast")
