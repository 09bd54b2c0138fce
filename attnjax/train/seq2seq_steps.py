"""Pure train and eval steps for encoder-decoder models (the ``"seq2seq"`` kind of :mod:`attnjax.nn.contract`).

A seq2seq batch is a dict (:mod:`attnjax.data.seq2seq` builds them): ``source [B, S, V]`` float,
``source_lengths [B]`` int, ``target_inputs [B, T]`` int (the begin token, then the targets shifted right),
``targets [B, T]`` int and ``target_mask [B, T]`` float (1 where scored). The model's
``apply_fn(variables, source, target_inputs, source_lengths=..., train=...)`` returns ``[B, T, C]`` logits, and
``method="generate"`` decodes greedily to ``max_length = T`` tokens.

Training and the teacher-forced scores use :func:`~attnjax.train.steps.masked_loss_and_correct` and
:func:`~attnjax.train.steps.optimizer_step`, the same rules as the blank-token steps; run the train step
through ``fit(..., step_fn=seq2seq_train_step)``. Evaluation adds the greedy scores, where every decoder
input after the begin token is the model's own previous prediction (no teacher forcing), as a translation
model is used.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from attnjax.parallel.mesh import DATA_AXIS
from attnjax.train.evaluate import dispatch
from attnjax.train.state import TrainState
from attnjax.train.steps import Batch, Metrics, masked_loss_and_correct, optimizer_step, step_rngs

# The sums an eval step returns: every metric of :func:`evaluate_seq2seq` is a ratio of two of them, so
# batches (and devices) aggregate exactly by summing.
SUM_KEYS = ("loss_sum", "loss_count", "correct", "count", "greedy_correct", "sequences", "sequences_correct",
            "greedy_sequences_correct")


def _logits(state: TrainState, params: Any, batch: Batch, train: bool, rng: jax.Array | None) -> jnp.ndarray:
    return state.apply_fn({"params": params}, batch["source"], batch["target_inputs"],
                          source_lengths=batch["source_lengths"], train=train, rngs=step_rngs(rng, train))


def seq2seq_train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    """One optimizer step on the teacher-forced per-token mean cross-entropy over ``target_mask``.

    Args:
        state: the train state (donated where jitted by ``fit``).
        batch: see module docstring.
        rng: base key; the step uses ``fold_in(rng, state.step)``.

    Returns:
        ``(new_state, metrics)``: see :func:`attnjax.train.steps.optimizer_step` (``accuracy`` is the
        teacher-forced token accuracy of the batch).
    """
    def forward(params, step_rng):
        logits = _logits(state, params, batch, True, step_rng)
        return masked_loss_and_correct(logits, batch["targets"], batch["target_mask"])

    return optimizer_step(state, forward, rng)


def greedy_decode(state: TrainState, params: Any, source: jnp.ndarray, source_lengths: jnp.ndarray,
                  max_length: int, rng: jax.Array | None = None) -> jnp.ndarray:
    """``[B, max_length]`` int32 greedy tokens of the model's ``generate`` (evaluation mode)."""
    return state.apply_fn({"params": params}, source, source_lengths, max_length=max_length, method="generate",
                          rngs=step_rngs(rng, False))


