"""The length-generalization experiment end to end on the harness: CLI, overrides, files, typos, resume."""

import json
import os
import subprocess
import sys

import pytest

from attnjax import sweep
from experiments.length_generalization import run as lg
from experiments.length_generalization import config as lg_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--config.tasks=parity_check,stack_manipulation", "--config.num_seeds=2", "--config.num_steps=3",
        "--config.train_max_length=2", "--config.test_max_length=4", "--config.batch_size=4",
        "--config.eval_batch_size=4", "--config.eval_bucket=2", "--config.validate_every=2",
        "--config.val_batch_size=2", "--config.warmup_steps=1",
        "--config.lstm.hidden_size=4", "--config.transformer.d_model=8", "--config.transformer.mlp_dim=8",
        "--config.transformer.num_layers=1", "--config.transformer.num_heads=2",
        "--config.attentions=cosine", "--config.positionals=alibi", "--config.progress=off",
        "--config.attention_map_task=parity_check", "--config.workers=1"]


def _cli(tmp_path, *args):
    # Run from another cwd: the default config file must resolve relative to the module.
    return subprocess.run([sys.executable, "-m", "experiments.length_generalization", *args], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_tiny_grid_writes_results_and_resumes(tmp_path):
    workdir = tmp_path / "run"
    proc = _cli(tmp_path, f"--workdir={workdir}", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| regular | parity_check |" in proc.stdout and "| context_free | stack_manipulation |" in proc.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["complete"] and results["num_cells"] == 2 * 3 * 2  # tasks x (lstm + 2 variants) x seeds
    assert results["config"]["lstm"]["hidden_size"] == 4 and results["environment"]["git_commit"]
    runs = sweep.ok_runs(results)
    assert {r["variant"] for r in runs} == {"-", "cosine+alibi", "cosine+alibi+randomized"}
    for run in runs:
        assert sorted(map(int, run["accuracy_per_length"])) == [1, 2, 3, 4]
        acc = run["accuracy_per_length"]
        assert run["ood_score"] == pytest.approx((acc["3"] + acc["4"]) / 2)
        assert 0.0 <= run["train_accuracy"] <= 1.0
        # Train to fit: validated at steps 2 and 3 (the budget), and why it stopped.
        assert [step for step, _ in run["val_curve"]] == [2, 3][:len(run["val_curve"])]
        assert run["stop_reason"] in ("fit", "budget") and run["steps_trained"] == run["val_curve"][-1][0]
    summary = (workdir / "summary.md").read_text()
    assert "## Table 1" in summary and "| (a) parity_check: lstm |" in summary  # ours vs published
    assert "## Fit: steps to fit" in summary
    for name in ("accuracy_vs_length.png", "encoding_heatmap.png", "attention_maps.png"):
        assert (workdir / name).read_bytes()[:4] == b"\x89PNG"
    maps = [r for r in runs if "attention_maps" in r]
    assert {(r["task"], r["seed"]) for r in maps} == {("parity_check", 0)} and len(maps) == 2
    for r in maps:  # last-layer weights over the input + blank positions, rows summing to 1
        for length, size in (("2", 3), ("4", 5)):
            weights = r["attention_maps"][length]
            assert len(weights) == size and all(abs(sum(row) - 1) < 1e-3 for row in weights)
    logs = sorted(os.listdir(workdir / "logs"))
    assert len(logs) == 12
    steps = [json.loads(line)["step"] for line in (workdir / "logs" / logs[0]).read_text().splitlines()]
    assert steps in ([2], [2, 3])  # [2]: fit at once (a threshold twice in a row needs two checks, unless 3 fit)
    assert not [f for f in os.listdir(workdir) if f.endswith(".tmp")]
    # Same command again: every cell is done, nothing trains, the results are unchanged.
    again = _cli(tmp_path, f"--workdir={workdir}", *TINY)
    assert again.returncode == 0 and "12 already done, 0 to run" in again.stdout
    assert json.loads((workdir / "results.json").read_text())["cells"] == results["cells"]


@pytest.mark.slow
def test_cli_runs_cells_on_worker_processes(tmp_path):
    # The script's run_cell lives in __main__ under `python -m`: the spawned workers must find it there.
    workdir = tmp_path / "run"
    tiny = [arg for arg in TINY if not arg.startswith(("--config.tasks", "--config.workers"))]
    proc = _cli(tmp_path, f"--workdir={workdir}", *tiny, "--config.tasks=parity_check", "--config.models=lstm",
                "--config.workers=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 to run on 2 worker processes" in proc.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["complete"] and results["num_ok"] == 2
    assert all(0.0 <= run["ood_score"] <= 1.0 for run in sweep.ok_runs(results))


@pytest.mark.parametrize("override, message", [
    ("--config.tasks=parity_check,revers_string", "unknown task 'revers_string'; valid: binary_addition"),
    ("--config.attentions=cosin", "unknown attention 'cosin'; valid: additive"),
    ("--config.positionals=alibi,rotary", "unknown positional encoding 'rotary'"),
    ("--config.models=lstm,transformr", "model must be one of"),
    ("--config.only=task=parity", "unknown config.only value"),
    ("--config.transformer.num_heads=3", "divisible"),
])
def test_typo_fails_in_seconds_before_any_file(tmp_path, override, message):
    workdir = tmp_path / "run"
    proc = _cli(tmp_path, f"--workdir={workdir}", override)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not workdir.exists()


def test_presets_build_every_cell_config():
    for preset in lg_config.PRESETS:
        config = lg_config.get_config(preset)
        lg.validate(config)
        cells = lg.cells(config)
        assert len({c.id for c in cells}) == len(cells)
    grid = lg.cells(lg_config.get_config("cpu_grid"))
    assert len(grid) == 15 * (3 + 6 * 2 - 1) * 3  # nope has no randomized version
    paper = lg_config.get_config("paper")
    assert (paper.train_max_length, paper.test_max_length, paper.batch_size, paper.num_seeds) == (40, 500, 128, 10)
    assert paper.learning_rates.transformer == "1e-4,3e-4,5e-4"
    assert len(lg.cells(paper)) == 15 * (3 + 6 * 2 - 1) * 3 * 10
    similarity = lg.cells(lg_config.get_config("cpu_similarity"))
    assert len(similarity) == 3 * 6 * 5 * 3
    with pytest.raises(ValueError, match="preset"):
        lg_config.get_config("gpu")


def test_cell_fingerprint_follows_only_its_model():
    config = lg_config.get_config()
    lstm_cell, transformer_cell = lg.cells(config)[0], lg.cells(config)[3]
    assert (lstm_cell["model"], transformer_cell["model"]) == ("lstm", "transformer")
    before = (lg.EXPERIMENT.fingerprint(config, lstm_cell), lg.EXPERIMENT.fingerprint(config, transformer_cell))
    config.transformer.d_model = 32
    assert lg.EXPERIMENT.fingerprint(config, lstm_cell) == before[0]
    assert lg.EXPERIMENT.fingerprint(config, transformer_cell) != before[1]
    config.num_steps = 10
    assert lg.EXPERIMENT.fingerprint(config, lstm_cell) != before[0]



@pytest.mark.slow
def test_every_model_field_overrides_from_the_command_line(tmp_path):
    workdir = tmp_path / "run"
    tiny = [arg for arg in TINY if not arg.startswith(("--config.tasks", "--config.attentions", "--config.num_seeds"))]
    proc = _cli(tmp_path, f"--workdir={workdir}", *tiny, "--config.tasks=parity_check", "--config.models=transformer",
                "--config.num_seeds=1", "--config.randomized=false",
                "--config.transformer.attention.implementation=blockwise", "--config.transformer.attention.block_q=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["complete"] and results["config"]["transformer"]["attention"]["implementation"] == "blockwise"


@pytest.mark.parametrize("override", ["--config.transformer.num_layer=1",
                                      "--config.transformer.positional=rope"])  # set per cell by the variant
def test_a_field_the_model_block_lacks_fails_before_any_file(tmp_path, override):
    workdir = tmp_path / "run"
    proc = _cli(tmp_path, f"--workdir={workdir}", override)
    assert proc.returncode != 0 and override.split("=")[0].split(".")[-1] in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not workdir.exists()


def test_recipe_names_build_each_models_optimizer_and_enter_its_fingerprint():
    from attnjax.sweep.training import recipe
    from attnjax.train import Recipe, make_optimizer, make_recipe_optimizer

    config = lg_config.get_config()
    config.recipes.lstm = "adam+constant"
    lstm_cell, transformer_cell = lg.cells(config)[0], lg.cells(config)[3]
    assert (lstm_cell["recipe"], transformer_cell["recipe"]) == ("adam+constant", "adamw+warmup_cosine")
    # Adam at a constant rate is the very optimizer the study built before recipes; warmup and decay do not
    # apply to it.
    assert make_recipe_optimizer(recipe(config, lstm_cell["lr"], lstm_cell["recipe"]),
                                 config.num_steps) is make_optimizer(3e-3, 1.0)
    assert recipe(config, "1e-3", "adamw+warmup_cosine") == Recipe(
        optimizer="adamw", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=150, final_fraction=0.01,
        weight_decay=0.01)  # the cpu preset's warmup: 5% of its 3,000-step budget
    # Warmup is part of the warmup_cosine cell's recipe only: the constant-rate cell keeps its fingerprint.
    before = [lg.EXPERIMENT.fingerprint(config, c) for c in (lstm_cell, transformer_cell)]
    config.warmup_steps = 300
    assert lg.EXPERIMENT.fingerprint(config, lstm_cell) == before[0]
    assert lg.EXPERIMENT.fingerprint(config, transformer_cell) != before[1]
    config.warmup_steps = config.num_steps
    with pytest.raises(ValueError, match="warmup_steps"):
        lg.validate(config)
    config.warmup_steps, config.recipes.lstm = 150, "adam+cosine"
    with pytest.raises(ValueError, match="'adam\\+cosine'"):
        lg.validate(config)


def test_stopping_keys_are_checked_before_training():
    config = lg_config.get_config()
    config.stopping.threshold = 1.5
    with pytest.raises(ValueError, match="threshold"):
        lg.validate(config)
