"""The shape of ``attnjax/ops``: no import cycle (function-level imports included) and no Flax."""

from __future__ import annotations

import ast
import pathlib

OPS = pathlib.Path(__file__).resolve().parents[2] / "attnjax" / "ops"


def _imports(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (``from attnjax.ops import x`` counts as
    ``attnjax.ops.x`` when ``x`` is a module of the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {f"attnjax.ops.{p.stem}": p for p in OPS.glob("*.py") if p.stem != "__init__"}
    return {name: {m for m in _imports(path) if m in modules} for name, path in modules.items()}


def test_ops_modules_import_each_other_without_a_cycle():
    graph, state = _graph(), {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join(stack + [node, nxt])}"
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_the_leaf_modules_import_nothing_of_attnjax_but_checks():
    graph = _graph()
    for leaf in ("primitives", "checks"):
        assert graph[f"attnjax.ops.{leaf}"] == set(), graph[f"attnjax.ops.{leaf}"]
    assert graph["attnjax.ops.visibility"] <= {"attnjax.ops.checks"}


def test_ops_never_imports_flax():
    for path in OPS.glob("*.py"):
        assert not any(m == "flax" or m.startswith("flax.") for m in _imports(path)), path.name
