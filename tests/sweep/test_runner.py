"""The sweep runner on a cheap experiment: resume, failed cells, selection, validation, merging, planning once."""

import dataclasses
import json
import os

import ml_collections
import pytest

from attnjax import sweep


def _config(**overrides):
    c = ml_collections.ConfigDict(dict(tasks="a,b,c", num_seeds=2, scale=1.0, only="", progress="off"))
    c.update(overrides)
    return c


def _experiment(calls, fail_on=(), interrupt_after=None):
    def cells(config):
        return sweep.grid(task=sweep.names(config.tasks), seed=range(config.num_seeds))

    def validate(config):
        sweep.check_names("task", sweep.names(config.tasks), ["a", "b", "c"])

    def run_cell(cell, config, context):
        if interrupt_after is not None and len(calls) == interrupt_after:
            raise KeyboardInterrupt  # as if the machine stopped mid-grid
        calls.append(cell.id)
        if cell.id in fail_on:
            raise RuntimeError(f"boom in {cell.id}")
        with open(context.log_path(cell), "w") as f:
            f.write("{}\n")
        return {"value": float(cell.rng("data", ("task", "seed")).random() * config.scale)}

    return sweep.Experiment("toy", cells, run_cell, validate=validate, sweep_keys=("tasks", "num_seeds"),
                              describe=lambda m: f"value {m['value']:.3f}")


def _run(experiment, config, workdir):
    return sweep.run(sweep.plan(experiment, config), workdir)


def _values(results):
    return {cid: e["metrics"]["value"] for cid, e in results["cells"].items()}


def test_interrupted_sweep_resumes_and_matches_uninterrupted(tmp_path):
    calls = []
    full = _run(_experiment(calls), _config(), str(tmp_path / "full"))
    assert full["complete"] and full["num_ok"] == 6 and len(calls) == 6
    calls = []
    with pytest.raises(KeyboardInterrupt):
        _run(_experiment(calls, interrupt_after=2), _config(), str(tmp_path / "cut"))
    partial = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert list(partial["cells"]) == ["task=a/seed=0", "task=a/seed=1"] and not partial["complete"]
    calls = []
    resumed = _run(_experiment(calls), _config(), str(tmp_path / "cut"))
    assert calls == ["task=b/seed=0", "task=b/seed=1", "task=c/seed=0", "task=c/seed=1"]
    assert resumed["complete"] and _values(resumed) == _values(full)
    assert list(resumed["cells"]) == list(full["cells"])  # grid order in the file
    assert resumed["wall_seconds"] >= partial["wall_seconds"] >= 0  # summed over the two runs
    calls = []
    again = _run(_experiment(calls), _config(), str(tmp_path / "cut"))
    assert calls == [] and again["wall_seconds"] == resumed["wall_seconds"]  # nothing left to do, nothing added


def test_failed_cell_is_recorded_rest_completes_and_retried(tmp_path):
    calls = []
    results = _run(_experiment(calls, fail_on={"task=b/seed=0"}), _config(), str(tmp_path))
    assert results["num_failed"] == 1 and results["num_ok"] == 5 and not results["complete"]
    failed = results["cells"]["task=b/seed=0"]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom in task=b/seed=0"
    assert any("run_cell" in line for line in failed["traceback"])
    assert sweep.ok_runs(results)[0] == {"task": "a", "seed": 0, "value": results["cells"]["task=a/seed=0"][
        "metrics"]["value"]}
    calls = []
    results = _run(_experiment(calls), _config(), str(tmp_path))
    assert calls == ["task=b/seed=0"] and results["complete"]


def test_config_change_reruns_but_new_seed_only_adds(tmp_path):
    calls = []
    _run(_experiment(calls), _config(num_seeds=1), str(tmp_path))
    calls = []
    _run(_experiment(calls), _config(num_seeds=2), str(tmp_path))
    assert calls == ["task=a/seed=1", "task=b/seed=1", "task=c/seed=1"]
    calls = []
    results = _run(_experiment(calls), _config(num_seeds=2, scale=2.0), str(tmp_path))
    assert len(calls) == 6 and results["complete"]
    calls = []
    results = _run(_experiment(calls), _config(tasks="a", num_seeds=2, scale=2.0), str(tmp_path))
    assert calls == [] and list(results["cells"]) == ["task=a/seed=0", "task=a/seed=1"]  # b, c left the grid


