"""The layers hold: `lint-imports` keeps the contracts in pyproject's [tool.importlinter], and no import
cycle joins two modules, nor two folders taken as single units (docs/architecture.md draws the layers).

Imports inside functions count: a lazy import is still a dependency, only a later one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("avatar_assets", "resources", "sensors", "partitions")


def test_import_contracts_are_kept() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def unit(module: str) -> str:
    """A folder or top-level module taken as one unit: `avatar_assets.ops`, `avatar_assets.cli`, `sensors`."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "avatar_assets" and len(parts) > 1 else parts[0]


def module_edges() -> dict[str, set[str]]:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    return {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}


def test_no_module_imports_itself_back() -> None:
    assert cycles(module_edges()) == []


def test_no_folder_imports_itself_back() -> None:
    units: dict[str, set[str]] = {}
    for module, imported in module_edges().items():
        units.setdefault(unit(module), set()).update(unit(other) for other in imported if unit(other) != unit(module))
    assert cycles(units) == []


def test_cycles_are_found() -> None:
    """The detector itself: a two-module loop and a three-module loop are reported, a chain is not."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
