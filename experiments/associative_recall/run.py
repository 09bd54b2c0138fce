"""Multi-query associative recall (Zoology, Arora et al. 2023): which sequence mixers recall, at what width.

A cell is (model, variant, seq_len, kv, width, noise, lr, seed): ``variant`` is the Transformer LM's attention
(``"-"``: a recurrent model), ``(seq_len, kv)`` an MQAR setting (:mod:`attnjax.data.mqar`), ``noise`` the share of
random filler tokens. Grid: every setting x width at ``config.noise``, plus each ``noise_sweep`` level at
``noise_setting`` and the first width. A seed's data are shared by every model, width and lr (paired comparisons).
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict as Config

from attnjax import sweep
from attnjax.sweep.fitting import fit_metrics
from attnjax.sweep.training import optimizer_for, recipe_fingerprint, stop_rule
from attnjax.data.batching import fixed_size_batches
from attnjax.data.mqar import check_mqar, mqar_batch
from attnjax.nn import apply_with_attention_weights, build_model, count_params, get_model_spec
from attnjax.ops.registry import ATTENTION
from attnjax.parallel.mesh import data_mesh
from attnjax.results import rounded
from attnjax.sweep.report import describe_fit
from attnjax.train import create_train_state, evaluate
from experiments.associative_recall import report

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "config.py")
# A bidirectional model would read later tokens; the mixers' causality is tested in tests/nn/test_mixer_lm.py.
CAUSAL_MODELS = ("transformer_lm", "rnn", "lstm", "gru", "base_conv", "hyena", "based")
PROTOCOL_KEYS = ("vocab_size", "power_a", "num_train", "num_val", "num_test", "num_train_eval", "score_test",
                 "eval_noises", "batch_size", "num_steps", "max_grad_norm", "eval_batch_size")
POINT_FIELDS = ("seq_len", "kv", "width", "noise")  # one point of the union of the two sweeps
RECURRENT = ("rnn", "lstm", "gru")  # the width is their hidden size and nothing else depends on the cell


def parse_settings(config: Config, key: str = "settings") -> list[tuple[int, int]]:
    """``config[key]`` (``"64:4,128:8"``) as ``[(seq_len, num_kv_pairs), ...]``."""
    return sweep.int_tuples(config[key], key, "seq_len:num_kv_pairs (e.g. '64:4,128:8')")


def widths(config: Config) -> list[int]:
    """``config.widths`` as ints (model width: the LM's ``d_model``, a recurrent model's ``hidden_size``)."""
    return sweep.numbers(config.widths, int, "widths", low=1)


def points(config: Config) -> list[tuple[int, int, int, float]]:
    """``(seq_len, kv, width, noise)`` of both sweeps, each once, pairs sweep first."""
    ws, levels = widths(config), sweep.numbers(config.noise_sweep, float, "noise_sweep")
    out = [(L, P, w, float(config.noise)) for L, P in parse_settings(config) for w in ws]
    out += [(*parse_settings(config, "noise_setting")[0], ws[0], n) for n in levels]
    return list(dict.fromkeys(out))


def cells(config: Config) -> list[sweep.Cell]:
    """model x variant x point x lr x seed, each point spread into its four fields; lrs per variant where given."""
    per_variant = config.attention_learning_rates.to_dict()
    grid = sweep.grid(
        model=sweep.names(config.models),
        variant=lambda f: sweep.names(config.attentions) if get_model_spec(f["model"]).attention else ["-"],
        point=points(config),
        lr=lambda f: sweep.names(per_variant[f["variant"]] if f["variant"] in per_variant
                                 else config.learning_rates[f["model"]]),
        seed=range(config.first_seed, config.first_seed + config.num_seeds))
    return [sweep.Cell(c.fields[:2] + tuple(zip(POINT_FIELDS, c["point"])) + c.fields[3:]) for c in grid]


def model_fields(config: Config, cell: sweep.Cell) -> dict[str, Any]:
    """The model's config block plus what ``cell`` (its model, variant, width, seq_len) sets: the width field of
    the model (:attr:`~attnjax.nn.ModelSpec.width`: ``hidden_size``, ``d_model``), and for the Transformer and
    the mixers the feed-forward width and the length (their positions and long filters span ``max_len``)."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in config[cell["model"]].to_dict().items()}
    fields["vocab_size"], width = config.vocab_size, cell["width"]
    fields[get_model_spec(cell["model"]).width] = width
    if cell["model"] in RECURRENT:
        return fields
    fields.update(mlp_dim=config.mlp_ratio * width, max_len=cell["seq_len"])
    if cell["variant"] == "-":  # a mixer
        return fields
    options = config.attention_options.to_dict().get(cell["variant"], {})
    attention = {**fields["attention"], "name": cell["variant"], "options": tuple(sorted(options.items()))}
    return {**fields, "attention": attention}


