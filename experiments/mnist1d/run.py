"""MNIST-1D (Greydanus & Kobak): which inductive biases need the order of positions, and how many examples.

A cell is (model, variant, dataset, train_size, [recipe,] lr, seed): ``variant`` is the Transformer classifier's
positional encoding (``"-"`` otherwise), ``dataset`` ``normal`` or ``shuffled`` (one fixed permutation of the 40
positions), ``recipe`` an ``"optimizer+schedule"`` of ``config.recipes`` (presets without it: the config's recipe).
Subset, init and batch order depend on neither the dataset nor the recipe: those runs of a seed are paired.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from attnjax import sweep
from attnjax.sweep.training import optimizer_for, recipe, recipe_fingerprint
from attnjax.data.batching import fixed_size_batches
from attnjax.data.mnist1d import NUM_CLASSES, NUM_TRAIN, SEQ_LENGTH, load_mnist1d
from attnjax.nn import build_model, count_params, get_model_spec
from attnjax.ops.positional import POSITIONAL
from attnjax.parallel.mesh import data_mesh
from attnjax.sweep.report import describe_fit
from attnjax.train import create_train_state, evaluate
from experiments.mnist1d import report

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "config.py")
DATASETS = ("normal", "shuffled")
BATCH_ORDERS = ("random", "cycle")
PROTOCOL_KEYS = ("batch_size", "num_steps", "max_grad_norm", "eval_batch_size", "validation_size",
                 "permutation_seed", "dataset_seed")


def variants(config: ConfigDict, model: str) -> list[str]:
    """One cell per encoding for an attention model whose block leaves ``positional`` to the cell."""
    per_cell = get_model_spec(model).attention and "positional" not in config[model]
    return sweep.names(config.positionals) if per_cell else ["-"]


def model_fields(config: ConfigDict, model: str, variant: str) -> dict[str, Any]:
    """The model's config block, with the cell's positional encoding unless ``variant`` is ``"-"``."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in config[model].to_dict().items()}
    return fields if variant == "-" else {**fields, "positional": variant}


def cells(config: ConfigDict) -> list[sweep.Cell]:
    """model x variant x dataset x train_size x [the model's recipes x] its lrs x seed."""
    recipes = {"recipe": lambda f: sweep.names(config.recipes[f["model"]])} if "recipes" in config else {}
    return sweep.grid(model=sweep.names(config.models), variant=lambda f: variants(config, f["model"]),
                      dataset=sweep.names(config.datasets),
                      train_size=sweep.numbers(config.train_sizes, int, "train_sizes"), **recipes,
                      lr=lambda f: sweep.names(config.learning_rates[f["model"]]),
                      seed=range(config.first_seed, config.first_seed + config.num_seeds))


def validate(config: ConfigDict) -> None:
    """Resolves every name and builds every model config; raises ValueError/TypeError otherwise."""
    sweep.check_ints(config, num_seeds=1, batch_size=1, eval_batch_size=1, num_steps=0, log_every=1)
    sweep.numbers(config.validation_size, int, "validation_size", low=0, high=NUM_TRAIN - 1)
    sweep.numbers(config.train_sizes, int, "train_sizes", low=1, high=NUM_TRAIN - config.validation_size)
    sweep.check_names("dataset", sweep.names(config.datasets), DATASETS, key="datasets")
    sweep.check_names("batch_order", [config.batch_order], BATCH_ORDERS)
    models = sweep.check_models(sweep.names(config.models), config, config.learning_rates, config.get("recipes"))
    sweep.check_names("positional encoding", sweep.names(config.positionals), POSITIONAL)
    sweep.check_recipes(config, models, config.get("recipes"))
    sweep.check_kind("classifier", {m: [model_fields(config, m, v) for v in variants(config, m)] for m in models})


def cell_config(config: ConfigDict, cell: sweep.Cell) -> dict[str, Any]:
    """What determines ``cell``'s result (its fingerprint): the protocol keys and its model's fields (the keys added
    since results were committed only where they differ from the defaults that reproduce those)."""
    name = cell.as_dict().get("recipe")
    later = {"recipe": recipe(config, cell["lr"], name).to_dict()} if name else recipe_fingerprint(config)
    if config.batch_order != "random":
        later["batch_order"] = config.batch_order
    return {"protocol": {k: config[k] for k in PROTOCOL_KEYS} | later,
            "model": sweep.fingerprint_fields(model_fields(config, cell["model"], cell["variant"]))}


