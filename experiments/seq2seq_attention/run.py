"""Attention vs no attention in seq2seq (Bahdanau et al. 2014): accuracy against source length.

A cell is (task, model, variant, lr, seed); ``variant`` is the RNN encoder-decoder's attention (``none`` =
RNNencdec, ``additive`` = RNNsearch, ``multiplicative`` = Luong) and ``"-"`` for the Transformer. Each cell
trains with teacher forcing on sources of length 1..N (drawn per example, padded to N so the step compiles
once), then scores fresh examples at every length 1..M: teacher-forced token accuracy, and greedy-decoded
(``generate``) token and whole-sequence accuracy. ``in_*`` metrics average the per-length scores over 1..N,
``ood_*`` over N+1..M. The training and evaluation streams depend on (task, seed) only, so every model of a
seed sees the same examples and "attention minus no attention" is paired by seed.

    python -m experiments.seq2seq_attention [--workdir DIR] [--config.num_steps=500 ...]
    python -m experiments.seq2seq_attention --config=experiments/seq2seq_attention/config.py:lr_pilot \
        --workdir results/seq2seq_lr_pilot
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from attnjax.data.seq2seq import SEQ2SEQ_TASKS, get_seq2seq_task, seq2seq_length_batch, seq2seq_training_batch
from attnjax.nn import build_model, count_params, model_config, model_kind
from attnjax.nn.rnn_seq2seq import SEQ2SEQ_ATTENTION
from attnjax.parallel.mesh import data_mesh
from attnjax.train import create_train_state, evaluate_seq2seq_lengths, fit, make_optimizer, seq2seq_train_step
from attnjax import sweep
from experiments.seq2seq_attention import report

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "config.py")
RNN_MODEL = "rnn_seq2seq"  # one cell per attention kind in config.rnn_attentions
EVAL_SPLITS = ("test", "validation")
# Config keys that fix how every cell trains and is scored (part of each cell's fingerprint).
PROTOCOL_KEYS = ("alphabet_size", "train_max_length", "test_max_length", "eval_split", "eval_batch_size",
                 "eval_bucket", "batch_size", "num_steps", "max_grad_norm", "attention_map_task",
                 "attention_map_lengths", "first_seed")
METRICS = ("loss", "token_accuracy", "sequence_accuracy", "greedy_token_accuracy", "greedy_sequence_accuracy")


def variants(config: ml_collections.ConfigDict, model: str) -> list[str]:
    return sweep.names(config.rnn_attentions) if model == RNN_MODEL else ["-"]


def model_fields(config: ml_collections.ConfigDict, model: str, variant: str) -> dict[str, Any]:
    fields = config[model].to_dict()
    if variant != "-":
        fields["attention"] = variant
    return fields


def map_lengths(config: ml_collections.ConfigDict) -> list[int]:
    return sweep.numbers(config.attention_map_lengths, int, "attention_map_lengths")


def cells(config: ml_collections.ConfigDict) -> list[sweep.Cell]:
    return sweep.grid(task=sweep.names(config.tasks), model=sweep.names(config.models),
                      variant=lambda f: variants(config, f["model"]),
                      lr=lambda f: sweep.names(config.learning_rates[f["model"]]),
                      seed=range(config.first_seed, config.first_seed + config.num_seeds))


def validate(config: ml_collections.ConfigDict) -> None:
    """Resolves every name and builds every model config; raises ValueError/TypeError otherwise."""
    n, m = config.train_max_length, config.test_max_length
    if not isinstance(n, int) or not isinstance(m, int) or not 1 <= n <= m:
        raise ValueError(f"need ints 1 <= train_max_length <= test_max_length, got {n!r} and {m!r}")
    if config.alphabet_size < 2:
        raise ValueError(f"alphabet_size must be >= 2, got {config.alphabet_size}")
    if config.num_seeds < 1:
        raise ValueError(f"num_seeds must be >= 1, got {config.num_seeds}")
    for key in ("batch_size", "eval_batch_size", "log_every"):
        if config[key] < 1:
            raise ValueError(f"{key} must be >= 1, got {config[key]}")
    for key in ("num_steps", "eval_bucket"):
        if config[key] < 0:
            raise ValueError(f"{key} must be >= 0, got {config[key]}")
    tasks = sweep.names(config.tasks)
    if not tasks:
        raise ValueError("config.tasks lists no task")
    sweep.check_names("task", tasks, SEQ2SEQ_TASKS)
    sweep.check_names("eval_split", [config.eval_split], EVAL_SPLITS)
    if config.attention_map_task:
        sweep.check_names("attention_map_task", [config.attention_map_task], SEQ2SEQ_TASKS)
        bad = [k for k in map_lengths(config) if not 1 <= k <= m]
        if bad or not map_lengths(config):
            raise ValueError(f"attention_map_lengths must be in [1, test_max_length={m}], got "
                             f"{config.attention_map_lengths!r}")
    models = sweep.check_models(sweep.names(config.models), config, config.learning_rates)
    for model in models:
        for lr in sweep.names(config.learning_rates[model]):
            make_optimizer(float(lr), config.max_grad_norm)
    if RNN_MODEL in models:
        attentions = sweep.names(config.rnn_attentions)
        if not attentions:
            raise ValueError("config.rnn_attentions lists no attention kind")
        sweep.check_names("rnn attention", attentions, SEQ2SEQ_ATTENTION)
    for model in models:
        for variant in variants(config, model):
            fields = model_fields(config, model, variant)
            model_config(model, fields)  # unknown or bad fields fail here, before any cell runs
            if model_kind(model, fields) != "seq2seq":
                raise ValueError(f"model {model!r} must be a seq2seq model (source, target_inputs -> logits)")
            if "max_len" in fields and fields["max_len"] < m:
                raise ValueError(f"{model}.max_len={fields['max_len']} must cover test_max_length={m}")


def cell_config(config: ml_collections.ConfigDict, cell: sweep.Cell) -> dict[str, Any]:
    return {"protocol": {k: config[k] for k in PROTOCOL_KEYS},
            "model": model_fields(config, cell["model"], cell["variant"])}


def eval_pad(n: int, config: ml_collections.ConfigDict) -> int:
    """Padded length of evaluated length ``n``: ``M``, or the next multiple of ``eval_bucket`` (at most ``M``)."""
    m, bucket = config.test_max_length, config.eval_bucket
    return m if bucket <= 0 else min(-(-n // bucket) * bucket, m)


def _means(per_length: dict[int, dict[str, float]], lengths) -> dict[str, float]:
    return {k: float(np.mean([per_length[n][k] for n in lengths])) for k in METRICS}


def run_cell(cell: sweep.Cell, config: ml_collections.ConfigDict, context: sweep.Context) -> dict[str, Any]:
    """Trains and evaluates one cell; returns its metrics."""
    task = get_seq2seq_task(cell["task"])
    a, n, m = config.alphabet_size, config.train_max_length, config.test_max_length
    fields = model_fields(config, cell["model"], cell["variant"])
    model = build_model(cell["model"], a, fields)
    # Parameter shapes do not depend on the lengths: a length-1 example shares one compiled initializer.
    example = (jnp.zeros((1, 1, a), jnp.float32), jnp.zeros((1, 1), jnp.int32))
    tx = make_optimizer(float(cell["lr"]), config.max_grad_norm)
    state = create_train_state(model, cell.key("init"), example, tx)
    num_params = count_params(state.params)
    # Data streams depend on (task, seed) only: every model of a seed sees the same examples.
    train_rng = cell.rng("train_data", ("task", "seed"))
    mesh = data_mesh(config.mesh_data)
    t0 = time.perf_counter()
    with open(context.log_path(cell), "w", encoding="utf-8") as log_file:
        state, history = fit(state, lambda _: seq2seq_training_batch(task, train_rng, config.batch_size, n, a),
                             config.num_steps, rng=cell.key("steps"), mesh=mesh, log_every=config.log_every,
                             log_file=log_file, step_fn=seq2seq_train_step,
                             # Checkpoints (--config.checkpoint_every) save train_rng's position: a resumed
                             # cell draws the same batches.
                             data_rng=train_rng, **context.fit_options(cell))
    train_seconds = time.perf_counter() - t0
    eval_rng = cell.rng(f"{config.eval_split}_data", ("task", "seed"))
    per_length = evaluate_seq2seq_lengths(
        state, lambda k: [seq2seq_length_batch(task, eval_rng, config.eval_batch_size, k, eval_pad(k, config), a)],
        range(1, m + 1), mesh=mesh, rng=cell.key("eval_positions"))
    out: dict[str, Any] = {"eval_split": config.eval_split}
    out.update({f"in_{k}": v for k, v in _means(per_length, range(1, n + 1)).items()})
    if m > n:
        out.update({f"ood_{k}": v for k, v in _means(per_length, range(n + 1, m + 1)).items()})
    out["per_length"] = {str(k): {name: v[name] for name in METRICS} for k, v in per_length.items()}
    if (cell["task"] == config.attention_map_task and not (cell["model"] == RNN_MODEL and cell["variant"] == "none")
            and cell["seed"] == config.first_seed):
        out["attention_maps"] = attention_maps(cell, config, state.params)
    out.update(final_train_loss=history[-1]["loss"] if history else None,
               final_train_accuracy=history[-1]["accuracy"] if history else None,
               num_params=num_params, train_seconds=train_seconds,
               eval_seconds=time.perf_counter() - t0 - train_seconds)
    return out


def _cross_attention(model_name: str, intermediates: Any) -> tuple[np.ndarray, list[str]]:
    """The sown cross-attention weights of one example as ``([P, T, S], panel titles)``.

    RNN: the one decoder attention (``[B, T, S]``). Transformer: every decoder layer's cross-attention heads
    (``decoder/block_i/cross_attention``, ``[B, N, T, S]`` each), stacked layer-major.
    """
    if model_name == RNN_MODEL:
        (weights,) = intermediates["attention_weights"]
        return np.asarray(weights[:1]), ["decoder attention"]
    panels, titles = [], []
    blocks = intermediates["decoder"]
    for i in range(len(blocks)):
        (weights,) = blocks[f"block_{i}"]["cross_attention"]["attention_weights"]
        for h in range(weights.shape[1]):
            panels.append(np.asarray(weights[0, h]))
            titles.append(f"layer {i} head {h}")
    return np.stack(panels), titles


def attention_maps(cell: sweep.Cell, config: ml_collections.ConfigDict, params: Any) -> dict[str, Any]:
    """Cross-attention of one example per length in ``attention_map_lengths``, on the model's greedy output.

    The decoder is run teacher-forced on its own greedy tokens (``[begin, greedy[:-1]]``), which is exactly
    the computation ``generate`` does step by step, with ``sow_attention_weights`` on. Every length is padded
    to the longest one (source lengths mask the rest), so each model compiles two programs in all.

    Returns:
        ``{str(length): {"weights": [P, n, n], "titles": [P], "source": [n], "target": [n],
        "prediction": [n]}}`` (weights rounded to 4 decimals; P panels: one per head and layer).
    """
    task = get_seq2seq_task(cell["task"])
    a, lengths = config.alphabet_size, map_lengths(config)
    pad = max(lengths)
    fields = model_fields(config, cell["model"], cell["variant"])
    model = build_model(cell["model"], a, fields)
    sowing = build_model(cell["model"], a, {**fields, "sow_attention_weights": True})  # same parameters
    generate = jax.jit(lambda p, s, n: model.apply({"params": p}, s, n, max_length=pad, method="generate"))
    sow = jax.jit(lambda p, s, i, n: sowing.apply({"params": p}, s, i, source_lengths=n,
                                                  mutable=["intermediates"])[1]["intermediates"])
    rng, maps = cell.rng("attention_maps", ("task", "seed")), {}
    for length in lengths:
        b = seq2seq_length_batch(task, rng, 1, length, pad, a)
        tokens = np.asarray(generate(params, b["source"], b["source_lengths"]))
        inputs = np.concatenate([np.full((1, 1), a, np.int32), tokens[:, :-1]], axis=1)
        weights, titles = _cross_attention(cell["model"], jax.device_get(
            sow(params, b["source"], inputs, b["source_lengths"])))
        maps[str(length)] = {"weights": np.round(weights[:, :length, :length], 4).tolist(), "titles": titles,
                             "source": b["source"][0, :length].argmax(-1).tolist(),
                             "target": b["targets"][0, :length].tolist(), "prediction": tokens[0, :length].tolist()}
    return maps


def _describe(r: dict[str, Any]) -> str:
    text = (f"in-dist greedy token {100 * r['in_greedy_token_accuracy']:.1f}% "
            f"seq {100 * r['in_greedy_sequence_accuracy']:.1f}%")
    if "ood_greedy_token_accuracy" in r:
        text += (f", OOD token {100 * r['ood_greedy_token_accuracy']:.1f}% "
                 f"seq {100 * r['ood_greedy_sequence_accuracy']:.1f}%")
    return text


EXPERIMENT = sweep.Experiment(
    name="seq2seq_attention", cells=cells, run_cell=run_cell, validate=validate, cell_config=cell_config,
    report=report.write_report, describe=_describe)
