"""Multi-query associative recall (Zoology, Arora et al. 2023): which sequence mixers can recall, at what width.

A cell is (model, variant, seq_len, kv, width, noise, lr, seed). ``variant`` is the causal Transformer LM's
attention (``"-"`` for the recurrent models); ``(seq_len, kv)`` is one MQAR setting (``kv`` key-value pairs
in a sequence of ``seq_len`` ids, :mod:`attnjax.data.mqar`); ``noise`` is the share of filler positions
holding a random token. The grid is the union of two sweeps: every setting at every width at
``config.noise`` (accuracy vs pairs and width), and every level of ``config.noise_sweep`` at one setting and
the first width (accuracy vs training noise). Besides, every cell is scored on test sets of its setting at
each filler-noise level of ``config.eval_noises`` (robustness to distractors it was not trained with; no
training cost).

Each cell trains on a fixed set of ``num_train`` examples of its seed (the same for every model, width and
learning rate of that seed: model comparisons are paired by seed) and scores accuracy at the query
positions only: on ``num_train_eval`` of its training examples (the fit), a validation split (which picks
learning rates) and the test set (``score_test``). Validation and test sets depend on the setting alone.

    python -m experiments.associative_recall [--workdir DIR] [--config.num_steps=800 ...]
    python -m experiments.associative_recall --config=experiments/associative_recall/config.py:lr_pilot \
        --workdir results/mqar_lr_pilot
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

import jax.numpy as jnp
import ml_collections
import numpy as np

from attnjax import sweep
from attnjax.data.mqar import check_mqar, mqar_batch
from attnjax.nn import build_model, count_params, get_model_spec, model_config, model_kind, sown_attention_weights
from attnjax.ops.registry import ATTENTION
from attnjax.parallel.mesh import data_mesh
from attnjax.sweep.report import describe_fit
from attnjax.train import create_train_state, evaluate, fit, make_optimizer
from experiments.associative_recall import report

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "config.py")
CAUSAL_MODELS = ("transformer_lm", "rnn", "lstm", "gru")  # a bidirectional model would read later tokens
DATA_KEYS = ("vocab_size", "power_a", "num_train", "num_val", "num_test", "num_train_eval", "score_test",
             "eval_noises")
PROTOCOL_KEYS = DATA_KEYS + ("batch_size", "num_steps", "max_grad_norm", "eval_batch_size")
POINT_FIELDS = ("seq_len", "kv", "width", "noise")  # the fields of one point of the two sweeps (see points())


# --------------------------------------------------------------------------- the grid

def parse_settings(text: str, name: str = "settings") -> list[tuple[int, int]]:
    """``"64:4,128:8"`` -> ``[(64, 4), (128, 8)]`` (``seq_len:num_kv_pairs``)."""
    out = []
    for item in sweep.names(text):
        parts = item.split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            out.append((int(parts[0]), int(parts[1])))
        except ValueError:
            raise ValueError(f"{name} must be comma-separated seq_len:num_kv_pairs (e.g. '64:4,128:8'), "
                             f"got {item!r} in {text!r}") from None
    return out


def widths(config: ml_collections.ConfigDict) -> list[int]:
    return sweep.numbers(config.widths, int, "widths")


def noise_levels(config: ml_collections.ConfigDict) -> list[float]:
    return sweep.numbers(config.noise_sweep, float, "noise_sweep")


def eval_noise_levels(config: ml_collections.ConfigDict) -> list[float]:
    return sweep.numbers(config.eval_noises, float, "eval_noises")


def variants(config: ml_collections.ConfigDict, model: str) -> list[str]:
    """The attention variants for an attention model (one cell each), ``["-"]`` otherwise."""
    return sweep.names(config.attentions) if get_model_spec(model).attention else ["-"]


def learning_rates(config: ml_collections.ConfigDict, model: str, variant: str) -> list[str]:
    """``config.attention_learning_rates.<variant>`` for an attention variant that has one (the pilot's per-variant
    choice), else ``config.learning_rates.<model>``."""
    per_variant = config.attention_learning_rates.to_dict()
    return sweep.names(per_variant[variant] if variant in per_variant else config.learning_rates[model])


def points(config: ml_collections.ConfigDict) -> list[tuple[int, int, int, float]]:
    """``(seq_len, kv, width, noise)`` of both sweeps, each once, pairs sweep first."""
    out = [(L, P, w, float(config.noise)) for L, P in parse_settings(config.settings) for w in widths(config)]
    if noise_levels(config):
        L, P = parse_settings(config.noise_setting, "noise_setting")[0]
        out += [(L, P, widths(config)[0], n) for n in noise_levels(config)]
    return list(dict.fromkeys(out))


def cells(config: ml_collections.ConfigDict) -> list[sweep.Cell]:
    """model x variant x point x lr x seed. A point is one ``(seq_len, kv, width, noise)`` of the union of the two
    sweeps (not a product of four axes), so it is one axis, spread into its four fields afterwards."""
    grid = sweep.grid(model=sweep.names(config.models), variant=lambda f: variants(config, f["model"]),
                      point=points(config), lr=lambda f: learning_rates(config, f["model"], f["variant"]),
                      seed=range(config.first_seed, config.first_seed + config.num_seeds))
    return [sweep.Cell(tuple(field for k, v in cell.fields
                             for field in (zip(POINT_FIELDS, v) if k == "point" else [(k, v)])))
            for cell in grid]


def model_fields(config: ml_collections.ConfigDict, model: str, variant: str, width: int,
                 seq_len: int) -> dict[str, Any]:
    """The model's config fields for one cell: its config block plus width, vocabulary and attention."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in config[model].to_dict().items()}
    fields["vocab_size"] = config.vocab_size  # integer ids in, a table lookup (attnjax.nn.tokens)
    if get_model_spec(model).attention:
        options = config.attention_options.to_dict().get(variant, {})
        fields.update(d_model=width, mlp_dim=config.mlp_ratio * width, attention=variant, max_len=seq_len,
                      attention_options=tuple(sorted(options.items())))
    else:
        fields["hidden_size"] = width
    return fields


