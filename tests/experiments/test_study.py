"""``python -m experiments.study`` (:mod:`attnjax.sweep.studies` bound to the studies): validates everything first,
runs the studies in sequence, resumes, reports."""

import os

import pytest

from attnjax import sweep
from experiments import report, study
from experiments.length_generalization import config as lg_config
from experiments.mnist1d import config as mnist1d_config

TINY = {
    "length_generalization": lambda: _override(lg_config.get_config(), tasks="parity_check", models="lstm",
                                               num_seeds=1, num_steps=3, train_max_length=2, test_max_length=3,
                                               batch_size=8, eval_batch_size=8, eval_bucket=0, validate_every=3,
                                               val_batch_size=8, warmup_steps=1, progress="off"),
    "mnist1d": lambda: _override(mnist1d_config.get_config(), models="logistic", datasets="normal",
                                 train_sizes="100", num_seeds=1, num_steps=3, log_every=3, progress="off"),
}


def _override(config, **fields):
    for key, value in fields.items():
        config[key] = value
    return config


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(study, "default_config", lambda name: TINY[name]())


def test_runs_resumes_and_writes_one_report(tiny, tmp_path, capsys):
    args = ["--workdir", str(tmp_path), "--studies", "length_generalization,mnist1d"]
    assert study.main(args) == 0
    first = capsys.readouterr().out
    assert "study: 2 experiments, 2 cells, 2 to run" in first
    # 1 LG cell + 1 MNIST-1D cell, each at its committed cpu run's mean seconds per cell.
    expected = sum(sweep.seconds_per_cell(os.path.join("results", name, "cpu"))
                   for name in ("length_generalization", "mnist1d"))
    assert f"ETA {sweep.format_seconds(expected)} at the reference runs' speed" in first
    assert "=== study 2/2: mnist1d" in first
    combined = (tmp_path / "summary.md").read_text()
    assert "## length_generalization" in combined and "## mnist1d" in combined
    for name in ("length_generalization", "mnist1d"):
        assert (tmp_path / name / "results.json").exists() and (tmp_path / name / "summary.md").exists()
    assert study.main(args) == 0
    assert "2 cells, 0 to run" in capsys.readouterr().out


def test_eta_weighs_each_study_by_its_committed_run():
    # Seconds per cell come from the committed runs (results/<study>/<preset>/results.json), never a constant.
    planned = sweep.plan(report.experiment_for("length_generalization"), study.default_config("length_generalization"))
    assert sweep.studies.reference_dir(planned) == os.path.join("results", "length_generalization", "cpu")
    committed = sweep.seconds_per_cell(sweep.studies.reference_dir(planned))
    assert committed is not None and committed > 0


def test_report_only_does_not_train(tiny, tmp_path, capsys):
    assert study.main(["--workdir", str(tmp_path), "--studies", "mnist1d", "--report_only"]) == 0
    assert not os.path.exists(tmp_path / "mnist1d" / "results.json")
    assert "0 of 1 experiments" in capsys.readouterr().out


def test_bad_study_name_fails_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        study.main(["--workdir", str(tmp_path / "w"), "--studies", "length_generalisation"])
    assert "length_generalisation" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "w")


def test_bad_config_fails_before_the_first_study_trains(monkeypatch, tmp_path, capsys):
    configs = {"length_generalization": TINY["length_generalization"],
               "mnist1d": lambda: _override(TINY["mnist1d"](), models="cnnn")}
    monkeypatch.setattr(study, "default_config", lambda name: configs[name]())
    with pytest.raises(SystemExit):
        study.main(["--workdir", str(tmp_path), "--studies", "length_generalization,mnist1d"])
    assert "cnnn" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "length_generalization")
