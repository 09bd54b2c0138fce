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


def evaluate(state: TrainState, batches: Iterable[Mapping[str, Any]], *, mesh: Mesh | None = None,
             data_axis: str = DATA_AXIS) -> dict[str, float]:
    """Token-weighted mean loss and accuracy over ``batches``.

    Returns:
        ``{"loss", "accuracy", "count"}``; NaN loss/accuracy when nothing was scored.
    """
    totals = np.zeros(3)
    for batch in batches:
        batch = shard_batch(batch, mesh, data_axis) if mesh is not None else batch
        m = jax.device_get(eval_step_jit(state, batch))
        totals += (m["loss_sum"], m["correct"], m["count"])
    loss_sum, correct, count = totals
    if count == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "count": 0.0}
    return {"loss": float(loss_sum / count), "accuracy": float(correct / count), "count": float(count)}


def evaluate_lengths(state: TrainState, make_batches: Callable[[int], Iterable[Mapping[str, Any]]],
                     lengths: Iterable[int], **kwargs: Any) -> dict[int, dict[str, float]]:
    """:func:`evaluate` at each input length: ``{length: {"loss", "accuracy", "count"}}``.

    ``make_batches(length)`` yields that length's batches; padding them to a few bucket lengths
    bounds the number of compiled programs.
    """
    return {int(n): evaluate(state, make_batches(int(n)), **kwargs) for n in lengths}
