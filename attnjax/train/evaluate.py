"""Evaluation over many batches and per input length, without recompiling per batch."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from attnjax.nn.positional import MissingPositionsRngError
from attnjax.parallel.mesh import DATA_AXIS
from attnjax.train.placement import shard_batch
from attnjax.train.state import TrainState
from attnjax.train.steps import eval_step, missing_positions_rng

# Module level, so compiled programs are cached across calls (and across seeds: equal models and
# optimizers give equal static parts of the state). One program per distinct batch shape.
eval_step_jit = jax.jit(eval_step)


def dispatch(state: TrainState, batches: Iterable[Mapping[str, Any]], mesh: Mesh | None, data_axis: str,
             rng: jax.Array | None, step: Callable = eval_step_jit, caller: str = "evaluate") -> list:
    """Launches the jitted ``step(state, batch, rng)`` on every batch without waiting for results (dispatch is
    asynchronous); batch ``i`` gets ``fold_in(rng, i)``. ``step`` is :data:`eval_step_jit` or another
    module-level jitted eval step (e.g. :data:`attnjax.train.seq2seq_steps.seq2seq_eval_step_jit`).

    Raises:
        ValueError: ``rng=None`` for a model that draws randomized positions at evaluation, naming ``caller``
            (the public function whose ``rng`` argument is missing).
    """
    out = []
    try:
        for i, b in enumerate(batches):
            b = shard_batch(b, mesh, data_axis) if mesh is not None else b
            out.append(step(state, b, None if rng is None else jax.random.fold_in(rng, i)))
    except MissingPositionsRngError as error:
        if rng is not None:
            raise
        raise missing_positions_rng(caller) from error
    return out


def _reduce(metrics: list[Mapping[str, Any]]) -> dict[str, float]:
    totals = np.zeros(4)
    for m in metrics:
        totals += (m["loss_sum"], m["loss_count"], m["correct"], m["count"])
    loss_sum, loss_count, correct, count = totals
    loss = float(loss_sum / loss_count) if loss_count else float("nan")
    accuracy = float(correct / count) if count else float("nan")
    return {"loss": loss, "accuracy": accuracy, "count": float(count)}


def evaluate(state: TrainState, batches: Iterable[Mapping[str, Any]], *, mesh: Mesh | None = None,
             data_axis: str = DATA_AXIS, rng: jax.Array | None = None) -> dict[str, float]:
    """Token-weighted mean loss and accuracy over ``batches``.

    Args:
        rng: key for models that draw randomized positions at evaluation; batch ``i`` uses
            ``fold_in(rng, i)``. None for deterministic models.

    Returns:
        ``{"loss", "accuracy", "count"}``; NaN loss/accuracy when nothing was scored.

    Raises:
        ValueError: ``rng=None`` for a model that draws randomized positions at evaluation.
    """
    return _reduce(jax.device_get(dispatch(state, batches, mesh, data_axis, rng)))


def evaluate_lengths(state: TrainState, make_batches: Callable[[int], Iterable[Mapping[str, Any]]],
                     lengths: Iterable[int], *, mesh: Mesh | None = None, data_axis: str = DATA_AXIS,
                     rng: jax.Array | None = None) -> dict[int, dict[str, float]]:
    """:func:`evaluate` at each input length: ``{length: {"loss", "accuracy", "count"}}``.

    ``make_batches(length)`` yields that length's batches; padding them to a few bucket lengths
    bounds the number of compiled programs. Every length is dispatched before the one host transfer,
    so building the next length's batches overlaps with the device work. ``rng`` (see
    :func:`evaluate`) is folded with the length first; a model with randomized positions needs it (a
    ValueError naming ``rng`` otherwise).
    """
    dispatched = {int(n): dispatch(state, make_batches(int(n)), mesh, data_axis,
                                   None if rng is None else jax.random.fold_in(rng, int(n)), caller="evaluate_lengths")
                  for n in lengths}
    return {n: _reduce(metrics) for n, metrics in jax.device_get(dispatched).items()}
