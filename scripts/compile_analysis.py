"""Compile the analysis' per-packet path with mypyc into build/analysis/ (see
captures/analysis/build.py, which loads it only when it was built from the sources on disk).

    .venv/bin/python scripts/compile_analysis.py          # build, or say why it cannot
    .venv/bin/python scripts/compile_analysis.py --check  # exit 0 if the build is current

Needs a C compiler and Python's headers (Debian: gcc, python3-dev) and mypy in the venv
(requirements-dev.txt). Without them, or when mypyc refuses, it says why and exits 1; the
interpreted source, which gives the same output, then runs. The build goes to a temporary
directory and replaces build/analysis/ whole, so a failed build leaves the previous one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from captures.analysis import build  # noqa: E402  (the loader's own list and manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    options = parser.parse_args(argv)
    if options.check:
        reason = build.stale_reason()
        print(reason or f"compiled analysis is current ({build.BUILD_DIR})")
        return 1 if reason else 0
    missing = _missing_tools()
    if missing:
        print(f"compile_analysis: not compiled ({missing}); the interpreted analysis runs")
        return 1
    from mypyc.build import mypycify
    from setuptools import setup

    build.BUILD_DIR.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".analysis-", dir=build.BUILD_DIR.parent))
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)  # mypycify takes module paths relative to the project
        sources = [str(build.source_of(name).relative_to(ROOT)) for name in build.MODULES]
        # Type errors in the modules left interpreted (words, http, ...) do not stop the build;
        # mypyc counts mypy's notes as errors, and this one only says what it did not check.
        extensions = mypycify(["--follow-imports=silent",
                               "--disable-error-code=annotation-unchecked", *sources],
                              opt_level="3",
                              target_dir=str(work / "c"), verbose=False)
        setup(name="kviz-analysis", ext_modules=extensions, packages=[], py_modules=[],
              script_args=["-q", "build_ext", "--build-lib", str(work / "lib"),
                           "--build-temp", str(work / "tmp")])
        build.write_manifest(work / "lib")
        shutil.rmtree(build.BUILD_DIR, ignore_errors=True)
        os.rename(work / "lib", build.BUILD_DIR)
    except (SystemExit, Exception) as exc:  # mypyc's type errors end in SystemExit
        print(f"compile_analysis: mypyc failed ({exc}); the interpreted analysis runs")
        return 1
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
    print(f"compile_analysis: {len(build.MODULES)} modules compiled into {build.BUILD_DIR}")
    return 0


def _missing_tools() -> str | None:
    if shutil.which(sysconfig.get_config_var("CC").split()[0] or "cc") is None:
        return "no C compiler"
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not include.exists():
        return f"no Python headers ({include})"
    try:
        import mypyc  # noqa: F401
    except ImportError:
        return "mypy is not installed in this environment"
    return None


if __name__ == "__main__":
    sys.exit(main())
