"""Attention vs no attention in seq2seq (Bahdanau et al. 2014): ``python -m experiments.seq2seq_attention``.

A cell (task, model, variant, lr, seed) trains with teacher forcing on lengths 1..N and scores fresh examples at
every length 1..M (``in_*``: mean over 1..N, ``ood_*``: over N+1..M); ``variant`` is the RNN's attention (``none``
= RNNencdec, ``additive`` = RNNsearch, ``multiplicative`` = Luong). Data depend on (task, seed): paired by seed.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from attnjax import sweep
from attnjax.sweep.training import optimizer_for, recipe_fingerprint
from attnjax.data.seq2seq import SEQ2SEQ_TASKS, get_seq2seq_task, seq2seq_length_batch, seq2seq_training_batch
from attnjax.nn import build_model, count_params, greedy_attention_weights
from attnjax.nn.rnn_seq2seq import SEQ2SEQ_ATTENTION
from attnjax.parallel.mesh import data_mesh
from attnjax.train import create_train_state, evaluate_seq2seq_lengths, seq2seq_train_step
from experiments.seq2seq_attention import report

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "config.py")
RNN_MODEL = "rnn_seq2seq"  # one cell per attention kind in config.rnn_attentions
PROTOCOL_KEYS = ("alphabet_size", "train_max_length", "test_max_length", "eval_split", "eval_batch_size",
                 "eval_bucket", "batch_size", "num_steps", "max_grad_norm", "attention_map_task",
                 "attention_map_lengths", "first_seed")
METRICS = ("loss", "token_accuracy", "sequence_accuracy", "greedy_token_accuracy", "greedy_sequence_accuracy")


def variants(config: ConfigDict, model: str) -> list[str]:
    """The RNN's attention kinds (one cell each), ``["-"]`` for another model."""
    return sweep.names(config.rnn_attentions) if model == RNN_MODEL else ["-"]


def model_fields(config: ConfigDict, model: str, variant: str) -> dict[str, Any]:
    """The model's config block, with the RNN's attention unless ``variant`` is ``"-"``."""
    return config[model].to_dict() | ({} if variant == "-" else {"attention": variant})


def cells(config: ConfigDict) -> list[sweep.Cell]:
    """task x model x variant x lr x seed."""
    return sweep.grid(task=sweep.names(config.tasks), model=sweep.names(config.models),
                      variant=lambda f: variants(config, f["model"]),
                      lr=lambda f: sweep.names(config.learning_rates[f["model"]]),
                      seed=range(config.first_seed, config.first_seed + config.num_seeds))


def validate(config: ConfigDict) -> None:
    """Resolves every name and builds every model config; raises ValueError/TypeError otherwise."""
    n, m = config.train_max_length, config.test_max_length
    if not isinstance(n, int) or not isinstance(m, int) or not 1 <= n <= m:
        raise ValueError(f"need ints 1 <= train_max_length <= test_max_length, got {n!r} and {m!r}")
    sweep.check_ints(config, alphabet_size=2, num_seeds=1, batch_size=1, eval_batch_size=1, log_every=1, num_steps=0,
                     eval_bucket=0)
    sweep.check_names("task", sweep.names(config.tasks), SEQ2SEQ_TASKS, key="tasks")
    sweep.check_names("eval_split", [config.eval_split], ("test", "validation"))
    if config.attention_map_task:
        sweep.check_names("attention_map_task", [config.attention_map_task], SEQ2SEQ_TASKS)
        sweep.numbers(config.attention_map_lengths, int, "attention_map_lengths", low=1, high=m)
    models = sweep.check_models(sweep.names(config.models), config, config.learning_rates)
    if RNN_MODEL in models:
        sweep.check_names("rnn attention", sweep.names(config.rnn_attentions), SEQ2SEQ_ATTENTION, key="rnn_attentions")
    sweep.check_recipes(config, models)
    fields = {model: [model_fields(config, model, v) for v in variants(config, model)] for model in models}
    sweep.check_kind("seq2seq", fields)
    for model in models:
        if (max_len := min(f.get("max_len", m) for f in fields[model])) < m:
            raise ValueError(f"{model}.max_len={max_len} must cover test_max_length={m}")


def cell_config(config: ConfigDict, cell: sweep.Cell) -> dict[str, Any]:
    """What determines ``cell``'s result (its fingerprint): the protocol keys and its model's fields."""
    return {"protocol": {k: config[k] for k in PROTOCOL_KEYS} | recipe_fingerprint(config),
            "model": sweep.fingerprint_fields(model_fields(config, cell["model"], cell["variant"]))}


