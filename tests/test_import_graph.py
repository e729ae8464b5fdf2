"""The import graph of featbench's own modules: one direction, no cycles, nothing hidden.

Layers (an arrow is "may import"): core <- datasets <- features <- bench -> reports, and reports
read run folders and records only: they import core modules and ``featbench.datasets.info`` (the
dataset facts that records carry), never the runner, the cache or the extractors. Core modules
(errors, registry, options, atomic, and the run-folder formats: records, features_sample) import
no other featbench module but core ones. Every ``import`` is
parsed, including those inside functions, so a function-local import cannot hide a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"bench": "featbench", "features": "featbench.features", "datasets": "featbench.datasets",
            "reports": "featbench.reports", "suites": "featbench.suites"}
CORE = {"featbench", "featbench.errors", "featbench.registry", "featbench.options", "featbench.records",
        "featbench.features_sample", "featbench.atomic"}
#: what each layer may import besides itself and the core
ALLOWED = {
    "core": set(),
    "datasets": set(),
    "features": {"datasets"},
    "reports": {"featbench.datasets.info"},
    "bench": {"datasets", "features", "reports"},
}


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).glob("*.py")):
            out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return out


def layer(module: str) -> str:
    if module in CORE:
        return "core"
    for name in ("datasets", "features", "reports"):
        if module == f"featbench.{name}" or module.startswith(f"featbench.{name}."):
            return name
    return "bench"


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """featbench modules ``module`` imports anywhere in its source (``from pkg import mod`` counts as mod)."""
    tree = ast.parse(path.read_text())
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:  # annotations only: never executed
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    found.discard(module)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def test_every_module_is_seen(graph):
    assert {"featbench.runner", "featbench.features.base", "featbench.datasets.info", "featbench.reports.sections",
            "featbench.registry", "featbench.records"} <= set(graph)
    assert "featbench.datasets.folder" in graph["featbench.datasets.readers"]  # relative imports resolve


def test_layers_point_one_way(graph):
    wrong = []
    for mod, deps in graph.items():
        own = layer(mod)
        for dep in deps:
            target = layer(dep)
            if target in ("core", own) or target in ALLOWED[own] or dep in ALLOWED[own]:
                continue
            wrong.append(f"{mod} ({own}) imports {dep} ({target})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles(graph):
    """No cycle among modules; a package's own ``__init__`` is not an edge (importing a package to
    run its registrations, as the extractor registry's lazy loader does, is not a dependency)."""
    edges = {m: {d for d in deps if not (m.startswith(d + ".") and d in PACKAGES.values())} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)
