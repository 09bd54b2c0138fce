"""The MQAR experiment on the harness: a tiny end-to-end run that resumes, typos before training, presets,
fingerprints, and the report rebuilt from a small results.json."""

import io
import json
import math
import os
import subprocess
import sys

import pytest

import jax
import jax.numpy as jnp

from attnjax import sweep
from attnjax.nn import build_model, get_model_spec
from experiments.associative_recall import config as ar_config
from experiments.associative_recall import report
from experiments.associative_recall import run as ar

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny():
    config = ar_config.get_config()
    for key, value in dict(models="transformer_lm,gru", attentions="dot_product", vocab_size=16, settings="8:1,8:2",
                           widths="8", noise_sweep="0.0,1.0", noise_setting="8:2", attention_map_setting="8:2",
                           num_train=32, num_val=16, num_test=16, num_train_eval=16, num_seeds=2, batch_size=8,
                           num_steps=3, eval_batch_size=16, log_every=2, progress="off").items():
        config[key] = value
    config.transformer_lm.num_layers = 1
    return config


def test_tiny_run_writes_results_summary_and_plots_then_resumes(tmp_path):
    config, workdir = _tiny(), str(tmp_path / "run")
    results = sweep.run(sweep.plan(ar.EXPERIMENT, config), workdir, out=io.StringIO())
    # 2 models x (2 settings at noise 0 + noise 1 at 8:2) x 2 seeds.
    assert results["complete"] and results["num_cells"] == 12 and results["num_failed"] == 0
    runs = sweep.ok_runs(results)
    assert {(r["kv"], r["noise"]) for r in runs} == {(1, 0.0), (2, 0.0), (2, 1.0)}
    for r in runs:
        for k in ("train_accuracy", "val_accuracy", "test_accuracy"):
            assert 0.0 <= r[k] <= 1.0
        assert 0.0 <= r["test_in_train"] <= 1.0
    maps = [r["attention_maps"] for r in runs if "attention_maps" in r]
    assert len(maps) == 1  # the softmax Transformer, first seed, at the map setting
    layers = maps[0]["layers"]
    assert len(layers) == 1 and len(layers[0]) == 2 and len(layers[0][0]) == 8  # [layers, N, L, L]
    assert maps[0]["query"] in maps[0]["queries"]
    text = ar.EXPERIMENT.report(results, workdir)
    assert text == (tmp_path / "run" / "summary.md").read_text()
    assert set(runs[0]["test_accuracy_by_noise"]) == {"0.0", "0.5", "1.0"}
    for name in (report.PAIRS_FILE, report.NOISE_FILE, report.EVAL_NOISE_FILE, report.MAPS_FILE):
        assert (tmp_path / "run" / name).read_bytes()[:4] == b"\x89PNG", name
    assert "## Accuracy vs number of pairs (width 8, noise 0.0)" in text and "| dot_product |" in text
    assert "| gru |" in text and "## Ours vs published" in text and "## Protocol" in text
    assert "| softmax attention solves L=8 P=1 (width 8) |" in text
    logs = sorted(os.listdir(tmp_path / "run" / "logs"))
    assert len(logs) == 12
    out = io.StringIO()
    again = sweep.run(sweep.plan(ar.EXPERIMENT, config), workdir, out=out)
    assert "12 already done, 0 to run" in out.getvalue()
    assert again["cells"] == json.loads((tmp_path / "run" / "results.json").read_text())["cells"]
    config.num_seeds = 3  # one more seed: only its cells run
    out = io.StringIO()
    sweep.run(sweep.plan(ar.EXPERIMENT, config), workdir, out=out)
    assert "12 already done, 6 to run" in out.getvalue()


def test_typo_in_the_cli_fails_before_any_file(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "experiments.associative_recall", f"--workdir={workdir}",
                           "--config.attentions=dot_product,softmx"], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown attention 'softmx'" in proc.stderr and "Traceback" not in proc.stderr
    assert not workdir.exists()


@pytest.mark.parametrize("field, value, message", [
    ("models", "transformer_lm,lsmt", "unknown causal sequence model 'lsmt'"),
    ("models", "transformer_lm,rnn", "model 'rnn' needs a config block"),
    ("models", "transformer_lm,transformer", "unknown causal sequence model 'transformer'"),
    ("attentions", "dot_product,softmx", "unknown attention 'softmx'"),
    ("settings", "16:2,16x4", "seq_len:num_kv_pairs"),
    ("settings", "16:2,16:5", r"seq_len must be >= 4 \* num_kv_pairs = 20"),
    ("settings", "15:2", "seq_len must be even"),
    ("vocab_size", 6, "vocab_size must give at least num_kv_pairs=4 distinct keys"),
    ("noise_sweep", "0.0,2.0", r"noise must be a float in \[0, 1\]"),
    ("noise_sweep", "0.0,lots", "noise_sweep must be comma-separated floats"),
    ("widths", "64,wide", "widths must be comma-separated ints"),
    ("widths", "63", "d_model=63 must be divisible by num_heads=2"),
    ("attention_map_setting", "32:4", "attention_map_setting must be one of the settings"),
    ("num_train_eval", 10 ** 9, "num_train_eval must be <="),
    ("only", "variant=linaer", "unknown config.only value"),
])
def test_bad_config_fails_before_training(field, value, message):
    config = ar_config.get_config()
    config[field] = value
    with pytest.raises(ValueError, match=message):
        sweep.plan(ar.EXPERIMENT, config)


