"""Length generalization (Delétang et al. 2022; Ruoss et al. 2023): train on short inputs, test on longer ones.

A cell is (task, model, variant, lr, seed); ``variant`` names an attention model's attention, positional
encoding and ``+randomized`` (``"-"`` for recurrent models). Each cell trains on input lengths 1..N
(one length per batch, padded to one shape so the step compiles once), then scores per-token accuracy
at the blank positions (under the task's accuracy mask) on every length 1..M with fresh examples.
``train_accuracy`` is the mean over lengths 1..N (in-distribution, the validation score that picks
learning rates), ``ood_score`` the mean over N+1..M.

Long cells save checkpoints with ``--config.checkpoint_every=N``; rerunning the same command after a preemption
skips finished cells and resumes the interrupted one from its newest checkpoint, with the same result as an
uninterrupted run. ``--config.compute_dtype=bfloat16`` runs attention models in bfloat16 (float32 parameters,
optimizer state and logits); ``--config.micro_batches=k`` accumulates gradients over ``k`` pieces of a batch.

    python -m experiments.length_generalization [--workdir DIR] [--config.num_steps=3000 ...]
    python -m experiments.length_generalization --config=experiments/length_generalization/config.py:cpu_grid \
        --config.only="task=parity_check|even_pairs"
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from attnjax import data
from attnjax.nn import build_model, count_params, get_model_spec, model_kind, sown_attention_weights
from attnjax.ops.positional import RANDOMIZED_EVAL, get_positional
from attnjax.ops.registry import ATTENTION
from attnjax.parallel.mesh import data_mesh
from attnjax.sweep.training import recipe, recipe_fingerprint
from attnjax.train import accumulating_train_step, create_train_state, evaluate_lengths, fit, make_recipe_optimizer
from attnjax import sweep
from experiments.length_generalization import report

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "config.py")
# Config keys that fix how every cell trains and is scored (part of each cell's fingerprint).
PROTOCOL_KEYS = ("train_max_length", "test_max_length", "per_example_lengths", "batch_size", "num_steps",
                 "max_grad_norm", "eval_batch_size", "eval_bucket", "randomized_max_len", "randomized_eval",
                 "attention_map_task")
COMPUTE_DTYPES = ("float32", "bfloat16")  # config.compute_dtype: parameters and optimizer state stay float32


def variants(config: ml_collections.ConfigDict, model: str) -> list[str]:
    """``attention+positional[+randomized]`` names for an attention model, ``["-"]`` otherwise.

    ``nope`` has no positions to randomize, so it only runs standard.
    """
    if not get_model_spec(model).attention:
        return ["-"]
    out = []
    for attention in sweep.names(config.attentions):
        for positional in sweep.names(config.positionals):
            for randomized in sweep.names(config.randomized):
                if randomized == "true" and get_positional(positional).kind == "none":
                    continue
                out.append(f"{attention}+{positional}" + ("+randomized" if randomized == "true" else ""))
    return out


def model_fields(config: ml_collections.ConfigDict, model: str, variant: str) -> dict[str, Any]:
    """The model's config fields for one cell: its config block, what the variant sets and the compute dtype."""
    fields = config[model].to_dict()
    # Only a non-default dtype is written, so float32 cells keep the fingerprints they had before the switch.
    if config.get("compute_dtype", "float32") != "float32":
        fields["dtype"] = config.compute_dtype
    if variant != "-":
        attention, positional, *rest = variant.split("+")
        fields.update(attention=attention, positional=positional, randomized_positions=bool(rest),
                      randomized_eval=config.randomized_eval, max_len=config.randomized_max_len)
        # The Delétang preset numbers sin/cos positions from the end (as their code does); that
        # numbering exists for the standard sinusoidal encoding only.
        if positional != "sinusoidal" or rest:
            fields["positions_from_end"] = False
    return fields


def cells(config: ml_collections.ConfigDict) -> list[sweep.Cell]:
    return sweep.grid(task=sweep.names(config.tasks), model=sweep.names(config.models),
                      variant=lambda f: variants(config, f["model"]),
                      lr=lambda f: sweep.names(config.learning_rates[f["model"]]),
                      seed=range(config.first_seed, config.first_seed + config.num_seeds))


def validate(config: ml_collections.ConfigDict) -> None:
    """Resolves every name and builds every model config; raises ValueError/TypeError otherwise."""
    n, m = config.train_max_length, config.test_max_length
    if not 1 <= n < m:
        raise ValueError(f"need 1 <= train_max_length < test_max_length, got {n} and {m}")
    if config.num_seeds < 1:
        raise ValueError(f"num_seeds must be >= 1, got {config.num_seeds}")
    sweep.check_names("task", sweep.names(config.tasks), data.TASKS)
    if config.attention_map_task:
        sweep.check_names("attention_map_task", [config.attention_map_task], data.TASKS)
    models = sweep.check_models(sweep.names(config.models), config, config.learning_rates)
    for model in models:
        for lr in sweep.names(config.learning_rates[model]):
            make_recipe_optimizer(recipe(config, lr), config.num_steps)
    sweep.check_names("attention", sweep.names(config.attentions), ATTENTION)
    for p in sweep.names(config.positionals):
        get_positional(p)
    sweep.check_names("randomized value", sweep.names(config.randomized), ["false", "true"])
    sweep.check_names("randomized_eval", [config.randomized_eval], RANDOMIZED_EVAL)
    dtype = config.get("compute_dtype", "float32")
    sweep.check_names("compute_dtype", [dtype], COMPUTE_DTYPES)
    no_dtype = [m for m in models if "dtype" not in {f.name for f in dataclasses.fields(get_model_spec(m).config)}]
    if dtype != "float32" and no_dtype:
        raise ValueError(f"compute_dtype={dtype!r} needs models with a computation dtype (the attention models); "
                         f"{no_dtype} have none: drop them from config.models or use compute_dtype='float32'")
    micro = config.get("micro_batches", 1)
    if not isinstance(micro, int) or micro < 1 or config.batch_size % micro:
        raise ValueError(f"micro_batches must be an int >= 1 dividing batch_size={config.batch_size}, got {micro!r}")
    for model in models:
        for variant in variants(config, model):
            if model_kind(model, model_fields(config, model, variant)) != "sequence":
                raise ValueError(f"model {model!r} must map [B, L, V] to per-position logits here (pooling=None)")


