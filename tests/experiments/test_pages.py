"""Results are data: the committed pages and the README's tables regenerate from the committed results alone."""

import json
import pathlib
import shutil

from experiments import report

ROOT = pathlib.Path(__file__).resolve().parents[2]
BEFORE = ROOT / "tests" / "fixtures" / "lg_cpu_before" / "per_length.json"


def test_committed_pages_and_readme_tables_regenerate_byte_identically(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    pages = report.publish(str(ROOT / report.RESULTS_ROOT), str(tmp_path / "pages"), str(readme))
    assert pages, "no committed results"
    for page in map(pathlib.Path, pages):
        committed = ROOT / report.PAGES_ROOT / page.relative_to(tmp_path / "pages")
        assert page.read_text() == committed.read_text(), f"{committed} is stale: run python -m experiments.report"
    assert readme.read_text() == (ROOT / "README.md").read_text(), "README tables are stale"


def test_cpu_preset_numbers_equal_those_before_the_study_layer_moved():
    # The before-file holds the cpu preset's per-length accuracies as the flat experiments/ harness computed
    # them (commit ac3c4ec); the committed run comes from the sweep library. They must agree to the digit.
    before = json.loads(BEFORE.read_text())["cells"]
    after = json.loads((ROOT / "results" / "length_generalization" / "cpu" / "results.json").read_text())["cells"]
    assert set(after) == set(before)
    for cell_id, entry in after.items():
        for key in ("accuracy_per_length", "train_accuracy", "ood_score"):
            assert entry["metrics"][key] == before[cell_id][key], (cell_id, key)


def test_committed_runs_match_the_code_so_a_rerun_trains_nothing():
    # Every committed cell's fingerprint is the one today's code computes for that preset: rerunning the
    # preset into its committed directory resumes every cell, and a change that alters a result shows here.
    import importlib

    from attnjax import sweep

    runs = sorted((ROOT / report.RESULTS_ROOT).glob("*/*/results.json"))
    assert {p.parent.parent.name for p in runs} == set(report.STUDIES)
    for path in runs:
        study, preset = path.parent.parent.name, path.parent.name
        committed = json.loads(path.read_text())
        config = importlib.import_module(f"experiments.{study}.config").get_config(preset)
        experiment = report.experiment_for(study)
        grid = sweep.plan(experiment, config).grid
        assert committed["complete"] and committed["num_cells"] == len(grid), path
        for cell in grid:
            assert committed["cells"][cell.id]["fingerprint"] == experiment.fingerprint(config, cell), (path, cell.id)