def test_presets_build_every_cell():
    for preset in ar_config.PRESETS:
        config = ar_config.get_config(preset)
        ar.validate(config)
        cells = ar.cells(config)
        assert len({c.id for c in cells}) == len(cells)
    cpu = ar_config.get_config("cpu")
    n_models = len(ar_config.CPU_ATTENTIONS.split(",")) + 2
    assert len(ar.cells(cpu)) == n_models * 2 * 3  # 2 pair settings x 3 seeds (the noise sweep is test-time)
    assert cpu.eval_noises and not cpu.noise_sweep
    paper = ar_config.get_config("paper")
    assert (paper.vocab_size, paper.settings, paper.num_train, paper.num_test) == (8192, "64:4,128:8,256:16",
                                                                                   100_000, 3_000)
    assert paper.widths == "64,128,256,512" and len(paper.learning_rates.transformer_lm.split(",")) == 4
    assert set(paper.attentions.split(",")) == set(ar.ATTENTION)  # every registered variant
    pilot = ar_config.get_config("lr_pilot")
    assert not pilot.score_test and pilot.first_seed >= cpu.first_seed + cpu.num_seeds
    with pytest.raises(ValueError, match="preset"):
        ar_config.get_config("gpu")


def test_zoology_preset_keeps_zoologys_shape_and_builds_every_model():
    config = ar_config.get_config("zoology")
    ar.validate(config)  # every name, setting and model config (mixers included)
    settings, widths = ar.parse_settings(config), ar.widths(config)
    assert settings[:2] == [(64, 4), (128, 8)] and all(L == 16 * P for L, P in settings)  # 16 tokens per pair
    assert config.vocab_size >= 256 and widths[0] <= 32 and widths[-1] >= 128 and config.num_seeds == 3
    assert (config.optimizer, config.schedule, config.weight_decay) == ("adamw", "warmup_cosine", 0.1)
    assert 0 < config.warmup_steps < config.num_steps and config.score_test
    models = config.models.split(",")
    assert {"transformer_lm", "base_conv", "hyena", "based", "lstm", "gru"} <= set(models)
    assert "dot_product" in config.attentions.split(",")
    cells = ar.cells(config)
    for model in models:  # learning rates are a grid axis, picked on validation by the report
        assert len({c["lr"] for c in cells if c["model"] == model}) >= 2, model
    built = set()
    for cell in {(c["model"], c["variant"], c["width"], c["seq_len"]): c for c in cells}.values():
        fields = ar.model_fields(config, cell)
        assert fields[get_model_spec(cell["model"]).width] == cell["width"]  # d_model or hidden_size
        if cell["model"] not in ("lstm", "gru"):  # positions and long filters span the sequence
            assert fields["max_len"] == cell["seq_len"] and fields["mlp_dim"] == config.mlp_ratio * cell["width"]
        if cell["model"] not in built:  # one abstract init per model: it builds and reads out the vocabulary
            built.add(cell["model"])
            model = build_model(cell["model"], config.vocab_size, fields)
            shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, cell["seq_len"]), jnp.int32))
            out = jax.eval_shape(model.apply, shapes, jnp.zeros((2, cell["seq_len"]), jnp.int32))
            assert out.shape == (2, cell["seq_len"], config.vocab_size), cell["model"]
    assert built == set(models)
    based = ar.model_fields(config, next(c for c in cells if c["model"] == "based"))
    assert based["layer_mixers"] == ("base_conv", "linear") and based["feature_dim"] == 8  # Zoology's MQAR Based


