"""Dependencies run one way: ops -> parallel -> nn -> train -> experiments (function-level imports included)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ("attnjax.ops", "attnjax.parallel", "attnjax.nn", "attnjax.train", "experiments")


def _imported_modules(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_no_layer_imports_a_later_one(layer):
    later = LAYERS[LAYERS.index(layer) + 1:]
    folder = ROOT.joinpath(*layer.split("."))
    files = sorted(folder.rglob("*.py"))
    assert files, folder
    offending = [f"{path.relative_to(ROOT)} imports {module}" for path in files
                 for module in sorted(_imported_modules(path))
                 if any(module == m or module.startswith(m + ".") for m in later)]
    assert not offending, "\n".join(offending)
