"""Length generalization (Delétang et al. 2022): train on short inputs, test on longer ones.

For every (task, model, seed): train on input lengths 1..N (sampled per example, padded to one shape
so the step compiles once), then measure per-token accuracy at the blank positions on every length
1..M (``eval_batch_size`` fresh examples per length). A run's ``train_accuracy`` is that accuracy
averaged over the training lengths 1..N; its ``ood_score`` the mean over lengths N+1..M.

    python -m experiments.length_generalization [--workdir DIR] [--config.num_steps=3000 ...]
    python -m experiments.length_generalization --config=experiments/configs/length_generalization.py:paper

Writes ``results.json`` (rewritten after every finished run, so an interrupted sweep keeps what it
finished), ``summary.md``, ``accuracy_vs_length.png`` and per-run JSON-lines logs under ``logs/``,
all into ``--workdir``; every file is replaced atomically.
"""

from __future__ import annotations

import os
import sys
import time
import zlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from attnjax import data
from attnjax.nn import build_model
from attnjax.parallel.mesh import data_mesh
from attnjax.train import create_train_state, evaluate_lengths, fit, make_optimizer, reporting
from attnjax.train.state import count_params
from experiments import length_generalization_report as report

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "length_generalization.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Experiment config (file[:preset]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", os.path.join("results", "length_generalization"),
                               "Directory receiving results.json, summary.md, accuracy_vs_length.png, logs/.")


def _names(value: str | Sequence[str]) -> list[str]:
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    return [n for n in names if n]


def _validate(config: ml_collections.ConfigDict) -> None:
    n, m = config.train_max_length, config.test_max_length
    if not 1 <= n < m:
        raise ValueError(f"need 1 <= train_max_length < test_max_length, got {n} and {m}")
    for name in _names(config.tasks):
        data.get_task(name)
    if not _names(config.models) or config.num_seeds < 1:
        raise ValueError(f"need at least one model and one seed, got models={config.models!r}, "
                         f"num_seeds={config.num_seeds}")


def _rng(seed: int, task: str, stream: int) -> np.random.Generator:
    # Independent, reproducible streams per (seed, task, train/eval); crc32 is stable across processes.
    return np.random.default_rng([seed, zlib.crc32(task.encode()), stream])


def _eval_pad(task: data.Task, n: int, config: ml_collections.ConfigDict) -> int:
    m, bucket = config.test_max_length, config.eval_bucket
    top = m if bucket <= 0 else min(-(-n // bucket) * bucket, m)
    return data.padded_length(task, top)


def _progress(setting: str) -> bool | None:
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"progress must be 'auto', 'on' or 'off', got {setting!r}")
    return None if setting == "auto" else setting == "on"


def run_one(task_name: str, model_name: str, seed: int, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
            log_dir: str) -> dict[str, Any]:
    """Trains and evaluates one (task, model, seed); returns its results entry."""
    task = data.get_task(task_name)
    n, m = config.train_max_length, config.test_max_length
    model = build_model(model_name, task.output_size, config[model_name].to_dict())
    # Parameter shapes do not depend on the length, so a length-1 example lets every task with the
    # same vocabulary share one compiled initializer.
    example = jnp.zeros((1, 1, data.vocab_size(task)), jnp.float32)
    init_key, step_key = jax.random.split(jax.random.key(seed))
    state = create_train_state(model, init_key, example, make_optimizer(config.learning_rate, config.max_grad_norm))
    num_params = count_params(state.params)
    train_rng = _rng(seed, task_name, 0)
    t0 = time.perf_counter()
    log_path = os.path.join(log_dir, f"{task_name}-{model_name}-seed{seed}.jsonl")
    with open(log_path, "w", encoding="utf-8") as log_file:
        state, history = fit(state, lambda _: data.training_batch(task, train_rng, config.batch_size, n),
                             config.num_steps, rng=step_key, mesh=mesh, log_every=config.log_every,
                             log_file=log_file, progress=_progress(config.progress),
                             description=f"{task_name}/{model_name}/{seed}")
    train_time = time.perf_counter() - t0
    eval_rng = _rng(seed, task_name, 1)
    per_length = evaluate_lengths(
        state, lambda k: [data.length_batch(task, eval_rng, config.eval_batch_size, k, _eval_pad(task, k, config))],
        range(1, m + 1), mesh=mesh)
    acc = {k: v["accuracy"] for k, v in per_length.items()}
    return {
        "task": task_name, "model": model_name, "seed": seed,
        "train_accuracy": float(np.mean([acc[k] for k in range(1, n + 1)])),
        "ood_score": float(np.mean([acc[k] for k in range(n + 1, m + 1)])),
        "accuracy_per_length": {str(k): a for k, a in acc.items()},
        "final_train_loss": history[-1]["loss"] if history else None,
        "final_train_batch_accuracy": history[-1]["accuracy"] if history else None,
        "num_params": num_params,
        "train_seconds": train_time,
        "eval_seconds": time.perf_counter() - t0 - train_time,
    }


def run(config: ml_collections.ConfigDict, workdir: str, out=sys.stdout) -> dict[str, Any]:
    """Runs the sweep, writing results into ``workdir`` after every run; returns the results dict."""
    _validate(config)
    log_dir = os.path.join(workdir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    mesh = data_mesh(config.mesh_data)
    results: dict[str, Any] = {"experiment": "length_generalization", "config": config.to_dict(),
                               "environment": reporting.environment_info(),
                               "mesh": {k: int(v) for k, v in mesh.shape.items()}, "complete": False, "runs": []}
    combos = [(t, mo, s) for t in _names(config.tasks) for mo in _names(config.models)
              for s in range(config.first_seed, config.first_seed + config.num_seeds)]
    t_start = time.perf_counter()
    for i, (task_name, model_name, seed) in enumerate(combos, 1):
        entry = run_one(task_name, model_name, seed, config, mesh, log_dir)
        results["runs"].append(entry)
        results["elapsed_seconds"] = time.perf_counter() - t_start
        reporting.write_json(os.path.join(workdir, "results.json"), results)
        print(f"[{i}/{len(combos)}] {task_name:<17} {model_name:<12} seed {seed}: train acc "
              f"{entry['train_accuracy']:.3f}  ood {entry['ood_score']:.3f}  "
              f"({entry['train_seconds']:.1f}s train, {entry['eval_seconds']:.1f}s eval)", file=out, flush=True)
    results["complete"] = True
    results["elapsed_seconds"] = time.perf_counter() - t_start
    reporting.write_json(os.path.join(workdir, "results.json"), results)
    reporting.write_text(os.path.join(workdir, "summary.md"), report.summary_markdown(results))
    fig = report.accuracy_figure(results)
    reporting.save_figure(os.path.join(workdir, "accuracy_vs_length.png"), fig, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return results


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # keep JAX's backend-probing INFO lines out of the table output
    workdir = _WORKDIR.value
    results = run(_CONFIG.value, workdir)
    print()
    print(report.summary_markdown(results))
    print(f"wrote {workdir}/results.json, summary.md, accuracy_vs_length.png "
          f"({results['elapsed_seconds']:.0f}s)")


if __name__ == "__main__":
    app.run(main)