def test_tiny_zoology_shaped_run_trains_a_mixer_and_the_transformer(tmp_path):
    config = ar_config.get_config("zoology")
    # One length for both settings: each model compiles once (compilation is most of this test's time).
    for key, value in dict(models="transformer_lm,based", vocab_size=16, settings="16:1,16:2", widths="8",
                           num_train=32, num_val=16, num_test=16, num_train_eval=16, num_seeds=1, batch_size=8,
                           num_steps=2, warmup_steps=1, eval_batch_size=16, log_every=1, eval_noises="0.0,1.0",
                           attention_map_setting="", progress="off", workers=1).items():
        config[key] = value
    config.learning_rates.update(dict(transformer_lm="1e-3", based="1e-3"))
    results = sweep.run(sweep.plan(ar.EXPERIMENT, config), str(tmp_path / "run"), out=io.StringIO())
    assert results["complete"] and results["num_cells"] == 4 and results["num_failed"] == 0  # 2 models x 2 settings
    runs = sweep.ok_runs(results)
    assert {(r["model"], r["kv"]) for r in runs} == {(m, P) for m in ("transformer_lm", "based") for P in (1, 2)}
    assert all(0.0 <= r["test_accuracy"] <= 1.0 and r["num_params"] > 0 for r in runs)
    # Zoology's stop rule ran: validation at every log record, how each cell stopped is recorded.
    assert all(r["stop_reason"] in ("fit", "budget") and len(r["val_curve"]) == r["steps_trained"] for r in runs)
    text = ar.EXPERIMENT.report(results, str(tmp_path / "run"))
    assert "| based |" in text and "| dot_product |" in text
    assert "| based: gap to softmax grows, P=1 → 2 (width 8; Δ at P=1 − at P=2) |" in text


def test_fingerprint_follows_only_what_determines_the_cell():
    config = ar_config.get_config()
    cells = ar.cells(config)
    linear = next(c for c in cells if c["variant"] == "linear")
    lstm = next(c for c in cells if c["model"] == "lstm")
    before = ar.EXPERIMENT.fingerprint(config, linear), ar.EXPERIMENT.fingerprint(config, lstm)
    config.lstm.num_layers = 1
    config.num_seeds = 5
    config.attention_options.local.local_window_size = 2
    assert ar.EXPERIMENT.fingerprint(config, linear) == before[0]
    assert ar.EXPERIMENT.fingerprint(config, lstm) != before[1]


def _fixture_results():
    """Softmax solves both settings; linear drops at P=4; the GRU is low and falls further; noise costs linear."""
    scores = {"dot_product": {2: 1.0, 4: 0.99}, "linear": {2: 0.95, 4: 0.6}, "gru": {2: 0.5, 4: 0.3}}
    cells = {}
    for name, by_p in scores.items():
        model, variant = ("gru", "-") if name == "gru" else ("transformer_lm", name)
        for P, noise in ((2, 0.0), (4, 0.0), (2, 1.0)):
            for seed, jitter in enumerate((-0.005, 0.0, 0.005)):
                acc = by_p[P] - (0.1 if noise and name == "linear" else 0.0) + (jitter if by_p[P] < 0.99 else 0.0)
                fields = dict(model=model, variant=variant, seq_len=16, kv=P, width=64, noise=noise, lr="3e-3",
                              seed=seed)
                cid = "/".join(f"{k}={v}" for k, v in fields.items())
                # Distractors at test time cost the GRU 20 points and nothing else.
                by_noise = {"0.0": acc, "1.0": acc - (0.2 if name == "gru" else 0.0)}
                cells[cid] = {"cell": fields, "status": "ok", "seconds": 1.0,
                              "metrics": {"train_accuracy": min(1.0, acc + 0.01), "val_accuracy": acc,
                                          "test_accuracy": acc, "num_params": 1234, "test_in_train": 0.001,
                                          "test_accuracy_by_noise": by_noise}}
    config = ar_config.get_config().to_dict()
    return {"experiment": "associative_recall", "config": config, "cells": cells, "num_cells": len(cells),
            "num_ok": len(cells), "num_failed": 0, "complete": True}


