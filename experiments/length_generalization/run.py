"""Length generalization (Delétang et al. 2022; Ruoss et al. 2023): train on short inputs, test on longer ones.

A cell (task, model, variant, recipe, lr, seed) trains on input lengths 1..N until it fits its held-out
validation examples (lengths 1..N), stops rising, or runs out of steps; then it scores per-token accuracy on
every length 1..M: ``train_accuracy`` is the mean over 1..N (in-distribution), ``ood_score`` the mean over
N+1..M. ``variant``: ``attention+positional[+randomized]``, ``-`` without attention. Recipes and learning
rates are chosen on the validation accuracy only (``recipe_pilot``), never on the test lengths.

    python -m experiments.length_generalization [--workdir DIR] [--config=...config.py:cpu_grid] [--config.x=y]
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

import jax.numpy as jnp
import ml_collections

from attnjax import data, sweep
from attnjax.nn import Execution, apply_with_attention_weights, build_model, count_params, get_model_spec
from attnjax.nn.models import takes_execution
from attnjax.ops.positional import POSITIONAL, RANDOMIZED_EVAL, get_positional
from attnjax.ops.registry import ATTENTION
from attnjax.parallel.mesh import data_mesh
from attnjax.results import rounded
from attnjax.sweep.fitting import fit_metrics, length_scores, length_validation, train_to_fit
from attnjax.sweep.training import optimizer_for, recipe, stop_rule
from attnjax.train import TrainState, create_train_state, fit, make_train_step
from experiments.length_generalization import report

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "config.py")
# Config keys that fix how every cell trains and is scored (part of each cell's fingerprint).
PROTOCOL_KEYS = ("train_max_length", "test_max_length", "per_example_lengths", "batch_size", "num_steps",
                 "eval_batch_size", "eval_bucket", "randomized_max_len", "randomized_eval", "attention_map_task",
                 "validate_every", "val_batch_size")
COMPUTE_DTYPES = ("float32", "bfloat16")  # config.compute_dtype: parameters and optimizer state stay float32


def variants(config: ml_collections.ConfigDict, model: str) -> list[str]:
    """``attention+positional[+randomized]`` for an attention model (``nope`` runs standard only), else ``["-"]``."""
    if not get_model_spec(model).attention:
        return ["-"]
    return [f"{a}+{p}" + ("+randomized" if r == "true" else "") for a in sweep.names(config.attentions)
            for p in sweep.names(config.positionals) for r in sweep.names(config.randomized)
            if not (r == "true" and get_positional(p).kind == "none")]


def model_fields(config: ml_collections.ConfigDict, model: str, variant: str) -> dict[str, Any]:
    """The model's config fields for one cell: its config block and what the variant sets."""
    fields = config[model].to_dict()
    if variant != "-":
        attention, positional, *rest = variant.split("+")
        fields.update(attention={**fields["attention"], "name": attention}, positional=positional,
                      randomized_positions=bool(rest), randomized_eval=config.randomized_eval,
                      max_len=config.randomized_max_len)
        if positional != "sinusoidal" or rest:  # Delétang's from-the-end numbering: standard sinusoidal only
            fields["positions_from_end"] = False
    return fields


def cells(config: ml_collections.ConfigDict, variant_names: Callable | None = None) -> list[sweep.Cell]:
    """The grid: task x model x variant x the model's recipes x the model's lrs x seed; ``variant_names(config,
    model)`` lists a model's variants (default :func:`variants`)."""
    listed = variant_names or variants
    return sweep.grid(task=sweep.names(config.tasks), model=sweep.names(config.models),
                      variant=lambda f: listed(config, f["model"]),
                      recipe=lambda f: sweep.names(config.recipes[f["model"]]),
                      lr=lambda f: sweep.names(config.learning_rates[f["model"]]),
                      seed=range(config.first_seed, config.first_seed + config.num_seeds))