def batches(x: np.ndarray, y: np.ndarray, size: int) -> list[dict[str, np.ndarray]]:
    """``x`` [N, 40] and labels ``y`` [N] as fixed-shape batches of ``size``; the last is padded with unscored rows."""
    return fixed_size_batches({"inputs": x, "targets": y, "loss_mask": np.ones(len(y), np.float32),
                               "seq_lengths": np.full(len(y), x.shape[1], np.int32)}, size)


def batch_indices(config: ConfigDict, step: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """The ``[batch_size]`` training examples of ``step`` (of ``n``): drawn from ``rng`` (``random``), or the
    reference's ``x[bix:bix + batch_size]`` with ``bix = step * batch_size mod n`` (``cycle``)."""
    if config.batch_order == "random":
        return rng.integers(0, n, config.batch_size)
    return (step * config.batch_size + np.arange(config.batch_size)) % n


def run_cell(cell: sweep.Cell, config: ConfigDict, context: sweep.Context) -> dict[str, Any]:
    """Trains and evaluates one cell; returns its metrics."""
    # The subset depends on (train_size, seed) only: every model and both datasets see the same examples.
    subset_seed = int(cell.rng("subset", ("train_size", "seed")).integers(2**31))
    data = load_mnist1d(cell["dataset"] == "shuffled", seed=config.dataset_seed, train_size=cell["train_size"],
                        subset_seed=subset_seed, validation_size=config.validation_size,
                        permutation_seed=config.permutation_seed)
    model = build_model(cell["model"], NUM_CLASSES, model_fields(config, cell["model"], cell["variant"]))
    # Init and batch order do not depend on the dataset: normal and shuffled runs of a seed are paired.
    paired = ("model", "variant", "train_size", "lr", "seed")
    state = create_train_state(model, cell.key("init", paired), jnp.zeros((1, SEQ_LENGTH), jnp.float32),
                               optimizer_for(config, cell["lr"], cell.as_dict().get("recipe")))
    x, y, mesh = data["x"], data["y"], data_mesh(config.mesh_data)
    train_rng = cell.rng("batches", ("train_size", "seed"))
    held = "val" if config.validation_size else "test"
    scored = batches(data[f"x_{held}"], data[f"y_{held}"], config.eval_batch_size)

    def batch(step):
        idx = batch_indices(config, step, len(y), train_rng)
        return batches(x[idx], y[idx], config.batch_size)[0]

    t0 = time.perf_counter()
    # data_rng: checkpoints save train_rng's position, so a resumed cell draws the same batches.
    state, history = context.fit(cell, state, batch, config.num_steps, rng=cell.key("steps", paired), mesh=mesh,
                                 log_every=config.log_every, data_rng=train_rng,
                                 # A validation split is scored at every log record: the pilot's learning curves.
                                 validate=(lambda s: evaluate(s, scored, mesh=mesh)) if held == "val" else None)
    train_seconds = time.perf_counter() - t0
    train = evaluate(state, batches(x, y, config.eval_batch_size), mesh=mesh)
    scored = evaluate(state, scored, mesh=mesh)
    # Per log record: step, then the training batches' accuracy over the window (and the validation accuracy).
    curve = [[r["step"], round(r["accuracy"], 4), *[round(r[k], 4) for k in ("val_accuracy",) if k in r]]
             for r in history]
    return {"train_accuracy": train["accuracy"], "train_loss": train["loss"],
            f"{held}_accuracy": scored["accuracy"], f"{held}_loss": scored["loss"], "curve": curve,
            "final_train_loss": history[-1]["loss"] if history else None, "num_params": count_params(state.params),
            "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t0 - train_seconds}


EXPERIMENT = sweep.Experiment(
    name="mnist1d", cells=cells, run_cell=run_cell, validate=validate, cell_config=cell_config,
    report=report.write_report, describe=describe_fit)