def test_report_from_fixture_has_ci_paired_deltas_and_verdict(tmp_path):
    text = report.write_report(_fixture_results(), str(tmp_path))
    assert text == (tmp_path / "summary.md").read_text()
    assert (tmp_path / report.PAIRS_FILE).exists() and (tmp_path / report.NOISE_FILE).exists()
    # Row: params, then per setting test [95% CI over 3 seeds], train, paired Δ vs softmax.
    assert ("| linear | 1234 | 95.0 [93.8, 96.2] | 96.0 | -5.0 [-6.2, -3.8] | 60.0 [58.8, 61.2] | 61.0 "
            "| -39.0 [-40.2, -37.8] |") in text
    assert "| dot_product | 1234 | 100.0 [100.0, 100.0] | 100.0 | – |" in text
    assert "## Accuracy vs filler noise (L=16, P=2, width 64)" in text
    # Last column: noise 1 - noise 0, paired by seed.
    assert ("| linear | 95.0 [93.8, 96.2] | 96.0 | -5.0 [-6.2, -3.8] | 85.0 [83.8, 86.2] | 86.0 "
            "| -15.0 [-16.2, -13.8] | -10.0 [-10.0, -10.0] |") in text
    assert "Differences from Zoology" in text and "Zoology (Arora et al. 2023, Figure 2" in text
    assert "## Accuracy vs test-time filler noise (L=16, P=4, width 64, trained at noise 0.0)" in text
    # Distractors at test time cost the GRU 20 points (last column: test noise 1 - test noise 0, paired).
    assert ("| gru | 30.0 [28.8, 31.2] | -69.0 [-70.2, -67.8] | 10.0 [8.8, 11.2] | -89.0 [-90.2, -87.8] "
            "| -20.0 [-20.0, -20.0] |") in text
    assert (tmp_path / report.EVAL_NOISE_FILE).exists()
    # Ours vs Zoology: softmax solves both settings (99% counts as solved); the gap of linear and the GRU to softmax
    # grows with the pairs (Δ at P=2 minus Δ at P=4: linear -5 - (-39) = +34 points, GRU -50 - (-69) = +19).
    verdicts = text[text.index("## Ours vs published"):]
    assert "| softmax attention solves L=16 P=2 (width 64) | 100.0 [100.0, 100.0] | 100.0 | agrees |" in verdicts
    assert "| softmax attention solves L=16 P=4 (width 64) | 99.0 [99.0, 99.0] | 100.0 | agrees |" in verdicts
    assert ("| linear: gap to softmax grows, P=2 → 4 (width 64; Δ at P=2 − at P=4) | +34.0 [+34.0, +34.0] "
            "| grows (> 0) | agrees |") in verdicts
    assert "| gru: gap to softmax grows, P=2 → 4 (width 64; Δ at P=2 − at P=4) | +19.0 [+19.0, +19.0]" in verdicts
    assert "dot_product: gap" not in verdicts  # the claim is about sub-quadratic models


@pytest.mark.parametrize("train, verdict", [(1.0, "differs"), (0.9, "inconclusive (train fit 90.0%: budget)")])
def test_verdict_when_softmax_misses_a_setting(train, verdict):
    """Softmax at 90% on P=4: it differs from Zoology where it fits its training data, and is inconclusive (a budget
    limit) where it does not; the gap rows at P=4 are inconclusive then."""
    results = _fixture_results()
    for e in results["cells"].values():
        if e["cell"]["variant"] == "dot_product" and e["cell"]["kv"] == 4:
            e["metrics"].update(test_accuracy=0.9 + 0.01 * e["cell"]["seed"], train_accuracy=train)
    text = report.summary_markdown(results)
    assert f"| softmax attention solves L=16 P=4 (width 64) | 91.0 [88.5, 93.5] | 100.0 | {verdict} |" in text
    assert "| softmax attention solves L=16 P=2 (width 64) | 100.0 [100.0, 100.0] | 100.0 | agrees |" in text
    assert text.count("| grows (> 0) | inconclusive (softmax below 99%) |") == 2  # linear and the GRU


def test_report_shows_which_runs_ended_on_the_chance_plateau():
    """The GRU's last training loss sits at ln P (a uniform guess among the context's P values), softmax's far below."""
    results = _fixture_results()
    for e in results["cells"].values():
        P, gru = e["cell"]["kv"], e["cell"]["model"] == "gru"
        e["metrics"]["final_train_loss"] = 1.05 * math.log(P) if gru else 0.01
    text = report.summary_markdown(results)
    assert "## Where training ended: the chance plateau (width 64, noise 0.0)" in text
    assert "| model | L=16 P=2 (1/P = 50.0%, ln P = 0.69) | L=16 P=4 (1/P = 25.0%, ln P = 1.39) |" in text
    assert "| gru | 0.73 (3/3 on it) | 1.46 (3/3 on it) |" in text and "| dot_product | 0.01 (0/3 on it) |" in text
    assert "chance plateau" not in report.summary_markdown(_fixture_results())  # no losses recorded: no section


def test_report_picks_learning_rates_on_validation_only():
    results = _fixture_results()
    extra = {}
    for cid, e in results["cells"].items():
        if e["cell"]["variant"] == "linear":
            cell = {**e["cell"], "lr": "1e-2"}
            # Better on test, worse on validation: the validation choice (3e-3) must stay.
            metrics = {**e["metrics"], "val_accuracy": e["metrics"]["val_accuracy"] - 0.2,
                       "test_accuracy": 1.0}
            extra[cid.replace("lr=3e-3", "lr=1e-2")] = {**e, "cell": cell, "metrics": metrics}
    results["cells"].update(extra)
    text = report.summary_markdown(results)
    assert "linear=3e-3" in text and "| linear | 1234 | 95.0 [93.8, 96.2] |" in text
