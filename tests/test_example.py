"""The newcomer's script, ``examples/length_generalization.py``, runs end to end at a tiny size."""

import ast
import importlib.util
import pathlib

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "examples" / "length_generalization.py"


def load_script():
    spec = importlib.util.spec_from_file_location("length_generalization_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_prints_in_distribution_and_ood_accuracy(capsys):
    # --randomized also exercises the positions key that evaluation passes to the model.
    result = load_script().main(["--steps", "20", "--train-length", "4", "--test-length", "8",
                                 "--eval-examples", "8", "--randomized"])
    out = capsys.readouterr().out
    assert 0.0 <= result["in_distribution"] <= 1.0
    assert 0.0 <= result["ood"] <= 1.0
    assert sorted(result["accuracy_per_length"]) == list(range(1, 9))
    assert "in-distribution (1..4)" in out and "out-of-distribution (5..8)" in out


def test_example_imports_only_the_library():
    imported = set()
    for node in ast.walk(ast.parse(SCRIPT.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert "experiments" not in imported
    assert "attnjax" in imported