def _row_all(correct: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """``[B]`` 1.0 where every scored position of the row is correct (rows without one count as 0)."""
    scored = mask > 0
    return (jnp.all(correct | ~scored, axis=1) & jnp.any(scored, axis=1)).astype(jnp.float32)


def seq2seq_eval_step(state: TrainState, batch: Batch, rng: jax.Array | None = None) -> Metrics:
    """Teacher-forced and greedy scores of one batch, as sums (see :data:`SUM_KEYS`).

    Args:
        state: the train state.
        batch: see module docstring; greedy decoding runs for ``T = targets.shape[1]`` steps.
        rng: key for models that draw randomized positions at evaluation; None otherwise.

    Returns:
        float32 scalars: ``loss_sum``/``loss_count`` (teacher-forced cross-entropy over ``target_mask``),
        ``correct``/``count`` (teacher-forced correct tokens / scored tokens), ``greedy_correct`` (greedy tokens
        equal to the target at scored positions), ``sequences`` (rows with a scored position),
        ``sequences_correct`` and ``greedy_sequences_correct`` (rows whose every scored token is right,
        teacher-forced and greedy).
    """
    targets, mask = batch["targets"], batch["target_mask"]
    logits = _logits(state, state.params, batch, False, rng)
    loss_sum, loss_count, correct, count = masked_loss_and_correct(logits, targets, mask)
    tokens = greedy_decode(state, state.params, batch["source"], batch["source_lengths"], targets.shape[1], rng)
    greedy_hit = tokens == targets
    scored = mask.astype(jnp.float32)
    return {"loss_sum": loss_sum, "loss_count": loss_count, "correct": correct, "count": count,
            "greedy_correct": jnp.sum(greedy_hit * scored),
            "sequences": jnp.sum(jnp.any(mask > 0, axis=1).astype(jnp.float32)),
            "sequences_correct": jnp.sum(_row_all(jnp.argmax(logits, -1) == targets, mask)),
            "greedy_sequences_correct": jnp.sum(_row_all(greedy_hit, mask))}


# Module level, so compiled programs are cached across calls and seeds (one per batch shape and model config).
seq2seq_eval_step_jit = jax.jit(seq2seq_eval_step)


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def reduce_seq2seq_metrics(metrics: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Sums :data:`SUM_KEYS` over batches and turns them into means.

    Returns:
        ``loss``, ``token_accuracy`` (teacher-forced), ``sequence_accuracy`` (teacher-forced),
        ``greedy_token_accuracy``, ``greedy_sequence_accuracy``, ``count`` (scored tokens) and ``sequences``;
        NaN ratios when nothing was scored.
    """
    t = {k: 0.0 for k in SUM_KEYS}
    for m in metrics:
        for k in SUM_KEYS:
            t[k] += float(np.asarray(m[k]))
    return {"loss": _ratio(t["loss_sum"], t["loss_count"]), "token_accuracy": _ratio(t["correct"], t["count"]),
            "sequence_accuracy": _ratio(t["sequences_correct"], t["sequences"]),
            "greedy_token_accuracy": _ratio(t["greedy_correct"], t["count"]),
            "greedy_sequence_accuracy": _ratio(t["greedy_sequences_correct"], t["sequences"]),
            "count": t["count"], "sequences": t["sequences"]}


def evaluate_seq2seq(state: TrainState, batches: Iterable[Mapping[str, Any]], *, mesh: Mesh | None = None,
                     data_axis: str = DATA_AXIS, rng: jax.Array | None = None) -> dict[str, float]:
    """Teacher-forced and greedy scores over ``batches`` (see :func:`reduce_seq2seq_metrics`).

    Args:
        rng: key for models that draw randomized positions at evaluation; batch ``i`` uses ``fold_in(rng, i)``.
    """
    dispatched = dispatch(state, batches, mesh, data_axis, rng, seq2seq_eval_step_jit, caller="evaluate_seq2seq")
    return reduce_seq2seq_metrics(jax.device_get(dispatched))


def evaluate_seq2seq_lengths(state: TrainState, make_batches: Callable[[int], Iterable[Mapping[str, Any]]],
                             lengths: Iterable[int], *, mesh: Mesh | None = None, data_axis: str = DATA_AXIS,
                             rng: jax.Array | None = None) -> dict[int, dict[str, float]]:
    """:func:`evaluate_seq2seq` at each source length: ``{length: metrics}``.

    ``make_batches(length)`` yields that length's batches; padding every length to one shape keeps one
    compiled program. Every length is dispatched before the one host transfer; ``rng`` is folded with the
    length first.
    """
    dispatched = {int(n): dispatch(state, make_batches(int(n)), mesh, data_axis,
                                   None if rng is None else jax.random.fold_in(rng, int(n)), seq2seq_eval_step_jit,
                                   caller="evaluate_seq2seq_lengths")
                  for n in lengths}
    return {n: reduce_seq2seq_metrics(m) for n, m in jax.device_get(dispatched).items()}


__all__ = ["SUM_KEYS", "evaluate_seq2seq", "evaluate_seq2seq_lengths", "greedy_decode", "reduce_seq2seq_metrics",
           "seq2seq_eval_step", "seq2seq_eval_step_jit", "seq2seq_train_step"]
