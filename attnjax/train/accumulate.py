"""Gradient accumulation: one optimizer step over a batch run as ``k`` micro-batches, one after another.

The step equals :func:`~attnjax.train.train_step` on the whole batch (up to float32 summation order),
with the activations of only ``B / k`` examples alive at a time. Loss sums, token counts and gradients
of the *sums* are added up over the micro-batches and divided by the total token count once at the end:
the per-token mean over the whole batch, as every attnjax step computes it. (A mean of per-micro-batch
means, which ``optax.MultiSteps`` would give, overweights micro-batches with few scored tokens.)

Build it with :func:`~attnjax.train.make_train_step` (``micro_batches=k``), which also runs it inside the
shard_map and pmap steps (each device accumulates over its own shard, one reduction at the end).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from attnjax.train.state import TrainState
from attnjax.train.steps import Batch, Metrics, _forward, apply_gradients


def split_micro_batches(batch: Batch, micro_batches: int) -> Batch:
    """``[B, ...]`` arrays -> ``[micro_batches, B / micro_batches, ...]``; micro-batch ``i`` holds rows ``i::k``.

    Strided rows, not contiguous blocks: when the batch is split over a ``data`` mesh axis, every device then
    holds its share of every micro-batch already, so the split moves no data between devices.

    Raises:
        ValueError: arrays with different leading sizes, or a size not divisible by ``micro_batches``.
    """
    sizes = {k: (jnp.shape(v)[0] if jnp.ndim(v) else None) for k, v in batch.items()}
    size = next(iter(sizes.values()), None)
    if any(s is None or s != size for s in sizes.values()) or size % micro_batches:
        raise ValueError(f"gradient accumulation needs every batch array to have the same leading (batch) size, "
                         f"divisible by micro_batches={micro_batches}; got leading sizes {sizes}")
    return {k: jnp.swapaxes(jnp.reshape(v, (size // micro_batches, micro_batches, *jnp.shape(v)[1:])), 0, 1)
            for k, v in batch.items()}


def accumulated_train_step(state: TrainState, batch: Batch, rng: jax.Array, *, micro_batches: int,
                           axis_name: str | tuple[str, ...] | None = None) -> tuple[TrainState, Metrics]:
    """:func:`~attnjax.train.train_step` on ``batch`` computed in ``micro_batches`` sequential pieces.

    Args:
        state: the train state (donated where jitted by ``fit``).
        batch: a blank-token batch (see :mod:`attnjax.train.steps`), leading size ``B`` divisible by
            ``micro_batches``.
        rng: base key; the step uses ``fold_in(rng, state.step)``. Randomized positions are drawn from it
            once for the whole batch, as in the one-batch step; dropout masks are drawn per micro-batch
            (the key folded with its index), so with dropout the step differs from the one-batch step in
            its masks, not in distribution.
        micro_batches: ``k``; the pieces run one after another under ``lax.scan``.
        axis_name: inside ``jax.shard_map`` or ``jax.pmap``, the axis (or axes) the batch is split over, as in
            :func:`~attnjax.train.steps.optimizer_step`: ``batch`` is this device's shard, each device
            accumulates its own micro-batches, and the sums, token counts and gradients are summed over the
            axis once, after the last micro-batch. None: ``batch`` is the whole batch.

    Returns:
        ``(new_state, metrics)`` as :func:`~attnjax.train.steps.optimizer_step`; gradients are accumulated in
        the parameters' dtype (float32), whatever the model's computation dtype.
    """
    micro = split_micro_batches(batch, micro_batches)
    step_rng = jax.random.fold_in(rng, state.step)
    zero = jnp.zeros((), jnp.float32)
    start = (jax.tree.map(jnp.zeros_like, state.params), zero, zero, zero, zero)
    params, shard = state.params, None
    if axis_name is not None:
        # Per-device copies of the parameters and of the running sums, as in optimizer_step: each device's
        # gradient is its shard's alone, and the psum after the scan is the one reduction.
        params, start = lax.pcast((state.params, start), axis_name, to="varying")
        shard = lax.axis_index(axis_name)

    def add_micro_batch(totals, xs):
        index, piece = xs
        # Dropout stream: one per micro-batch, and per (shard, micro-batch) when sharded.
        stream = index if shard is None else shard * micro_batches + index

        def sums(params):
            loss_sum, loss_count, correct, count = _forward(state, params, piece, True, step_rng, stream)
            return loss_sum, (loss_count, correct, count)

        (loss_sum, counts), grads = jax.value_and_grad(sums, has_aux=True)(params)
        return jax.tree.map(jnp.add, totals, (grads, loss_sum, *counts)), None

    totals, _ = lax.scan(add_micro_batch, start, (jnp.arange(micro_batches), micro))
    if axis_name is not None:
        totals = lax.psum(totals, axis_name)
    grads, loss_sum, loss_count, correct, count = totals
    # One division at the end: the gradient of the per-token mean over the whole batch.
    denominator = jnp.maximum(loss_count, 1.0)
    grads = jax.tree.map(lambda g: g / denominator.astype(g.dtype), grads)
    return apply_gradients(state, grads, loss_sum / denominator, correct / jnp.maximum(count, 1.0))


__all__ = ["accumulated_train_step", "split_micro_batches"]
