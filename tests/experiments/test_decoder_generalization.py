"""The decoder-only length study end to end: presets, scores by length (bucketed), the CLI with resume and report,
typos before training, and the report's statistics (MRR, the paired NoPE interval, encoder vs decoder)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from attnjax import stats, sweep
from attnjax.data import batching
from attnjax.data.tasks import get_task
from attnjax.sweep import decoding
from attnjax.train.decode import init_cache
from experiments.decoder_generalization import config as dg_config
from experiments.decoder_generalization import report
from experiments.decoder_generalization import run as dg
from experiments.length_generalization import run as encoder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# reverse_string and odds_first have one shape (alphabets, lengths): their cells share compiled programs.
TINY = ["--config.tasks=reverse_string,odds_first", "--config.models=lstm,transformer_lm",
        "--config.positionals=nope", "--config.randomized=false", "--config.mechanisms=", "--config.num_seeds=1",
        "--config.num_steps=40", "--config.warmup_steps=4", "--config.train_max_length=2",
        "--config.test_max_length=3", "--config.batch_size=8", "--config.eval_batch_size=4",
        "--config.eval_bucket=3", "--config.validate_every=20", "--config.val_batch_size=4",
        "--config.lstm.hidden_size=8", "--config.transformer_lm.d_model=8", "--config.transformer_lm.mlp_dim=8",
        "--config.transformer_lm.num_layers=1", "--config.transformer_lm.num_heads=2", "--config.progress=off",
        "--config.workers=1"]
METRICS = ["token", "exact", "greedy_token", "greedy_exact"]


def _cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "experiments.decoder_generalization", *args], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=600)


def test_presets_build_and_validate_every_model():
    sizes = {"cpu_kazemnejad": 5 * 5 * 3, "cpu_decoder": 7 * (1 + 5 * 2 + 5 + 2) * 3}
    for preset in dg_config.PRESETS:
        planned = sweep.plan(dg.EXPERIMENT, dg_config.get_config(preset))  # validates every name and model
        assert len(planned.grid) == sizes.get(preset, len(planned.grid))
    config = dg_config.get_config("cpu_decoder")
    assert dg.variants(config, "transformer_lm")[-5:] == [
        "stick_breaking+nope", "forgetting+nope", "cope+nope", "ssmax+rope", "fire+nope"]
    for variant in dg.variants(config, "transformer_lm") + ["-"]:  # each decodes from a cache
        model = encoder.build(config, sweep.Cell((("model", "lstm" if variant == "-" else "transformer_lm"),
                                                  ("variant", variant))), 6)
        assert jax.tree.leaves(init_cache(model, 2, 5, 6))
    kazemnejad = dg_config.get_config("cpu_kazemnejad")
    assert sorted(dg.variants(kazemnejad, "transformer_lm")) == sorted(f"dot_product+{p}"
                                                                       for p in report.KAZEMNEJAD["mrr"])
    assert [dg_config.lengths(kazemnejad, t) for t in ("duplicate_string", "parity_check")] == [(20, 40), (8, 16)]
    with pytest.raises(ValueError, match="task:N:M, got 'parity_check:8'"):
        dg_config.lengths({**kazemnejad.to_dict(), "task_lengths": "parity_check:8"}, "parity_check")


def test_buckets_draw_the_encoder_protocols_examples_and_score_each_length_alone():
    task = get_task("reverse_string")
    rows, batch = decoding.bucket_batch(task, np.random.default_rng(3), [2, 3], 4)
    rng = np.random.default_rng(3)
    for k in (2, 3):  # the same draws, length by length: both protocols are scored on the same examples
        symbols = batching.length_batch(task, rng, 4, k)["inputs"][:, :k].argmax(-1)
        np.testing.assert_array_equal(batch["inputs"][rows == k, :k].argmax(-1), symbols)
    assert decoding.length_buckets(3, 8, 2) == [[1, 2, 3], [4, 5], [6, 7], [8]]
    assert decoding.length_buckets(3, 8, 0) == [[1, 2, 3], [4, 5, 6, 7, 8]]
    config = dg_config.get_config("cpu_kazemnejad")
    config.transformer_lm.update(d_model=8, num_heads=2, mlp_dim=8, num_layers=1)
    model = encoder.build(config, sweep.Cell((("model", "transformer_lm"), ("variant", "dot_product+rope"))), 6)
    params = jax.tree.map(lambda p: 4 * p, model.init(jax.random.key(0), batch["inputs"])["params"])  # not flat
    rng = np.random.default_rng(5)
    alone = decoding.scores_by_length(model, params, [decoding.bucket_batch(task, rng, [k], 8) for k in (1, 2, 3)])
    scores = decoding.length_scores(model, params, task, np.random.default_rng(5), 2, 3, batch_size=8, bucket=0)
    # The training lengths share one batch (and one program), yet every length scores as its own batch would.
    assert scores["per_length"] == {str(k): {name: round(alone[k][key], 4) for name, key in decoding.METRICS.items()}
                                    for k in (1, 2, 3)}
    assert {v["greedy_token"] for v in scores["per_length"].values()} - {0.0, 1.0}  # not a trivial score
    for metric, key in decoding.METRICS.items():
        assert scores[f"in_dist_{metric}"] == pytest.approx((alone[1][key] + alone[2][key]) / 2)
        assert scores[f"ood_{metric}"] == pytest.approx(alone[3][key])
    assert scores["ood_score"] == scores["ood_greedy_token"]


@pytest.mark.slow
def test_cli_tiny_grid_writes_every_score_resumes_and_reports(tmp_path):
    workdir = tmp_path / "run"
    proc = _cli(tmp_path, f"--workdir={workdir}", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["complete"] and results["num_cells"] == 2 * 2
    runs = sweep.ok_runs(results)
    assert {(r["model"], r["variant"]) for r in runs} == {("lstm", "-"), ("transformer_lm", "dot_product+nope")}
    for r in runs:
        assert sorted(map(int, r["per_length"])) == [1, 2, 3]
        for metric in METRICS:
            per = [r["per_length"][str(k)][metric] for k in (1, 2, 3)]
            assert 0.0 <= r[f"ood_{metric}"] <= 1.0 and r[f"ood_{metric}"] == pytest.approx(per[2], abs=1e-4)
            assert r[f"in_dist_{metric}"] == pytest.approx(np.mean(per[:2]), abs=1e-4)
        assert r["ood_score"] == r["ood_greedy_token"] and r["train_accuracy"] == r["in_dist_greedy_token"]
        assert [step for step, _ in r["val_curve"]] == [20, 40][:len(r["val_curve"])]
        assert r["stop_reason"] in ("fit", "flat", "budget") and r["steps_trained"] == r["val_curve"][-1][0]
    summary = (workdir / "summary.md").read_text()
    for heading in ("## Free-running per-token accuracy", "## Free-running exact match", "## Teacher-forced",
                    "## Fit: steps to fit", "## Differences from the published protocols"):
        assert heading in summary
    assert (workdir / report.CURVES_FILE).read_bytes()[:4] == b"\x89PNG"
    again = _cli(tmp_path, f"--workdir={workdir}", *TINY)
    assert again.returncode == 0 and "4 already done, 0 to run" in again.stdout
    assert json.loads((workdir / "results.json").read_text())["cells"] == results["cells"]
    # Encoder vs decoder from an encoder run that has one of the two tasks (the other is left out, not an error).
    lstm = next(r for r in runs if r["task"] == "reverse_string" and r["model"] == "lstm")
    encoder_run = tmp_path / "encoder"
    encoder_run.mkdir()
    enc = {"task": "reverse_string", "model": "lstm", "variant": "-", "recipe": lstm["recipe"], "lr": lstm["lr"],
           "seed": 0, "train_accuracy": 1.0, "ood_score": 0.5,
           "accuracy_per_length": {"1": 1, "2": 1, "3": 0.5, "4": 0}}
    (encoder_run / "results.json").write_text(json.dumps({"config": {
        "train_max_length": 2, "test_max_length": 4, "min_train_accuracy": 0.9},
        "cells": {"x": {"status": "ok", "cell": {}, "metrics": enc}}}))
    page = report.summary_markdown({**results, "config": {**results["config"], "encoder_run": str(encoder_run)}})
    ours = lstm["per_length"]["3"]["greedy_token"]  # the lengths both scored: 3 (the encoder also scored 4)
    assert f"| reverse_string | lstm | 50.0 | {100 * ours:.1f} | {100 * (ours - 0.5):+.1f} [n=1] | 1 |" in page
    assert "(3..3)" in page and "| odds_first |" not in page.split("## Encoder vs decoder")[1]


@pytest.mark.parametrize("overrides, message", [
    ({"transformer_lm.d_modle": 8}, "d_modle"),
    ({"tasks": "parity_check,decimal_adition"}, "unknown task 'decimal_adition'"),
    ({"mechanisms": "stick_breaking+nope,cope"}, r"entries are attention\+positional"),
    ({"tasks": "decimal_addition_hints", "task_lengths": "decimal_addition_hints:10:64"}, "length must be < 64"),
    ({"models": "lstm", "lstm.bidirectional": True}, "must be causal"),
])
def test_typo_fails_before_training(overrides, message):
    config = dg_config.get_config()
    for key, value in overrides.items():
        *parents, name = key.split(".")
        block = config
        for parent in parents:
            block = block[parent]
        block[name] = value  # a key the block lacks is added, as a misspelt override would be
    with pytest.raises((ValueError, TypeError), match=message):
        sweep.plan(dg.EXPERIMENT, config)  # validates everything before the runner writes or trains anything


def _run(task, variant, seed, exact, token=0.5):
    return {"task": task, "model": "transformer_lm", "variant": f"dot_product+{variant}", "recipe": "r", "lr": "1e-3",
            "seed": seed, "ood_greedy_exact": exact, "ood_greedy_token": token, "ood_score": token,
            "train_accuracy": 1.0, "in_dist_greedy_exact": 1.0, "in_dist_greedy_token": 1.0}


def test_mean_reciprocal_rank_and_the_paired_nope_interval_on_hand_made_runs():
    order = ["nope", "sinusoidal", "t5", "alibi", "rope"]
    exact = {("parity_check", 0): [0.9, 0.0, 0.8, 0.8, 0.1],  # a tie: t5 and alibi share ranks 2 and 3
             ("parity_check", 1): [0.5, 0.2, 0.6, 0.4, 0.3],
             ("reverse_string", 0): [0.0] * 5,  # everything tied: each at rank 3
             ("reverse_string", 1): [0.8, 0.9, 0.7, 0.6, 1.0]}
    runs = [_run(t, v, s, x) for (t, s), values in exact.items() for v, x in zip(order, values)]
    runs += [_run("bucket_sort", "nope", 0, 1.0), _run("parity_check", "learned", 0, 1.0)]  # in no full ranking
    es = report.tables.entries(runs, 0.9)
    mrr, n = report.mean_reciprocal_ranks(es, "greedy_exact", order)
    assert n == 4
    expected = {"nope": [1, 1 / 2, 1 / 3, 1 / 3], "sinusoidal": [1 / 5, 1 / 5, 1 / 3, 1 / 2],
                "t5": [1 / 2.5, 1, 1 / 3, 1 / 4], "alibi": [1 / 2.5, 1 / 3, 1 / 3, 1 / 5],
                "rope": [1 / 4, 1 / 4, 1 / 3, 1]}
    assert mrr == pytest.approx({k: np.mean(v) for k, v in expected.items()})
    assert "| NoPE | 0.54 |" in report.mrr_table(es)
    effects = {e.name: e for e in report.nope_effects(es, "greedy_exact")}
    assert list(effects) == ["sinusoidal", "t5", "alibi", "rope", "learned", "**every other variant**"]
    assert effects["learned"].deltas == pytest.approx([0.9 - 1.0])  # parity_check seed 0 only
    # NoPE − t5 per seed, averaged over the tasks: seed 0 (0.1 + 0) / 2, seed 1 (-0.1 + 0.1) / 2.
    assert effects["t5"].deltas == pytest.approx([0.05, 0.0])
    assert effects["t5"].diff == pytest.approx(stats.mean_ci([0.05, 0.0]))
    assert report.verdict(effects["t5"]) == "no significant difference"
    page = report.nope_section(es)
    assert "## Does NoPE win in our decoders?" in page and any(line.startswith("**Answer (exact match):** NoPE is "
                                                                       "significantly better than 0") for line in page)
