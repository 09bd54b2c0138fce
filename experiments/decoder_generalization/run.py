"""Length generalization of decoder-only models (issue 26; Kazemnejad et al. 2023, Zhou et al. 2024): each task
as next-token prediction (input, separator, answer, END), trained on short inputs and tested on longer ones.

A cell (task, model, variant, recipe, lr, seed) trains teacher-forced, with the loss on the answer and END only,
until it fits held-out examples of its training lengths 1..N (free-running), stops rising, or runs out of steps
(the encoder study's train-to-fit); then it is scored at every length 1..M, per-token and exact match, each
teacher-forced and free-running (greedy decoding from the key/value cache): :mod:`attnjax.sweep.decoding`.
``variant``: ``attention+positional[+randomized]`` for ``transformer_lm``, ``-`` for LSTM/GRU.

    python -m experiments.decoder_generalization [--workdir DIR] [--config=...config.py:cpu_decoder] [--config.x=y]
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from attnjax import sweep
from attnjax.data import autoregressive
from attnjax.data.tasks import ALL_TASKS, get_task
from attnjax.nn import count_params, get_model_spec, model_config
from attnjax.nn.kv_cache import decode_rule
from attnjax.ops.positional import POSITIONAL, RANDOMIZED_EVAL
from attnjax.ops.registry import ATTENTION
from attnjax.parallel.mesh import data_mesh
from attnjax.sweep import decoding
from attnjax.sweep.fitting import fit_metrics, train_to_fit
from attnjax.sweep.training import optimizer_for, stop_rule
from attnjax.train import create_train_state, fit, make_train_step
from experiments.decoder_generalization import report
from experiments.decoder_generalization.config import lengths
from experiments.length_generalization import run as encoder

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "config.py")
# Config keys that fix how every cell trains and is scored (with the cell's own lengths: cell_config).
PROTOCOL_KEYS = ("per_example_lengths", "batch_size", "num_steps", "eval_batch_size", "eval_bucket",
                 "randomized_max_len", "randomized_eval", "validate_every", "val_batch_size")


def variants(config: ml_collections.ConfigDict, model: str) -> list[str]:
    """The encoder study's variants (every attention x encoding x randomized), then ``config.mechanisms``."""
    extra = sweep.names(config.mechanisms) if get_model_spec(model).attention else []
    return encoder.variants(config, model) + extra


def cells(config: ml_collections.ConfigDict) -> list[sweep.Cell]:
    """The encoder study's grid (task x model x variant x recipe x lr x seed) over :func:`variants`."""
    return encoder.cells(config, variants)


def validate(config: ml_collections.ConfigDict) -> None:
    """Resolves every name, length and model (each must decode from a cache); raises ValueError/TypeError."""
    sweep.check_ints(config, num_seeds=1, validate_every=1, val_batch_size=1, eval_batch_size=1, micro_batches=1)
    if config.batch_size % config.micro_batches:
        raise ValueError(f"micro_batches={config.micro_batches} must divide batch_size={config.batch_size}")
    tasks = sweep.names(config.tasks)
    mechanisms = [m.split("+") for m in sweep.names(config.mechanisms)]
    if any(len(m) != 2 for m in mechanisms):
        raise ValueError(f"config.mechanisms entries are attention+positional, got {config.mechanisms!r}")
    for kind, given, valid in [
            ("task", tasks, ALL_TASKS), ("attention", sweep.names(config.attentions), ATTENTION),
            ("positional encoding", sweep.names(config.positionals), POSITIONAL),
            ("mechanism attention", [m[0] for m in mechanisms], ATTENTION),
            ("mechanism positional encoding", [m[-1] for m in mechanisms], POSITIONAL),
            ("randomized value", sweep.names(config.randomized), ["false", "true"]),
            ("randomized_eval", [config.randomized_eval], RANDOMIZED_EVAL),
            ("compute_dtype", [config.compute_dtype], encoder.COMPUTE_DTYPES)]:
        sweep.check_names(kind, given, valid)
    for task in tasks:
        n, m = lengths(config, task)
        if not 1 <= n < m:
            raise ValueError(f"{task}: need 1 <= N < M (train_max_length, test_max_length), got {n} and {m}")
        get_task(task).sample(np.random.default_rng(0), 1, m)  # the task's own limits (hint symbols)
    models = sweep.check_models(sweep.names(config.models), config, config.learning_rates, config.recipes)
    sweep.check_recipes(config, models, config.recipes)
    stop_rule(config)
    fields = {model: [encoder.model_fields(config, model, v) for v in variants(config, model)] for model in models}
    sweep.check_kind("sequence", fields)
    for model, configs in fields.items():
        for variant, built in zip(variants(config, model), (model_config(model, f) for f in configs)):
            if get_model_spec(model).attention:
                decode_rule(built.attention)  # an attention without a cached form is refused here
                if built.positions_from_end:
                    raise ValueError(f"{model} {variant}: positions_from_end cannot decode token by token")
            elif built.bidirectional:
                raise ValueError(f"model {model!r} must be causal to write its answer: bidirectional=False")