def test_only_selects_part_and_rngs_do_not_depend_on_order(tmp_path):
    calls = []
    full = _run(_experiment(calls), _config(), str(tmp_path / "full"))
    calls = []
    part = _run(_experiment(calls), _config(only="task=c|a, seed=1"), str(tmp_path / "part"))
    assert calls == ["task=a/seed=1", "task=c/seed=1"] and not part["complete"]
    assert all(full["cells"][cid]["metrics"] == e["metrics"] for cid, e in part["cells"].items())
    shards = []
    for i in range(2):
        calls = []
        _run(_experiment(calls), _config(only=f"shard={i}/2"), str(tmp_path / f"shard{i}"))
        shards.append(calls)
    assert shards == [["task=a/seed=0", "task=b/seed=0", "task=c/seed=0"],
                      ["task=a/seed=1", "task=b/seed=1", "task=c/seed=1"]]
    merged = sweep.merge_results(str(tmp_path / "merged"), [str(tmp_path / "shard0"), str(tmp_path / "shard1")])
    assert merged["complete"] and _values(merged) == _values(full)


@pytest.mark.parametrize("only, message", [
    ("model=lstm", "field 'model' is not a grid field"),
    ("task=d", "unknown config.only value"),
    ("task", "must look like field=value"),
    ("shard=2/2", "shard must be i/n"),
])
def test_bad_selection_fails_before_anything_is_written(tmp_path, only, message):
    with pytest.raises(ValueError, match=message):
        _run(_experiment([]), _config(only=only), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_typo_fails_before_anything_is_written(tmp_path):
    calls = []
    with pytest.raises(ValueError, match=r"unknown task 'd'; valid: a, b, c"):
        _run(_experiment(calls), _config(tasks="a,d"), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="progress"):
        _run(_experiment(calls), _config(progress="sometimes"), str(tmp_path / "w"))
    assert calls == [] and not (tmp_path / "w").exists()


def test_workdir_of_another_experiment_is_refused(tmp_path):
    _run(_experiment([]), _config(tasks="a", num_seeds=1), str(tmp_path))
    other = sweep.Experiment("other", lambda c: sweep.grid(task=["a"]), lambda cell, c, ctx: {})
    with pytest.raises(ValueError, match="holds results of experiment 'toy'"):
        _run(other, _config(), str(tmp_path))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_cell_rng_streams():
    a, b = sweep.grid(task=["x"], model=["m1", "m2"], seed=[0])
    assert a.rng("data", ("task", "seed")).random() == b.rng("data", ("task", "seed")).random()  # paired data
    assert a.rng("data").random() != b.rng("data").random()
    assert a.rng("data").random() != a.rng("eval").random()
    assert a.id == "task=x/model=m1/seed=0" and a["model"] == "m1"
    with pytest.raises(KeyError, match="no field 'lr'"):
        a["lr"]


def test_grid_axes_may_depend_on_earlier_fields():
    lrs = {"lstm": ["1e-3"], "transformer": ["3e-4", "1e-3"]}
    cells = sweep.grid(model=["lstm", "transformer"], lr=lambda f: lrs[f["model"]], seed=range(2))
    assert [c.id for c in cells] == [
        "model=lstm/lr=1e-3/seed=0", "model=lstm/lr=1e-3/seed=1", "model=transformer/lr=3e-4/seed=0",
        "model=transformer/lr=3e-4/seed=1", "model=transformer/lr=1e-3/seed=0", "model=transformer/lr=1e-3/seed=1"]


def test_harness_keys_are_declared_once_and_checked_once():
    config = sweep.with_harness_keys(ml_collections.ConfigDict({"tasks": "a"}), workers=2)
    assert config.workers == 2 and config.only == "" and config.checkpoint_every == 0
    with pytest.raises(ValueError, match="unknown harness key.*'worker'"):
        sweep.with_harness_keys(ml_collections.ConfigDict(), worker=2)


def test_a_command_validates_once(tmp_path, capsys):
    from attnjax.sweep.cli import main

    calls, validated = [], []
    experiment = dataclasses.replace(_experiment(calls), validate=lambda c: validated.append(c.tasks))
    main(experiment, ["prog"], _config(), str(tmp_path))
    assert validated == ["a,b,c"] and len(calls) == 6
    assert "6/6 cells ok" in capsys.readouterr().out


def test_experiment_modules_import_together():
    # Flags are defined only when a script runs as a program, so modules can share a process.
    import importlib

    for name in ("experiments.length_generalization.run", "experiments.bench.attention", "experiments.bench.models"):
        importlib.import_module(name)


def test_recipe_keys_are_declared_once():
    from attnjax.sweep.training import RECIPE_DEFAULTS

    config = sweep.with_recipe_keys(ml_collections.ConfigDict(), schedule="warmup_cosine")
    assert config.schedule == "warmup_cosine" and config.optimizer == RECIPE_DEFAULTS["optimizer"]
    with pytest.raises(ValueError, match=r"unknown recipe key\(s\) \['lr'\]; valid: optimizer, schedule"):
        sweep.with_recipe_keys(ml_collections.ConfigDict(), lr=1e-3)
