"""Evaluation over many batches and per input length, without recompiling per batch."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from attnjax.parallel.mesh import DATA_AXIS
from attnjax.train.loop import shard_batch
from attnjax.train.state import TrainState
from attnjax.train.steps import eval_step

# Module level, so compiled programs are cached across calls (and across seeds: equal models and
# optimizers give equal static parts of the state). One program per distinct batch shape.
eval_step_jit = jax.jit(eval_step)


def _dispatch(state: TrainState, batches: Iterable[Mapping[str, Any]], mesh: Mesh | None, data_axis: str) -> list:
    """Launches ``eval_step`` on every batch without waiting for results (dispatch is asynchronous)."""
    return [eval_step_jit(state, shard_batch(b, mesh, data_axis) if mesh is not None else b) for b in batches]


def _reduce(metrics: list[Mapping[str, Any]]) -> dict[str, float]:
    totals = np.zeros(3)
    for m in metrics:
        totals += (m["loss_sum"], m["correct"], m["count"])
    loss_sum, correct, count = totals
    if count == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "count": 0.0}
    return {"loss": float(loss_sum / count), "accuracy": float(correct / count), "count": float(count)}


def evaluate(state: TrainState, batches: Iterable[Mapping[str, Any]], *, mesh: Mesh | None = None,
             data_axis: str = DATA_AXIS) -> dict[str, float]:
    """Token-weighted mean loss and accuracy over ``batches``.

    Returns:
        ``{"loss", "accuracy", "count"}``; NaN loss/accuracy when nothing was scored.
    """
    return _reduce(jax.device_get(_dispatch(state, batches, mesh, data_axis)))


def evaluate_lengths(state: TrainState, make_batches: Callable[[int], Iterable[Mapping[str, Any]]],
                     lengths: Iterable[int], *, mesh: Mesh | None = None,
                     data_axis: str = DATA_AXIS) -> dict[int, dict[str, float]]:
    """:func:`evaluate` at each input length: ``{length: {"loss", "accuracy", "count"}}``.

    ``make_batches(length)`` yields that length's batches; padding them to a few bucket lengths
    bounds the number of compiled programs. Every length is dispatched before the one host transfer,
    so building the next length's batches overlaps with the device work.
    """
    dispatched = {int(n): _dispatch(state, make_batches(int(n)), mesh, data_axis) for n in lengths}
    return {n: _reduce(metrics) for n, metrics in jax.device_get(dispatched).items()}