def validate(config: ml_collections.ConfigDict) -> None:
    """Resolves every name and builds every model config; raises ValueError/TypeError otherwise."""
    n, m, dtype, micro = config.train_max_length, config.test_max_length, config.compute_dtype, config.micro_batches
    if not 1 <= n < m:
        raise ValueError(f"need 1 <= train_max_length < test_max_length, got {n} and {m}")
    sweep.check_ints(config, num_seeds=1, validate_every=1, val_batch_size=1)
    if not isinstance(micro, int) or micro < 1 or config.batch_size % micro:
        raise ValueError(f"micro_batches must be an int >= 1 dividing batch_size={config.batch_size}, got {micro!r}")
    for kind, given, valid in [
            ("task", sweep.names(config.tasks), data.TASKS), ("attention", sweep.names(config.attentions), ATTENTION),
            ("positional encoding", sweep.names(config.positionals), POSITIONAL),
            ("attention_map_task", [config.attention_map_task] if config.attention_map_task else [], data.TASKS),
            ("randomized value", sweep.names(config.randomized), ["false", "true"]),
            ("randomized_eval", [config.randomized_eval], RANDOMIZED_EVAL), ("compute_dtype", [dtype], COMPUTE_DTYPES)]:
        sweep.check_names(kind, given, valid)
    models = sweep.check_models(sweep.names(config.models), config, config.learning_rates, config.recipes)
    no_dtype = [m for m in models if not takes_execution(m)]
    if dtype != "float32" and no_dtype:
        raise ValueError(f"compute_dtype={dtype!r} needs models with a computation dtype (the attention models); "
                         f"{no_dtype} have none: drop them from config.models or use compute_dtype='float32'")
    sweep.check_recipes(config, models, config.recipes)
    stop_rule(config)
    sweep.check_kind("sequence", {m: [model_fields(config, m, v) for v in variants(config, m)] for m in models})


def cell_config(config: ml_collections.ConfigDict, cell: sweep.Cell, keys: Sequence[str] = PROTOCOL_KEYS
                ) -> dict[str, Any]:
    """What a cell's fingerprint covers: the protocol ``keys`` and its model's fields."""
    protocol = {k: config[k] for k in keys}
    if config.micro_batches != 1:  # only when set: cells without it keep their fingerprints
        protocol["micro_batches"] = config.micro_batches
    protocol["recipe"] = recipe(config, cell["lr"], cell["recipe"]).to_dict()
    protocol["stopping"] = config.stopping.to_dict()
    model = sweep.fingerprint_fields(model_fields(config, cell["model"], cell["variant"]))
    if config.compute_dtype != "float32":  # only when set: float32 cells keep their fingerprints
        model["dtype"] = config.compute_dtype
    return {"protocol": protocol, "model": model}


def build(config: ml_collections.ConfigDict, cell: sweep.Cell, output_size: int) -> Any:
    """The cell's model, attention models in the study's compute dtype."""
    fields = model_fields(config, cell["model"], cell["variant"])
    execution = Execution(dtype=config.compute_dtype) if takes_execution(cell["model"]) else None
    return build_model(cell["model"], output_size, fields, execution)


