"""Several planned studies in sequence: each resumes in its own folder; the ETA weighs cells by reference runs."""

import ml_collections
import pytest

from attnjax import sweep


def _experiment(name, calls, fail_on=()):
    def run_cell(cell, config, context):
        calls.append((name, cell.id))
        if cell.id in fail_on:
            raise RuntimeError(f"boom in {cell.id}")
        return {"value": float(cell["seed"])}

    cells = lambda config: sweep.grid(seed=range(config.num_seeds))  # noqa: E731
    report = lambda results, workdir: f"# {name}: {results['num_ok']} ok\n"  # noqa: E731
    return sweep.Experiment(name, cells, run_cell, validate=lambda config: None, report=report)


def _plan(name, calls, num_seeds=2, **kwargs):
    config = ml_collections.ConfigDict(dict(num_seeds=num_seeds, only="", progress="off"))
    return sweep.plan(_experiment(name, calls, **kwargs), config)


def test_eta_scales_the_reference_seconds_left_by_this_machines_speed():
    # 100 reference seconds ran in 200: the 50 reference seconds left take 100.
    assert sweep.studies.eta_seconds(200.0, 100.0, 50.0) == 100.0
    assert sweep.studies.eta_seconds(0.0, 0.0, 50.0) == 50.0  # nothing ran yet: the reference itself


def test_seconds_per_cell_reads_a_run_and_is_none_without_one(tmp_path):
    assert sweep.seconds_per_cell(str(tmp_path / "none")) is None
    sweep.run(_plan("a", []), str(tmp_path / "ref"))
    assert sweep.seconds_per_cell(str(tmp_path / "ref")) >= 0


def test_runs_each_study_in_its_folder_counts_failures_and_resumes(tmp_path, capsys):
    calls = []
    sweep.run(_plan("a", []), str(tmp_path / "ref_a"))
    plans = [_plan("a", calls), _plan("b", calls, num_seeds=3, fail_on={"seed=1"})]
    refs = [str(tmp_path / "ref_a"), str(tmp_path / "no_reference")]  # b counts at a's speed
    assert sweep.run_studies(plans, str(tmp_path / "w"), refs) == 1
    out = capsys.readouterr().out
    assert "study: 2 experiments, 5 cells, 5 to run" in out and "=== study 2/2: b" in out
    assert calls == [("a", "seed=0"), ("a", "seed=1"), ("b", "seed=0"), ("b", "seed=1"), ("b", "seed=2")]
    assert [sweep.done_cells(str(tmp_path / "w" / n)) for n in ("a", "b")] == [2, 2]
    calls.clear()
    plans = [_plan("a", calls), _plan("b", calls, num_seeds=3)]
    assert sweep.run_studies(plans, str(tmp_path / "w"), refs) == 0
    assert "5 cells, 1 to run" in capsys.readouterr().out and calls == [("b", "seed=1")]


def test_command_line_plans_all_first_runs_and_joins_the_reports(tmp_path, capsys):
    calls = []
    experiments = {"a": _experiment("a", calls), "b": _experiment("b", calls)}
    config = lambda name: ml_collections.ConfigDict(dict(num_seeds=1, only="", progress="off"))  # noqa: E731
    main = lambda *argv: sweep.studies.main(experiments.__getitem__, config, ("a", "b"), argv)  # noqa: E731
    with pytest.raises(SystemExit):
        main("--workdir", str(tmp_path), "--studies", "a,c")
    assert "unknown study 'c'" in capsys.readouterr().err and not calls
    assert main("--workdir", str(tmp_path), "--studies", "b", "--report_only") == 0 and not calls
    assert "(0 of 1 experiments)" in capsys.readouterr().out
    assert main("--workdir", str(tmp_path)) == 0 and calls == [("a", "seed=0"), ("b", "seed=0")]
    summary = (tmp_path / "summary.md").read_text()
    assert "## a" in summary and "# a: 1 ok" in summary and "## b" in summary
