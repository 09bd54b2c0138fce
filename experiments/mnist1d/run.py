"""MNIST-1D (Greydanus & Kobak): which inductive biases need the order of positions, and how many examples.

A cell is (model, variant, dataset, train_size, lr, seed). ``variant`` is the Transformer classifier's
positional encoding (``"-"`` for the other models); ``dataset`` is ``normal`` or ``shuffled`` (one fixed
permutation of the 40 positions for every sequence). Each cell trains a ``classifier``-kind model
(``[B, 40] -> [B, 10]``) with Adam on ``train_size`` examples (a subset drawn per seed, the same for every
model and both datasets of that seed; initialization and batch order are shared by the two datasets too,
so normal and shuffled runs of a seed are paired), then scores the whole training subset and the 1,000 test
sequences (or, with ``validation_size > 0``, the held-out validation split instead of the test set).

    python -m experiments.mnist1d [--workdir DIR] [--config.num_steps=3000 ...]
    python -m experiments.mnist1d --config=experiments/mnist1d/config.py:lr_pilot --workdir results/mnist1d_lr_pilot
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from attnjax.data.mnist1d import NUM_CLASSES, NUM_TRAIN, SEQ_LENGTH, load_mnist1d
from attnjax.nn import build_model, count_params, get_model_spec, model_kind
from attnjax.ops.positional import get_positional
from attnjax.parallel.mesh import data_mesh
from attnjax.train import create_train_state, evaluate, fit, make_optimizer
from attnjax import sweep
from attnjax.sweep.report import describe_fit
from experiments.mnist1d import report

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "config.py")
DATASETS = ("normal", "shuffled")
PROTOCOL_KEYS = ("batch_size", "num_steps", "max_grad_norm", "eval_batch_size", "validation_size",
                 "permutation_seed", "dataset_seed")


def variants(config: ml_collections.ConfigDict, model: str) -> list[str]:
    """One cell per encoding in ``config.positionals`` for an attention model whose block leaves its
    ``positional`` to the cell (the Transformer classifier); ``["-"]`` otherwise (ViT-1D keeps its own)."""
    if get_model_spec(model).attention and "positional" not in config[model]:
        return sweep.names(config.positionals)
    return ["-"]


def model_fields(config: ml_collections.ConfigDict, model: str, variant: str) -> dict[str, Any]:
    fields = config[model].to_dict()
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    if variant != "-":
        fields["positional"] = variant
    return fields


def train_sizes(config: ml_collections.ConfigDict) -> list[int]:
    return sweep.numbers(config.train_sizes, int, "train_sizes")


def cells(config: ml_collections.ConfigDict) -> list[sweep.Cell]:
    return sweep.grid(model=sweep.names(config.models), variant=lambda f: variants(config, f["model"]),
                      dataset=sweep.names(config.datasets), train_size=train_sizes(config),
                      lr=lambda f: sweep.names(config.learning_rates[f["model"]]),
                      seed=range(config.first_seed, config.first_seed + config.num_seeds))


def validate(config: ml_collections.ConfigDict) -> None:
    """Resolves every name and builds every model config; raises ValueError/TypeError otherwise."""
    if config.num_seeds < 1:
        raise ValueError(f"num_seeds must be >= 1, got {config.num_seeds}")
    if not 0 <= config.validation_size < NUM_TRAIN:
        raise ValueError(f"validation_size must be in [0, {NUM_TRAIN}), got {config.validation_size}")
    sizes = train_sizes(config)
    available = NUM_TRAIN - config.validation_size
    if not sizes or any(not 1 <= s <= available for s in sizes):
        raise ValueError(f"train_sizes must be in [1, {available}] (4000 minus validation_size), got {sizes}")
    for key in ("batch_size", "eval_batch_size", "num_steps", "log_every"):
        if config[key] < (0 if key == "num_steps" else 1):
            raise ValueError(f"{key} must be positive, got {config[key]}")
    datasets = sweep.names(config.datasets)
    if not datasets:
        raise ValueError("config.datasets lists no dataset")
    sweep.check_names("dataset", datasets, DATASETS)
    models = sweep.check_models(sweep.names(config.models), config, config.learning_rates)
    for model in models:
        for lr in sweep.names(config.learning_rates[model]):
            make_optimizer(float(lr), config.max_grad_norm)
    for p in sweep.names(config.positionals):
        get_positional(p)
    for model in models:
        for variant in variants(config, model):
            if model_kind(model, model_fields(config, model, variant)) != "classifier":
                raise ValueError(f"model {model!r} must be a classifier ([B, L] -> [B, C]); set its pooling")


def cell_config(config: ml_collections.ConfigDict, cell: sweep.Cell) -> dict[str, Any]:
    return {"protocol": {k: config[k] for k in PROTOCOL_KEYS},
            "model": model_fields(config, cell["model"], cell["variant"])}


def _batch(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    n = len(y)
    return {"inputs": x, "targets": y, "loss_mask": np.ones(n, np.float32),
            "seq_lengths": np.full(n, x.shape[1], np.int32)}


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int):
    """Fixed-shape batches over all of ``x``/``y``; the last is padded with unscored rows."""
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        b = _batch(xb, yb)
        pad = batch_size - len(yb)
        if pad:
            b = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in b.items()}
            b["seq_lengths"][-pad:] = x.shape[1]
        yield b


def run_cell(cell: sweep.Cell, config: ml_collections.ConfigDict, context: sweep.Context) -> dict[str, Any]:
    """Trains and evaluates one cell; returns its metrics."""
    # The subset depends on (train_size, seed) only: every model and both datasets see the same examples.
    subset_seed = int(cell.rng("subset", ("train_size", "seed")).integers(2**31))
    data = load_mnist1d(cell["dataset"] == "shuffled", seed=config.dataset_seed, train_size=cell["train_size"],
                        subset_seed=subset_seed, validation_size=config.validation_size,
                        permutation_seed=config.permutation_seed)
    fields = model_fields(config, cell["model"], cell["variant"])
    model = build_model(cell["model"], NUM_CLASSES, fields)
    # Init and batch order do not depend on the dataset either: normal and shuffled runs of a seed are
    # paired, so a position-blind model (Transformer with no encoding, mean pooling) sees the same thing.
    init_key = cell.key("init", ("model", "variant", "train_size", "lr", "seed"))
    state = create_train_state(model, init_key, jnp.zeros((1, SEQ_LENGTH), jnp.float32),
                               make_optimizer(float(cell["lr"]), config.max_grad_norm))
    num_params = count_params(state.params)
    x, y = data["x"], data["y"]
    train_rng = cell.rng("batches", ("train_size", "seed"))
    mesh = data_mesh(config.mesh_data)

    def batch(_):
        idx = train_rng.integers(0, len(y), config.batch_size)
        return _batch(x[idx], y[idx])

    t0 = time.perf_counter()
    with open(context.log_path(cell), "w", encoding="utf-8") as log_file:
        steps_key = cell.key("steps", ("model", "variant", "train_size", "lr", "seed"))
        state, history = fit(state, batch, config.num_steps, rng=steps_key, mesh=mesh,
                             log_every=config.log_every, log_file=log_file,
                             # Checkpoints (--config.checkpoint_every) save train_rng's position: a resumed
                             # cell draws the same batches.
                             data_rng=train_rng, **context.fit_options(cell))
    train_seconds = time.perf_counter() - t0
    train = evaluate(state, eval_batches(x, y, config.eval_batch_size), mesh=mesh)
    held_out = "val" if config.validation_size else "test"
    scored = evaluate(state, eval_batches(data[f"x_{held_out}"], data[f"y_{held_out}"], config.eval_batch_size),
                      mesh=mesh)
    return {
        "train_accuracy": train["accuracy"], "train_loss": train["loss"],
        f"{held_out}_accuracy": scored["accuracy"], f"{held_out}_loss": scored["loss"],
        "final_train_loss": history[-1]["loss"] if history else None,
        "num_params": num_params,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - t0 - train_seconds,
    }


EXPERIMENT = sweep.Experiment(
    name="mnist1d", cells=cells, run_cell=run_cell, validate=validate, cell_config=cell_config,
    report=report.write_report, describe=describe_fit)