def records_maps(config: Config, cell: sweep.Cell) -> bool:
    """The softmax Transformer at the map setting, first seed and width, main noise records attention maps."""
    if not config.attention_map_setting or not config.score_test:
        return False
    setting = parse_settings(config, "attention_map_setting")[0]
    return (cell["variant"] == "dot_product" and (cell["seq_len"], cell["kv"]) == setting
            and (cell["seed"], cell["width"], cell["noise"]) == (config.first_seed, widths(config)[0], config.noise))


def validate(config: Config) -> None:
    """Resolves every name, checks every MQAR setting and builds every model config, before any training."""
    sweep.check_ints(config, num_seeds=1, num_train=1, num_val=1, num_test=1, num_train_eval=1, batch_size=1,
                     eval_batch_size=1, log_every=1, mlp_ratio=1, num_steps=0)
    if config.num_train_eval > config.num_train:
        raise ValueError(f"num_train_eval must be <= num_train={config.num_train}, got {config.num_train_eval}")
    settings = parse_settings(config)
    if not settings:
        raise ValueError("config.settings lists no seq_len:num_kv_pairs setting")
    for L, P, _, noise in points(config):
        for level in [noise, *sweep.numbers(config.eval_noises, float, "eval_noises")]:
            check_mqar(config.vocab_size, L, P, level, config.power_a)
    mapped = parse_settings(config, "attention_map_setting")
    if config.attention_map_setting and (len(mapped) != 1 or mapped[0] not in settings):
        raise ValueError(f"attention_map_setting must be one of the settings {config.settings!r} (or ''), "
                         f"got {config.attention_map_setting!r}")
    sweep.check_names("causal sequence model", sweep.names(config.models), CAUSAL_MODELS)
    models = sweep.check_models(sweep.names(config.models), config, config.learning_rates)
    for kind, given in (("attention", sweep.names(config.attentions)),
                        ("attention_options entry", config.attention_options.to_dict()),
                        ("attention_learning_rates entry", config.attention_learning_rates.to_dict())):
        sweep.check_names(kind, list(given), ATTENTION)
    grid = cells(config)
    sweep.check_recipes(config, models)
    if "stopping" in config:
        stop_rule(config)
    for lr in {c["lr"] for c in grid}:  # where an attention's own learning rates replace its model's
        optimizer_for(config, lr)
    distinct = {(c["model"], c["variant"], c["width"], c["seq_len"]): c for c in grid}.values()  # one per model config
    sweep.check_kind("sequence", {m: [model_fields(config, c) for c in distinct if c["model"] == m] for m in models})


def cell_config(config: Config, cell: sweep.Cell) -> dict[str, Any]:
    """What determines ``cell``'s result (its fingerprint): the protocol keys, whether it records maps, its model."""
    protocol = {k: config[k] for k in PROTOCOL_KEYS} | recipe_fingerprint(config)
    if "stopping" in config:  # only where a preset stops at fit: the other presets keep their fingerprints
        protocol["stopping"] = config.stopping.to_dict()
    return {"protocol": protocol,
            "records_maps": records_maps(config, cell), "model": sweep.fingerprint_fields(model_fields(config, cell))}


def dataset(config: Config, cell: sweep.Cell, split: str, noise: float | None = None) -> dict[str, np.ndarray]:
    """``split``'s MQAR examples (``[num_<split>, seq_len]`` arrays): training data depend on (setting, noise,
    seed), validation and test sets on (setting, noise) alone; ``noise``: a test set at another filler noise."""
    keyed = ("seq_len", "kv", "noise") + (("seed",) if split == "train" else ())
    stream = f"mqar_{split}" if noise is None else f"mqar_{split}_noise={float(noise)}"
    return mqar_batch(cell.rng(stream, keyed), config[f"num_{split}"], vocab_size=config.vocab_size,
                      seq_len=cell["seq_len"], num_kv_pairs=cell["kv"],
                      noise=float(cell["noise"] if noise is None else noise), power_a=config.power_a)


