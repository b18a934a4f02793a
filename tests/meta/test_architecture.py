"""The shape docs/development.md "Layout" describes, checked: values flow down, the package import graph has no cycle.

A package is `reconciler.<name>` (a top-level module such as `reconciler.outcome` counts as one); every
`import` and `from ... import` in its modules counts, at module level or inside a function, type-only ones
included: a cycle through any of them is one loop to read and to change.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def import_graph() -> dict[str, dict[str, list[str]]]:
    """package -> package it imports -> where (module:line)."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("reconciler.") and _unit(name) != _unit(module):
                    graph[_unit(module)][_unit(name)].append(f"{module}:{node.lineno}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    loops = cycles(graph)
    detail = [
        f"{a} -> {b} ({', '.join(graph[a][b][:3])})" for loop in loops for a in loop for b in graph[a] if b in loop
    ]
    assert not loops, f"import cycles {loops}:\n" + "\n".join(detail)


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b": ["a:1"]}, "b": {"c": ["b:1"]}, "c": {"a": ["c:1"]}, "d": {"a": ["d:1"]}}
    assert cycles(graph) == [["a", "b", "c"]]  # type: ignore[arg-type]
    assert import_graph()["reconciler.engine"]["reconciler.spec"]  # the graph is read from the real code


def test_the_spec_layer_imports_nothing_above_it() -> None:
    """specs -> desired: spec (and what it uses to check components) never reaches the engine, status or tuning."""
    graph = import_graph()
    for low in ("reconciler.spec", "reconciler.components"):
        above = set(graph.get(low, {})) & {
            "reconciler.engine",
            "reconciler.status",
            "reconciler.tuning",
            "reconciler.transport",
            "reconciler.apply",
            "reconciler.observe",
        }
        assert not above, f"{low} imports {sorted(above)}"


def test_no_test_imports_another_test_module() -> None:
    """What tests share lives once in tests/support (and bench imports it from there); a test module is imported
    by nothing but pytest, and no test imports a benchmark."""
    import ast

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [*(root / "tests").rglob("*.py"), *(root / "bench").rglob("*.py")]:
        if any(part.startswith(".venv") for part in path.relative_to(root).parts):
            continue  # bench/.venv-* (the peer tools' virtualenvs): not ours
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                benchmark = module.startswith("bench") and path.is_relative_to(root / "tests")
                if module.split(".")[-1].startswith("test_") or module.lstrip(".") == "conftest" or benchmark:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}: from {module} import ...")
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{path.relative_to(root)}:{node.lineno}: import {a.name}"
                    for a in node.names
                    if a.name.split(".")[-1].startswith("test_")
                ]
    assert not offenders, "\n".join(offenders)
