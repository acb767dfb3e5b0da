"""The package's shape: an import graph without cycles (core at the bottom), and bench scripts on the public API."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "archivesrag"
BENCH = PKG.parent / "bench"


def _imports(path: Path) -> set[str]:
    "The archivesrag modules `path` imports anywhere (top level or inside a function)."
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1: found.add(mod.split(".")[0] if mod else "")
            elif mod.startswith("archivesrag."): found.add(mod.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("archivesrag.")}
    return found - {"", "_modidx"}


def import_graph() -> dict[str, set[str]]:
    mods = {p.stem for p in PKG.glob("*.py") if not p.stem.startswith("_")}  # _nbdev, _modidx: tooling, not the course
    return {m: _imports(PKG / f"{m}.py") & mods - {m} for m in mods}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    "One import cycle of `graph` as a list of modules, or None (depth-first search, three colours)."
    state, stack = {}, []
    def visit(m):
        state[m] = "open"; stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open": return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)): return cycle
        state[m] = "done"; stack.pop()
    for m in sorted(graph):
        if m not in state and (cycle := visit(m)): return cycle
    return None


@pytest.mark.fast
def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
    assert graph["core"] == set(), "core imports nothing from the package"
    def reaches_core(m, seen=()):
        return "core" in graph[m] or any(reaches_core(n, (*seen, m)) for n in graph[m] if n not in seen)
    assert all(reaches_core(m) for m in graph if m != "core"), {m for m in graph if m != "core" and not reaches_core(m)}


@pytest.mark.fast
def test_the_cycle_finder_finds_a_cycle():  # the check above must be able to fail
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