def run_cell(cell: sweep.Cell, config: ConfigDict, context: sweep.Context) -> dict[str, Any]:
    """Trains and evaluates one cell; returns its metrics."""
    task, a = get_seq2seq_task(cell["task"]), config.alphabet_size
    n, m = config.train_max_length, config.test_max_length
    fields = model_fields(config, cell["model"], cell["variant"])
    example = (jnp.zeros((1, 1, a), jnp.float32), jnp.zeros((1, 1), jnp.int32))  # parameter shapes need no length
    state = create_train_state(build_model(cell["model"], a, fields), cell.key("init"), example,
                               optimizer_for(config, cell["lr"]))
    train_rng, mesh, t0 = cell.rng("train_data", ("task", "seed")), data_mesh(config.mesh_data), time.perf_counter()
    # data_rng: checkpoints save train_rng's position, so a resumed cell draws the same batches.
    batches = lambda _: seq2seq_training_batch(task, train_rng, config.batch_size, n, a)  # noqa: E731
    state, history = context.fit(cell, state, batches, config.num_steps, mesh=mesh, log_every=config.log_every,
                                 step_fn=seq2seq_train_step, data_rng=train_rng)
    train_seconds = time.perf_counter() - t0
    eval_rng, bucket = cell.rng(f"{config.eval_split}_data", ("task", "seed")), config.eval_bucket
    pad = lambda k: m if bucket <= 0 else min(-(-k // bucket) * bucket, m)  # noqa: E731 (evaluated length k, padded)
    per_length = evaluate_seq2seq_lengths(
        state, lambda k: [seq2seq_length_batch(task, eval_rng, config.eval_batch_size, k, pad(k), a)],
        range(1, m + 1), mesh=mesh, rng=cell.key("eval_positions"))
    out: dict[str, Any] = {"eval_split": config.eval_split}
    for prefix, lengths in (("in", range(1, n + 1)), ("ood", range(n + 1, m + 1))):
        if lengths:
            out.update({f"{prefix}_{k}": float(np.mean([per_length[i][k] for i in lengths])) for k in METRICS})
    out["per_length"] = {str(k): {name: v[name] for name in METRICS} for k, v in per_length.items()}
    if cell["task"] == config.attention_map_task and cell["variant"] != "none" and cell["seed"] == config.first_seed:
        out["attention_maps"] = attention_maps(
            cell["model"], fields, task, a, state.params,
            sweep.numbers(config.attention_map_lengths, int, "attention_map_lengths"),
            cell.rng("attention_maps", ("task", "seed")))
    return out | {"final_train_loss": history[-1]["loss"] if history else None,
                  "final_train_accuracy": history[-1]["accuracy"] if history else None,
                  "num_params": count_params(state.params), "train_seconds": train_seconds,
                  "eval_seconds": time.perf_counter() - t0 - train_seconds}


def attention_maps(model_name: str, fields: dict[str, Any], task: Any, alphabet_size: int, params: Any,
                   lengths: Sequence[int], rng: np.random.Generator) -> dict[str, Any]:
    """Cross-attention ``[P, n, n]`` of one example per length in ``lengths``, on the model's own greedy tokens
    (:func:`attnjax.nn.greedy_attention_weights`). Every length is padded to the longest, so each model compiles
    one program.

    Returns:
        ``{str(n): {"weights": [P, n, n], "titles": [P], "source", "target", "prediction": [n]}}``, weights
        rounded to 4 decimals; P panels: the RNN decoder's one attention, or every Transformer decoder layer's
        cross-attention heads, layer-major.
    """
    a, pad = alphabet_size, max(lengths)
    model = build_model(model_name, a, fields)
    # The RNN decoder's one attention; the Transformer decoder's cross-attention, not its self-attention.
    module = None if model_name == RNN_MODEL else "cross_attention"
    decode = jax.jit(lambda p, s, n: greedy_attention_weights(model, p, s, n, pad, module))
    maps = {}
    for length in lengths:
        b = seq2seq_length_batch(task, rng, 1, length, pad, a)
        tokens, layers = jax.device_get(decode(params, b["source"], b["source_lengths"]))
        layers = [w[0] for w in layers]
        if module is None:  # [T, S]
            weights, titles = layers[0][None], ["decoder attention"]
        else:  # [N, T, S] per decoder layer
            weights = np.concatenate(layers)
            titles = [f"layer {i} head {h}" for i, w in enumerate(layers) for h in range(len(w))]
        maps[str(length)] = {"weights": np.round(weights[:, :length, :length], 4).tolist(), "titles": titles,
                             "source": b["source"][0, :length].argmax(-1).tolist(),
                             "target": b["targets"][0, :length].tolist(), "prediction": tokens[0, :length].tolist()}
    return maps


def describe(r: dict[str, Any]) -> str:
    """The progress line: greedy token and sequence accuracy in distribution and OOD."""
    spans = [(p, name) for p, name in (("in", "in-dist greedy"), ("ood", "OOD")) if f"{p}_greedy_token_accuracy" in r]
    return ", ".join(f"{name} token {100 * r[f'{p}_greedy_token_accuracy']:.1f}% "
                     f"seq {100 * r[f'{p}_greedy_sequence_accuracy']:.1f}%" for p, name in spans)


EXPERIMENT = sweep.Experiment(
    name="seq2seq_attention", cells=cells, run_cell=run_cell, validate=validate, cell_config=cell_config,
    report=report.write_report, describe=describe)
