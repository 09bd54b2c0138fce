"""The length-generalization experiment end to end (CLI, overrides, files) and its report helpers."""

import json
import os
import subprocess
import sys

import pytest

from experiments import length_generalization_report as report
from experiments.configs import length_generalization as lg_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_cli_tiny_config_writes_parsable_results(tmp_path):
    workdir = tmp_path / "run"
    overrides = ["--config.tasks=parity_check,duplicate_string", "--config.num_seeds=2", "--config.num_steps=3",
                 "--config.train_max_length=2", "--config.test_max_length=4", "--config.batch_size=4",
                 "--config.eval_batch_size=4", "--config.eval_bucket=2", "--config.log_every=2",
                 "--config.lstm.hidden_size=4", "--config.transformer.d_model=8", "--config.transformer.mlp_dim=8",
                 "--config.transformer.num_layers=1", "--config.transformer.num_heads=2",
                 "--config.attention=cosine", "--config.positional=alibi"]
    # Run from another cwd: the default config file must resolve relative to the module.
    proc = subprocess.run([sys.executable, "-m", "experiments.length_generalization", f"--workdir={workdir}",
                           *overrides], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| parity_check |" in proc.stdout and "| duplicate_string |" in proc.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["complete"] and results["config"]["num_steps"] == 3
    assert results["config"]["lstm"]["hidden_size"] == 4
    assert (results["config"]["transformer"]["attention"], results["config"]["transformer"]["positional"]) == (
        "cosine", "alibi")
    assert results["environment"]["jax"] and results["environment"]["devices"]
    assert len(results["runs"]) == 2 * 2 * 2
    for run in results["runs"]:
        assert sorted(map(int, run["accuracy_per_length"])) == [1, 2, 3, 4]
        assert run["ood_score"] == pytest.approx((run["accuracy_per_length"]["3"] + run["accuracy_per_length"]["4"]) / 2)
        assert 0.0 <= run["train_accuracy"] <= 1.0
    summary = (workdir / "summary.md").read_text()
    assert "| task | lstm | transformer |" in summary
    assert (workdir / "accuracy_vs_length.png").read_bytes()[:4] == b"\x89PNG"
    logs = sorted(os.listdir(workdir / "logs"))
    assert len(logs) == 8
    lines = (workdir / "logs" / logs[0]).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 3]
    assert not [f for f in os.listdir(workdir) if f.endswith(".tmp")]


def _run(task, model, seed, ood, train_acc=1.0):
    return {"task": task, "model": model, "seed": seed, "ood_score": ood, "train_accuracy": train_acc,
            "accuracy_per_length": {"1": train_acc, "2": ood}}


def test_markdown_table_mean_std_best():
    runs = [_run("parity_check", "lstm", 0, 1.0), _run("parity_check", "lstm", 1, 0.8),
            _run("parity_check", "transformer", 0, 0.5)]
    table = report.markdown_table(runs)
    assert table.splitlines()[0] == "| task | lstm | transformer |"
    assert "| parity_check | 90.0 ± 14.1 (best 100.0) | 50.0 ± 0.0 (best 50.0) |" in table


def test_summary_and_figure_from_results():
    results = {"config": dict(train_max_length=1, test_max_length=2, num_steps=5, batch_size=4, learning_rate=1e-3,
                              max_grad_norm=1.0),
               "runs": [_run("reverse_string", "lstm", 0, 0.6), _run("reverse_string", "transformer", 0, 0.55)]}
    text = report.summary_markdown(results)
    assert "lengths 2..2" in text and "60.0" in text
    fig = report.accuracy_figure(results)
    assert len(fig.axes) == 1


def test_config_presets():
    cpu, paper = lg_config.get_config(), lg_config.get_config("paper")
    assert cpu.train_max_length < cpu.test_max_length
    assert (paper.train_max_length, paper.test_max_length, paper.batch_size) == (40, 500, 128)
    cpu.attention, cpu.positional = "l2", "rope"  # the transformer config follows the top-level names
    assert (cpu.transformer.attention, cpu.transformer.positional) == ("l2", "rope")
    with pytest.raises(ValueError, match="preset"):
        lg_config.get_config("gpu")
