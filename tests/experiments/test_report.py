"""``python -m experiments.report`` rebuilds every summary and plot from results.json fixtures alone."""

import os
import re
import shutil

import pytest

from experiments import report

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "runs")
FIXTURE_NAMES = sorted(os.listdir(FIXTURES))


@pytest.fixture
def run_dirs(tmp_path):
    """Copies of the fixture runs: results.json only, no summary or plot."""
    dirs = []
    for name in FIXTURE_NAMES:
        shutil.copytree(os.path.join(FIXTURES, name), tmp_path / "runs" / name)
        dirs.append(str(tmp_path / "runs" / name))
    return dirs


def test_fixtures_hold_only_results(run_dirs):
    assert FIXTURE_NAMES, "no fixture runs"
    for d in run_dirs:
        assert os.listdir(d) == ["results.json"]


def test_rebuilds_every_summary_and_a_combined_one(run_dirs, tmp_path, capsys):
    out = tmp_path / "combined" / "summary.md"
    assert report.main([*run_dirs, "--out", str(out)]) == 0
    combined = out.read_text()
    for d in run_dirs:
        name = os.path.basename(d)
        summary = open(os.path.join(d, "summary.md"), encoding="utf-8").read()
        pngs = [f for f in os.listdir(d) if f.endswith(".png")]
        assert pngs, f"{name}: no plot rebuilt"
        assert f"## {name}" in combined
        # Every table row of the per-study summary is carried over unchanged.
        rows = [line for line in summary.splitlines() if line.startswith("|")]
        assert rows and all(row in combined for row in rows)
    # Every image the combined summary shows exists, relative to the combined file.
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", combined)
    assert len(images) >= len(run_dirs)
    for target in images:
        assert os.path.exists(os.path.join(out.parent, target)), target
    assert "combined summary" in capsys.readouterr().out


def test_rebuild_is_deterministic(run_dirs):
    first = report.rebuild(run_dirs[0])
    assert report.rebuild(run_dirs[0]) == first


def test_missing_results_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        report.main([str(tmp_path)])
    assert err.value.code == 2
    assert "no results.json" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["no_such_study", "../evil", "bench"])
def test_unknown_experiment_is_refused(name):
    with pytest.raises(ValueError, match=f"names experiment {re.escape(repr(name))}, which is not a study; studies: "):
        report.experiment_for(name)


def test_every_study_has_a_reporting_experiment():
    for name in report.STUDIES:
        experiment = report.experiment_for(name)
        assert experiment.name == name and experiment.report is not None