def records_maps(config: ml_collections.ConfigDict, cell: sweep.Cell) -> bool:
    """Whether this cell records attention maps: the softmax Transformer, first seed and width, main noise."""
    if not config.attention_map_setting or not config.score_test:
        return False
    L, P = parse_settings(config.attention_map_setting, "attention_map_setting")[0]
    return (get_model_spec(cell["model"]).attention and cell["variant"] == "dot_product"
            and cell["seed"] == config.first_seed and (cell["seq_len"], cell["kv"]) == (L, P) and cell["width"] == widths(config)[0]
            and cell["noise"] == float(config.noise))


# --------------------------------------------------------------------------- validation

def validate(config: ml_collections.ConfigDict) -> None:
    """Resolves every name, checks every MQAR setting and builds every model config, before any training."""
    for key in ("num_seeds", "num_train", "num_val", "num_test", "num_train_eval", "batch_size", "eval_batch_size",
                "log_every", "mlp_ratio"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"{key} must be an int >= 1, got {config[key]!r}")
    if config.num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {config.num_steps}")
    if config.num_train_eval > config.num_train:
        raise ValueError(f"num_train_eval must be <= num_train={config.num_train}, got {config.num_train_eval}")
    settings = parse_settings(config.settings)
    if not settings:
        raise ValueError("config.settings lists no seq_len:num_kv_pairs setting")
    ws = widths(config)
    if not ws or any(w < 1 for w in ws):
        raise ValueError(f"widths must be ints >= 1, got {config.widths!r}")
    for L, P, _, noise in points(config):
        for level in [noise, *eval_noise_levels(config)]:
            check_mqar(config.vocab_size, L, P, level, config.power_a)
    if config.attention_map_setting:
        mapped = parse_settings(config.attention_map_setting, "attention_map_setting")
        if len(mapped) != 1 or mapped[0] not in settings:
            raise ValueError(f"attention_map_setting must be one of the settings {config.settings!r} (or ''), "
                             f"got {config.attention_map_setting!r}")
    sweep.check_names("causal sequence model", sweep.names(config.models), CAUSAL_MODELS)
    models = sweep.check_models(sweep.names(config.models), config, config.learning_rates)
    attentions = sweep.names(config.attentions)
    sweep.check_names("attention", attentions, ATTENTION)
    sweep.check_names("attention_options entry", list(config.attention_options.to_dict()), ATTENTION)
    sweep.check_names("attention_learning_rates entry", list(config.attention_learning_rates.to_dict()), ATTENTION)
    for model in models:  # the model's learning rates and every per-variant choice that replaces them
        lrs = [*sweep.names(config.learning_rates[model]),
               *(lr for variant in variants(config, model) for lr in learning_rates(config, model, variant))]
        for lr in dict.fromkeys(lrs):
            make_optimizer(float(lr), config.max_grad_norm)
    lengths = sorted({L for L, _, _, _ in points(config)})
    for model in models:
        for variant in variants(config, model):
            for w in ws:
                for L in lengths:
                    fields = model_fields(config, model, variant, w, L)
                    model_config(model, fields)  # builds (validates) the config dataclass
                    if model_kind(model, fields) != "sequence":
                        raise ValueError(f"model {model!r} must give per-position logits here (pooling=None)")