def cell_config(config: ml_collections.ConfigDict, cell: sweep.Cell) -> dict[str, Any]:
    protocol = {k: config[k] for k in PROTOCOL_KEYS}
    if config.get("micro_batches", 1) != 1:  # only when set: cells without it keep their fingerprints
        protocol["micro_batches"] = config.micro_batches
    protocol.update(recipe_fingerprint(config))  # likewise, only the recipe keys that differ from the defaults
    return {"protocol": protocol, "model": model_fields(config, cell["model"], cell["variant"])}


def _eval_pad(task: data.Task, n: int, config: ml_collections.ConfigDict) -> int:
    m, bucket = config.test_max_length, config.eval_bucket
    top = m if bucket <= 0 else min(-(-n // bucket) * bucket, m)
    return data.padded_length(task, top)


def run_cell(cell: sweep.Cell, config: ml_collections.ConfigDict, context: sweep.Context) -> dict[str, Any]:
    """Trains and evaluates one cell; returns its metrics."""
    task = data.get_task(cell["task"])
    n, m = config.train_max_length, config.test_max_length
    model = build_model(cell["model"], task.output_size, model_fields(config, cell["model"], cell["variant"]))
    # Parameter shapes do not depend on the length: a length-1 example shares one compiled initializer.
    example = jnp.zeros((1, 1, data.vocab_size(task)), jnp.float32)
    state = create_train_state(model, cell.key("init"), example,
                               make_recipe_optimizer(recipe(config, cell["lr"]), config.num_steps))
    # Data streams depend on (task, seed) only: every model of a seed sees the same examples.
    train_rng = cell.rng("train_data", ("task", "seed"))
    mesh = data_mesh(config.mesh_data)
    t0 = time.perf_counter()
    with open(context.log_path(cell), "w", encoding="utf-8") as log_file:
        state, history = fit(
            state, lambda _: data.training_batch(task, train_rng, config.batch_size, n,
                                                 per_example_lengths=config.per_example_lengths),
            config.num_steps, rng=cell.key("steps"), mesh=mesh, log_every=config.log_every, log_file=log_file,
            step_fn=accumulating_train_step(config.get("micro_batches", 1)),
            # Checkpoints (--config.checkpoint_every) save train_rng's position: a resumed cell draws the same batches.
            data_rng=train_rng, **context.fit_options(cell))
    train_seconds = time.perf_counter() - t0
    eval_rng = cell.rng("eval_data", ("task", "seed"))
    per_length = evaluate_lengths(
        state, lambda k: [data.length_batch(task, eval_rng, config.eval_batch_size, k, _eval_pad(task, k, config))],
        range(1, m + 1), mesh=mesh, rng=cell.key("eval_positions"))
    acc = {k: v["accuracy"] for k, v in per_length.items()}
    extra = {}
    if (cell["task"] == config.attention_map_task and get_model_spec(cell["model"]).attention
            and cell["seed"] == config.first_seed):
        extra["attention_maps"] = attention_maps(cell, config, state.params, task)
    return {
        **extra,
        "train_accuracy": float(np.mean([acc[k] for k in range(1, n + 1)])),
        "ood_score": float(np.mean([acc[k] for k in range(n + 1, m + 1)])),
        "accuracy_per_length": {str(k): a for k, a in acc.items()},
        "final_train_loss": history[-1]["loss"] if history else None,
        "num_params": count_params(state.params),
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - t0 - train_seconds,
    }


def attention_maps(cell: sweep.Cell, config: ml_collections.ConfigDict, params: Any, task: data.Task
                   ) -> dict[str, list[list[float]]]:
    """Last-layer attention weights (mean over heads) of one example at the longest training length and the
    longest test length: ``{str(length): [P, P]}``, P = input plus blank positions."""
    fields = {**model_fields(config, cell["model"], cell["variant"]), "sow_attention_weights": True}
    model = build_model(cell["model"], task.output_size, fields)
    rng, maps = cell.rng("attention_maps", ("task", "seed")), {}
    for length in (config.train_max_length, config.test_max_length):
        batch = data.length_batch(task, rng, 1, length)
        _, sown = model.apply({"params": params}, batch["inputs"], seq_lengths=batch["seq_lengths"], train=False,
                              rngs={"positions": cell.key("attention_maps")}, mutable=["intermediates"])
        last = sown_attention_weights(sown["intermediates"])[-1]  # [1, N, P, P]
        maps[str(length)] = np.round(np.asarray(last[0].mean(0)), 4).tolist()
    return maps


EXPERIMENT = sweep.Experiment(
    name="length_generalization", cells=cells, run_cell=run_cell, validate=validate, cell_config=cell_config,
    report=report.write_report,
    describe=lambda r: f"in-dist {100 * r['train_accuracy']:.1f}%, OOD {100 * r['ood_score']:.1f}%")