def run_cell(cell: sweep.Cell, config: ml_collections.ConfigDict, context: sweep.Context) -> dict[str, Any]:
    """Trains one cell to fit (or to a flat curve, or the budget) and scores it on every length; returns its
    metrics. With ``stopping.stop_at_fit=False`` a cell that fits is scored there (``at_fit``), then trains on
    to the budget: the paired check of what stopping at fit changes (:func:`attnjax.sweep.fitting.train_to_fit`)."""
    task = data.get_task(cell["task"])
    model = build(config, cell, task.output_size)
    # Parameter shapes do not depend on the length: a length-1 example shares one compiled initializer.
    example = jnp.zeros((1, 1, data.vocab_size(task)), jnp.float32)
    state = create_train_state(model, cell.key("init"), example,
                               optimizer_for(config, cell["lr"], cell["recipe"]))
    # Data streams depend on (task, seed) only: every model of a seed sees the same examples.
    train_rng, mesh, t0 = cell.rng("train_data", ("task", "seed")), data_mesh(config.mesh_data), time.perf_counter()
    rule, options = stop_rule(config), context.fit_options(cell)
    held_out = validation(cell, config, task, mesh)  # drawn once: both parts of a fit check see the same set

    def train(state: TrainState, num_steps: int, stop: Callable, options: dict[str, Any]) -> tuple[TrainState, list]:
        return fit(state, lambda _: data.training_batch(task, train_rng, config.batch_size, config.train_max_length,
                                                        per_example_lengths=config.per_example_lengths),
                   num_steps, rng=cell.key("steps"), mesh=mesh, log_every=config.validate_every, log_file=log_file,
                   step_fn=make_train_step(micro_batches=config.micro_batches),
                   validate=held_out, stop=stop,
                   # Checkpoints save train_rng's position: a resumed cell draws the same batches.
                   data_rng=train_rng, **options)

    with open(context.log_path(cell), "w", encoding="utf-8") as log_file:
        state, history, at_fit = train_to_fit(train, state, config.num_steps, rule, options,
                                              lambda state: scores(cell, config, task, state, mesh, in_full=False))
    extra: dict[str, Any] = {"at_fit": at_fit} if at_fit else {}
    train_seconds = time.perf_counter() - t0
    if (cell["task"] == config.attention_map_task and get_model_spec(cell["model"]).attention
            and cell["seed"] == config.first_seed):
        extra["attention_maps"] = attention_maps(cell, config, model, state.params, task)
    return {**extra, **scores(cell, config, task, state, mesh),
            "final_train_loss": history[-1]["loss"] if history else None, "num_params": count_params(state.params),
            **fit_metrics(history, rule),
            "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t0 - train_seconds}


def scores(cell: sweep.Cell, config: ml_collections.ConfigDict, task: data.Task, state: TrainState, mesh,
           in_full: bool = True) -> dict[str, Any]:
    """:func:`attnjax.sweep.fitting.length_scores` on the cell's test examples at every length 1..M (the same
    ones at every call)."""
    m, bucket, rng = config.test_max_length, config.eval_bucket, cell.rng("eval_data", ("task", "seed"))

    def batches(k: int) -> list[dict]:  # test lengths pad up to multiples of eval_bucket: few compiled programs
        pad = data.padded_length(task, m if bucket <= 0 else min(-(-k // bucket) * bucket, m))
        return [data.length_batch(task, rng, config.eval_batch_size, k, pad)]

    return length_scores(state, batches, config.train_max_length, m, mesh=mesh, rng=cell.key("eval_positions"),
                         in_full=in_full)


def validation(cell: sweep.Cell, config: ml_collections.ConfigDict, task: data.Task, mesh
               ) -> Callable[[TrainState], dict[str, float]]:
    """The in-distribution validation of train-to-fit: ``val_batch_size`` fresh examples at each training length
    1..N (drawn once, from their own stream), all padded to N (one compiled program)."""
    n, rng = config.train_max_length, cell.rng("val_data", ("task", "seed"))
    batches = {k: [data.length_batch(task, rng, config.val_batch_size, k, data.padded_length(task, n))]
               for k in range(1, n + 1)}
    return length_validation(batches, mesh=mesh, rng=cell.key("val_positions"))


def attention_maps(cell: sweep.Cell, config: ml_collections.ConfigDict, model: Any, params: Any, task: data.Task
                   ) -> dict[str, list[list[float]]]:
    """Last-layer attention weights (mean over heads) of one example at the longest training length and the
    longest test length: ``{str(length): [P, P]}``, P = input plus blank positions."""
    rng, maps = cell.rng("attention_maps", ("task", "seed")), {}
    for length in (config.train_max_length, config.test_max_length):
        batch = data.length_batch(task, rng, 1, length)
        _, layers = apply_with_attention_weights(model, params, batch["inputs"], seq_lengths=batch["seq_lengths"],
                                                 train=False, rngs={"positions": cell.key("attention_maps")})
        maps[str(length)] = rounded(layers[-1][0].mean(0))  # the last layer's [1, N, P, P]
    return maps


EXPERIMENT = sweep.Experiment(
    name="length_generalization", cells=cells, run_cell=run_cell, validate=validate, cell_config=cell_config,
    report=report.write_report,
    describe=lambda r: (f"in-dist {100 * r['train_accuracy']:.1f}%, OOD {100 * r['ood_score']:.1f}%, "
                        f"{r['stop_reason']} at step {r['steps_trained']:,}"))
