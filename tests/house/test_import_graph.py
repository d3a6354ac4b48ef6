"""The layers import downward only: no import cycle among kviz's modules (imports inside
functions count too: a cycle worked around inside a function is still a knot), and the
analysis engine imports no Django, pyshark or kubernetes."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "captures").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{a.name}" for a in node.names} & known.keys()
            found |= submodules
            if len(submodules) < len(node.names):
                found.add(target)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {target for target in found if target in known and target != name} | {
        target for target in found if not target.startswith("captures")}


def test_no_import_cycles():
    known = modules()
    graph = {name: {t for t in imports(name, path, known) if t in known}
             for name, path in known.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_analysis_imports_no_framework():
    known = modules()
    for name, path in known.items():
        if name.startswith(("captures.analysis", "captures.render")):
            outside = {t.split(".")[0] for t in imports(name, path, known)}
            assert not outside & {"django", "pyshark", "kubernetes", "channels"}, name
