"""Imports run one way: workload -> manager -> receipts -> sinks -> CLI.

Read from the source (the AST of every module of ``src/kvreceipts``), so that an import inside
a function or under ``TYPE_CHECKING`` counts as much as one at the top: nothing below
``commands/`` imports from ``commands/`` or ``cli``, and no modules import each other in a
circle. A submodule naming its own package (``kvreceipts.verify.runs`` typing against
``kvreceipts.verify``) is not a circle between layers and is let through.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
TOP = ("kvreceipts.commands", "kvreceipts.cli", "kvreceipts.__main__")


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "kvreceipts").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every kvreceipts module ``path`` imports, wherever the import statement is."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("kvreceipts")}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import (the house writes them absolute)")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kvreceipts"):
            module = node.module or ""
            for alias in node.names:
                full = f"{module}.{alias.name}"
                out.add(full if full in MODULES else module)
    return out


def _is_top(name: str) -> bool:
    return any(name == top or name.startswith(top + ".") for top in TOP)


GRAPH = {
    name: {m for m in _imports(path) if m in MODULES and m != name and not name.startswith(m + ".")}
    for name, path in MODULES.items()
}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_the_modules_and_their_imports() -> None:
    assert {"kvreceipts.cli", "kvreceipts.commands.output", "kvreceipts.schema"} <= set(MODULES)
    assert "kvreceipts.units" in GRAPH["kvreceipts.commands.output"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_below_commands_imports_from_commands_or_the_cli() -> None:
    upward = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if not _is_top(name)
        for target in targets
        if _is_top(target)
    )
    assert upward == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert _cycles(GRAPH) == []


def test_the_leaves_import_nothing_of_kvreceipts() -> None:
    for leaf in ("kvreceipts.units", "kvreceipts.fields", "kvreceipts.errors"):
        assert GRAPH[leaf] <= {"kvreceipts.errors"} - {leaf}, leaf  # the errors leaf is low too