def cell_config(config: ml_collections.ConfigDict, cell: sweep.Cell) -> dict[str, Any]:
    """The encoder study's fingerprint rule over :data:`PROTOCOL_KEYS`, plus the cell's lengths."""
    determined = encoder.cell_config(config, cell, keys=PROTOCOL_KEYS)
    determined["protocol"]["lengths"] = list(lengths(config, cell["task"]))
    return determined


def run_cell(cell: sweep.Cell, config: ml_collections.ConfigDict, context: sweep.Context) -> dict[str, Any]:
    """Trains one cell to fit (or to a flat curve, or the budget) and scores it at every length; returns its
    metrics (:func:`attnjax.sweep.decoding.length_scores`, the fit record, timings)."""
    task, (n, m) = get_task(cell["task"]), lengths(config, cell["task"])
    model = encoder.build(config, cell, autoregressive.vocab_size(task))  # predicts the next token of any kind
    example = jnp.zeros((1, 1, autoregressive.vocab_size(task)), jnp.float32)
    state = create_train_state(model, cell.key("init"), example, optimizer_for(config, cell["lr"], cell["recipe"]))
    # Data streams depend on (task, seed) only, named as the encoder study's: the same examples in both protocols.
    train_rng, mesh, t0 = cell.rng("train_data", ("task", "seed")), data_mesh(config.mesh_data), time.perf_counter()
    rule, options = stop_rule(config), context.fit_options(cell)
    held_out = decoding.validation(model, task, cell.rng("val_data", ("task", "seed")), n, config.val_batch_size,
                                   rng=cell.key("val_positions"))
    scores = functools.partial(decoding.length_scores, model, task=task, n=n, m=m, batch_size=config.eval_batch_size,
                               bucket=config.eval_bucket, rng=cell.key("eval_positions"))

    def train(state, num_steps, stop, options):
        return fit(state, lambda _: autoregressive.training_batch(task, train_rng, config.batch_size, n,
                                                                  per_example_lengths=config.per_example_lengths),
                   num_steps, rng=cell.key("steps"), mesh=mesh, log_every=config.validate_every, log_file=log_file,
                   step_fn=make_train_step(micro_batches=config.micro_batches), validate=held_out, stop=stop,
                   data_rng=train_rng, **options)  # a resumed cell draws the same batches

    with open(context.log_path(cell), "w", encoding="utf-8") as log_file:
        state, history, at_fit = train_to_fit(train, state, config.num_steps, rule, options, lambda s: scores(
            s.params, data_rng=cell.rng("eval_data", ("task", "seed")), in_full=False))
    train_seconds = time.perf_counter() - t0
    final = scores(state.params, data_rng=cell.rng("eval_data", ("task", "seed")))
    return {**({"at_fit": at_fit} if at_fit else {}), **final, "final_train_loss": history[-1]["loss"],
            "num_params": count_params(state.params), **fit_metrics(history, rule), "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - t0 - train_seconds}


EXPERIMENT = sweep.Experiment(
    name="decoder_generalization", cells=cells, run_cell=run_cell, validate=validate, cell_config=cell_config,
    report=report.write_report,
    describe=lambda r: (f"in-dist {100 * r['train_accuracy']:.1f}%, OOD {100 * r['ood_score']:.1f}% (exact "
                        f"{100 * r['ood_greedy_exact']:.1f}%), {r['stop_reason']} at step {r['steps_trained']:,}"))
