"""Dependencies run one way: ops -> parallel -> nn -> train -> sweep -> experiments (function-level imports too)."""

from __future__ import annotations

import pathlib

import pytest

from tests.ops.test_structure import _imports

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ("attnjax.ops", "attnjax.parallel", "attnjax.nn", "attnjax.train", "attnjax.sweep", "experiments")


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_no_layer_imports_a_later_one(layer):
    later = LAYERS[LAYERS.index(layer) + 1:]
    folder = ROOT.joinpath(*layer.split("."))
    files = sorted(folder.rglob("*.py"))
    assert files, folder
    offending = [f"{path.relative_to(ROOT)} imports {module}" for path in files
                 for module in sorted(_imports(path))
                 if any(module == m or module.startswith(m + ".") for m in later)]
    assert not offending, "\n".join(offending)