def cell_config(config: ml_collections.ConfigDict, cell: sweep.Cell) -> dict[str, Any]:
    return {"protocol": {k: config[k] for k in PROTOCOL_KEYS}, "records_maps": records_maps(config, cell),
            "model": model_fields(config, cell["model"], cell["variant"], cell["width"], cell["seq_len"])}


# --------------------------------------------------------------------------- one cell

def dataset(config: ml_collections.ConfigDict, cell: sweep.Cell, split: str,
            noise: float | None = None) -> dict[str, np.ndarray]:
    """``split`` examples of the cell's setting. Training data depend on (setting, noise, seed): every model,
    width and lr of a seed see the same; validation and test sets on (setting, noise) alone. ``noise``: a test
    set at another filler-noise level (its own stream per level)."""
    keyed = ("seq_len", "kv", "noise") + (("seed",) if split == "train" else ())
    stream = f"mqar_{split}" if noise is None else f"mqar_{split}_noise={float(noise)}"
    return mqar_batch(cell.rng(stream, keyed), config[f"num_{split}"], vocab_size=config.vocab_size,
                      seq_len=cell["seq_len"], num_kv_pairs=cell["kv"],
                      noise=float(cell["noise"] if noise is None else noise), power_a=config.power_a)


def chunks(batch: dict[str, np.ndarray], size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-shape batches over the first ``limit`` rows; the last is padded with unscored rows."""
    n = len(batch["targets"]) if limit is None else limit
    for i in range(0, n, size):
        part = {k: v[i:min(i + size, n)] for k, v in batch.items()}
        pad = size - len(part["targets"])
        if pad:
            part = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in part.items()}
            part["seq_lengths"][-pad:] = batch["seq_lengths"][0]
        yield part


def leaked_fraction(train: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> float:
    """Share of test sequences that also occur in the training set (Zoology warns above 0.1%)."""
    seen = {row.tobytes() for row in train["inputs"]}
    return float(np.mean([row.tobytes() in seen for row in test["inputs"]]))


def run_cell(cell: sweep.Cell, config: ml_collections.ConfigDict, context: sweep.Context) -> dict[str, Any]:
    """Trains and evaluates one cell; returns its metrics."""
    L, V = cell["seq_len"], config.vocab_size
    train = dataset(config, cell, "train")
    fields = model_fields(config, cell["model"], cell["variant"], cell["width"], L)
    model = build_model(cell["model"], V, fields)
    # Init and batch order depend on the seed (and the model), not on the lr: lrs of a seed are paired too.
    init_key = cell.key("init", ("model", "variant", "seq_len", "kv", "width", "noise", "seed"))
    state = create_train_state(model, init_key, jnp.zeros((1, L), jnp.int32),
                               make_optimizer(float(cell["lr"]), config.max_grad_norm))
    batch_rng = cell.rng("batches", ("seq_len", "kv", "noise", "seed"))
    mesh = data_mesh(config.mesh_data)

    def batch(_):
        idx = batch_rng.integers(0, config.num_train, config.batch_size)
        return {k: v[idx] for k, v in train.items()}

    t0 = time.perf_counter()
    with open(context.log_path(cell), "w", encoding="utf-8") as log_file:
        # Checkpoints (--config.checkpoint_every) save batch_rng's position: a resumed cell draws the same batches.
        state, history = fit(state, batch, config.num_steps, rng=cell.key("steps"), mesh=mesh,
                             log_every=config.log_every, log_file=log_file, data_rng=batch_rng,
                             **context.fit_options(cell))
    train_seconds = time.perf_counter() - t0
    size = config.eval_batch_size
    fit_scores = evaluate(state, chunks(train, size, config.num_train_eval), mesh=mesh)
    val = evaluate(state, chunks(dataset(config, cell, "val"), size), mesh=mesh)
    metrics: dict[str, Any] = {
        "train_accuracy": fit_scores["accuracy"], "train_loss": fit_scores["loss"],
        "val_accuracy": val["accuracy"], "val_loss": val["loss"],
        "final_train_loss": history[-1]["loss"] if history else None,
        "num_params": count_params(state.params), "train_seconds": train_seconds}
    if config.score_test:
        test = dataset(config, cell, "test")
        scored = evaluate(state, chunks(test, size), mesh=mesh)
        metrics.update(test_accuracy=scored["accuracy"], test_loss=scored["loss"],
                       test_in_train=leaked_fraction(train, test))
        # The same model on test sets whose fillers carry other noise levels (distractors not seen in training);
        # at the training noise level the test set above is that set.
        metrics["test_accuracy_by_noise"] = {
            str(n): scored["accuracy"] if n == float(cell["noise"]) else
            evaluate(state, chunks(dataset(config, cell, "test", n), size), mesh=mesh)["accuracy"]
            for n in eval_noise_levels(config)}
        if records_maps(config, cell):
            metrics["attention_maps"] = attention_maps(config, cell, state.params, test)
    metrics["eval_seconds"] = time.perf_counter() - t0 - train_seconds
    return metrics


def attention_maps(config: ml_collections.ConfigDict, cell: sweep.Cell, params: Any,
                   test: dict[str, np.ndarray], candidates: int = 64) -> dict[str, Any]:
    """Every layer's attention weights ``[N, L, L]`` on one test example whose queries the model recalls.

    The example is the first of ``candidates`` test examples with every query right (else the one with the
    most right); ``query`` is its first correctly recalled query position.
    """
    fields = {**model_fields(config, cell["model"], cell["variant"], cell["width"], cell["seq_len"]),
              "sow_attention_weights": True}
    model = build_model(cell["model"], config.vocab_size, fields)
    batch = {k: v[:candidates] for k, v in test.items()}
    logits, sown = model.apply({"params": params}, batch["inputs"], seq_lengths=batch["seq_lengths"], train=False,
                               mutable=["intermediates"])
    mask = batch["loss_mask"] > 0
    right = (np.asarray(logits).argmax(-1) == batch["targets"]) & mask
    score = right.sum(1) - 1000 * (right.sum(1) < mask.sum(1))  # all right first, then the most right
    i = int(np.argmax(score))
    queries = np.nonzero(mask[i])[0]
    recalled = [int(q) for q in queries if right[i, q]]
    layers = [np.round(np.asarray(w[i]), 4).tolist() for w in sown_attention_weights(sown["intermediates"])]
    return {"tokens": batch["inputs"][i].tolist(), "targets": batch["targets"][i].tolist(),
            "queries": queries.tolist(), "recalled": recalled, "query": recalled[0] if recalled else int(queries[0]),
            "layers": layers}


EXPERIMENT = sweep.Experiment(
    name="associative_recall", cells=cells, run_cell=run_cell, validate=validate, cell_config=cell_config,
    report=report.write_report, describe=describe_fit)