def run_cell(cell: sweep.Cell, config: Config, context: sweep.Context) -> dict[str, Any]:
    """Trains and evaluates one cell; returns its metrics."""
    train, size = dataset(config, cell, "train"), config.eval_batch_size
    model = build_model(cell["model"], config.vocab_size, model_fields(config, cell))
    # Init and batch order depend on the seed (and the model), not on the lr: lrs of a seed are paired too.
    init_key = cell.key("init", ("model", "variant", "seq_len", "kv", "width", "noise", "seed"))
    state = create_train_state(model, init_key, jnp.zeros((1, cell["seq_len"]), jnp.int32),
                               optimizer_for(config, cell["lr"]))
    batch_rng, mesh = cell.rng("batches", ("seq_len", "kv", "noise", "seed")), data_mesh(config.mesh_data)

    def batch(_):
        idx = batch_rng.integers(0, config.num_train, config.batch_size)
        return {k: v[idx] for k, v in train.items()}

    t0 = time.perf_counter()
    val_data, options, rule = dataset(config, cell, "val"), {}, None
    if "stopping" in config:  # Zoology's rule: stop once the validation accuracy (every log record) reaches 99%
        rule = stop_rule(config)
        options.update(validate=lambda s: evaluate(s, fixed_size_batches(val_data, size), mesh=mesh), stop=rule)
    state, history = context.fit(cell, state, batch, config.num_steps, mesh=mesh, log_every=config.log_every,
                                 data_rng=batch_rng, **options)  # data_rng: resumes draw the same batches
    train_seconds = time.perf_counter() - t0
    score = lambda data, n=None: evaluate(state, fixed_size_batches(data, size, n), mesh=mesh)  # noqa: E731
    fit_scores, val = score(train, config.num_train_eval), score(val_data)
    metrics: dict[str, Any] = {
        "train_accuracy": fit_scores["accuracy"], "train_loss": fit_scores["loss"], "val_accuracy": val["accuracy"],
        "val_loss": val["loss"], "final_train_loss": history[-1]["loss"] if history else None,
        "num_params": count_params(state.params), "train_seconds": train_seconds,
        **(fit_metrics(history, rule) if rule is not None else {})}
    if config.score_test:
        test = dataset(config, cell, "test")
        scored = score(test)
        seen = {row.tobytes() for row in train["inputs"]}  # test sequences also in training (Zoology: < 0.1%)
        metrics.update(test_accuracy=scored["accuracy"], test_loss=scored["loss"],
                       test_in_train=float(np.mean([row.tobytes() in seen for row in test["inputs"]])))
        # The same model on test sets whose fillers carry other noise levels (at its own level: the test set above).
        metrics["test_accuracy_by_noise"] = {str(n): scored["accuracy"] if n == float(cell["noise"]) else
                                             score(dataset(config, cell, "test", n))["accuracy"]
                                             for n in sweep.numbers(config.eval_noises, float, "eval_noises")}
        if records_maps(config, cell):
            metrics["attention_maps"] = attention_maps(model, state.params, test)
    metrics["eval_seconds"] = time.perf_counter() - t0 - train_seconds
    return metrics


def attention_maps(model: Any, params: Any, test: dict[str, np.ndarray]) -> dict[str, Any]:
    """Each layer's attention weights ``[N, L, L]`` on the first of 64 test examples with every query recalled
    (else the most); ``query``: its first recalled query position."""
    batch = {k: v[:64] for k, v in test.items()}
    logits, layers = apply_with_attention_weights(model, params, batch["inputs"], seq_lengths=batch["seq_lengths"],
                                                  train=False)
    mask = batch["loss_mask"] > 0
    right = (np.asarray(logits).argmax(-1) == batch["targets"]) & mask
    i = int(np.argmax(right.sum(1) - 1000 * (right.sum(1) < mask.sum(1))))  # all right first, then the most right
    queries = np.nonzero(mask[i])[0]
    recalled = [int(q) for q in queries if right[i, q]]
    return {"tokens": batch["inputs"][i].tolist(), "targets": batch["targets"][i].tolist(),
            "queries": queries.tolist(), "recalled": recalled, "query": recalled[0] if recalled else int(queries[0]),
            "layers": [rounded(w[i]) for w in layers]}


EXPERIMENT = sweep.Experiment(
    name="associative_recall", cells=cells, run_cell=run_cell, validate=validate, cell_config=cell_config,
    report=report.write_report, describe=describe_fit)
