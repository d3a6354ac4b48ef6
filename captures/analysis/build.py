"""Which build of the analysis runs: compiled or interpreted, with the same output.

scripts/compile_analysis.py compiles the modules of the per-packet path and the diagnosis
(MODULES) with mypyc into build/analysis/ and writes a manifest of the sources it compiled.
`activate` puts that build in front of this package's own modules only while every compiled
module's source is byte for byte the one on disk, for this Python: an edited file, a checkout
of another commit or another interpreter falls back to the interpreted source, which gives the
same output (the test suite runs against both). KVIZ_ANALYSIS_BUILD chooses: `auto` (the
default), `compiled` (fail unless the compiled build can run) or `interpreted`.

This module is never compiled itself, and imports nothing of the analysis.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent
BUILD_DIR = PACKAGE.parent.parent / "build" / "analysis"
MANIFEST = "kviz-analysis-manifest.json"
# The per-packet path, and the diagnosis (the largest part of the serial end of a large
# capture's analysis, after the last packet: one core idles meanwhile). Not compiled: what
# tests replace parts of at run time (http's HTTP/2 decoder) and what runs once per capture
# and costs little. A subpackage is compiled whole, its __init__ too: the package is found
# where its __init__ is, and its modules beside it.
MODULES = ("records", "pcapfile", "packets", "hops", "model", "dns", "reassembly", "tls",
           "icmp", "mesh", "identity", "pathorder", "http1", "tcp", "engine", "wire",
           "diagnosis", "diagnosis.connections", "diagnosis.coverage", "diagnosis.handshakes",
           "diagnosis.lookups", "diagnosis.loss", "diagnosis.paths", "diagnosis.places",
           "diagnosis.servers", "diagnosis.view")
CHOICES = ("auto", "compiled", "interpreted")


class BuildError(RuntimeError):
    pass


def source_of(module: str) -> Path:
    """"dns" -> dns.py, "diagnosis" -> diagnosis/__init__.py, "diagnosis.view" -> its view.py."""
    path = PACKAGE.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _digests() -> dict[str, str]:
    return {name: hashlib.sha256(source_of(name).read_bytes()).hexdigest() for name in MODULES}


def _interpreter() -> str:
    return f"{sys.implementation.cache_tag}-{sys.platform}-{os.uname().machine}"


def write_manifest(directory: Path) -> None:
    (directory / MANIFEST).write_text(json.dumps(
        {"interpreter": _interpreter(), "sources": _digests()}, indent=1))


def stale_reason() -> str | None:
    """Why the compiled build cannot run here, or None when it can."""
    try:
        manifest = json.loads((BUILD_DIR / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no compiled analysis in {BUILD_DIR} (scripts/compile_analysis.py builds it)"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest in {BUILD_DIR}: {exc}"
    if manifest.get("interpreter") != _interpreter():
        return f"compiled for {manifest.get('interpreter')}, this is {_interpreter()}"
    changed = sorted(name for name, digest in _digests().items()
                     if manifest.get("sources", {}).get(name) != digest)
    if changed:
        files = ", ".join(str(source_of(name).relative_to(PACKAGE)) for name in changed)
        return f"compiled from other sources than {files}"
    return None


def activate(package_path: list[str]) -> str:
    """Put the compiled build first on the package's path when it may run; say which runs."""
    choice = os.environ.get("KVIZ_ANALYSIS_BUILD", "auto") or "auto"
    if choice not in CHOICES:
        raise BuildError(f"KVIZ_ANALYSIS_BUILD must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "interpreted":
        return "interpreted"
    reason = stale_reason()
    if reason is not None:
        if choice == "compiled":
            raise BuildError(f"KVIZ_ANALYSIS_BUILD=compiled, but {reason}")
        if (BUILD_DIR / MANIFEST).exists():  # built once, and out of date since: worth a word
            log.warning("the compiled analysis is not used: %s; the interpreted source runs "
                        "(scripts/compile_analysis.py builds it again)", reason)
        return "interpreted"
    package_path.insert(0, str(BUILD_DIR / "captures" / "analysis"))
    if str(BUILD_DIR) not in sys.path:
        sys.path.append(str(BUILD_DIR))  # mypyc's shared library of the compiled modules
    return "compiled"
