"""The per-device train step and its shard_map and pmap forms: building blocks of
:func:`~attnjax.train.make_train_step`, which is how to build a train step (the jit form is
:func:`attnjax.train.placement.jit_train_step`).

* :func:`shard_map_train_step` — ``jax.shard_map``: each device runs the step on its shard and the
  reduction is written out (:func:`~attnjax.train.steps.optimizer_step` with ``axis_name``). This is
  also the sequence-parallel step: when the model's execution sets ``sequence_parallel_axis``, the
  token dimension is split over the mesh's ``seq`` axis too and attention runs as ring attention.
* :func:`pmap_train_step` — ``jax.pmap``, the older per-device API, same per-device function.

Both, like the jit step, compute the same thing: the per-token mean loss over the whole batch (sums and
token counts are summed over devices before dividing) and its gradient, then one optimizer update, so each
equals the one-device step up to float32 summation order. With ``micro_batches > 1`` each device
accumulates over its shard in micro-batches (:func:`~attnjax.train.accumulate.accumulated_train_step`)
before the one reduction. With dropout, shard_map and pmap draw each shard's masks from the step key
folded with the shard index, so they differ from the jit step's masks (which are drawn for the global
batch) though not in distribution.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import numpy as np
from flax import jax_utils
from jax import lax
from jax.sharding import Mesh, PartitionSpec

from attnjax.parallel.layouts import check_layout_length, to_layout
from attnjax.parallel.mesh import DATA_AXIS, SEQ_AXIS, batch_sharded, replicated
from attnjax.train.accumulate import accumulated_train_step
from attnjax.train.state import TrainState
from attnjax.train.steps import Batch, Metrics, StepFn, _forward, optimizer_step


def sharded_train_step(state: TrainState, batch: Batch, rng: jax.Array, axis_name: str | tuple[str, ...],
                       micro_batches: int = 1) -> tuple[TrainState, Metrics]:
    """The per-device body of the shard_map and pmap steps: ``train_step`` on this device's shard.

    Args:
        state: replicated train state.
        batch: this device's shard: ``[B/D, L, ...]`` (``[B/D, L/P, ...]`` when sequence-parallel).
        rng: the replicated base key.
        axis_name: the axis (or axes) the batch is split over; sums and gradients are reduced over it.
        micro_batches: > 1: the shard runs as that many micro-batches, one after another
            (:func:`~attnjax.train.accumulate.accumulated_train_step`), then the one reduction.

    Returns:
        ``(new_state, metrics)``, equal on every device.
    """
    if micro_batches > 1:
        return accumulated_train_step(state, batch, rng, micro_batches=micro_batches, axis_name=axis_name)
    shard = lax.axis_index(axis_name)
    return optimizer_step(state, lambda params, step_rng: _forward(state, params, batch, True, step_rng, shard),
                          rng, axis_name=axis_name)


def _check_batch(batch: Mapping[str, Any], name: str, size: int) -> int:
    sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in batch.items()}
    batch_size = sizes.get("inputs", next(iter(sizes.values()), None))
    if any(s is None or s != batch_size for s in sizes.values()) or batch_size % size:
        raise ValueError(f"every batch array needs the same leading (batch) size, divisible by mesh axis {name!r} "
                         f"of size {size}; got leading sizes {sizes}")
    return batch_size


def sequence_layout(state: TrainState, mesh: Mesh, seq_axis: str = SEQ_AXIS) -> str | None:
    """The ring layout of a sequence-parallel model (its ``execution.sequence_parallel_layout``), else None.

    The model is found as ``state.apply_fn.model`` (:class:`~attnjax.train.state.ModelApply`).

    Raises:
        ValueError: the mesh splits ``seq_axis`` (size > 1) but the model is not sequence-parallel, or the
            model's ``sequence_parallel_axis`` is not ``seq_axis`` or not an axis of the mesh.
    """
    execution = getattr(getattr(state.apply_fn, "model", None), "execution", None)
    axis = getattr(execution, "sequence_parallel_axis", None)
    seq_size = dict(mesh.shape).get(seq_axis, 1)
    if axis is None:
        if seq_size > 1:
            raise ValueError(f"the mesh splits mesh axis {seq_axis!r} {seq_size} ways, but the model is not "
                             f"sequence-parallel (its execution.sequence_parallel_axis is None); set it to "
                             f"{seq_axis!r} or use a mesh with {seq_axis}=1")
        return None
    if axis != seq_axis or axis not in mesh.shape:
        raise ValueError(f"the model's execution.sequence_parallel_axis is {axis!r}, but the step shards the sequence "
                         f"over seq_axis={seq_axis!r} of a mesh with axes {dict(mesh.shape)}; build the step with "
                         f"make_train_step(parallel='shard_map', seq_axis={axis!r}) on a mesh with that axis")
    return execution.sequence_parallel_layout


def _batch_specs(batch: Mapping[str, Any], data_axis: str, seq_axis: str | None) -> dict[str, PartitionSpec]:
    """Per-example arrays ``[B]`` split over ``data``; token arrays ``[B, L, ...]`` also over ``seq``."""
    return {k: PartitionSpec(data_axis) if np.ndim(v) == 1 or seq_axis is None else PartitionSpec(data_axis, seq_axis)
            for k, v in batch.items()}


def _shard_map_step(state: TrainState, batch: Batch, rng: jax.Array, *, mesh: Mesh, data_axis: str,
                    seq_axis: str | None, micro_batches: int) -> tuple[TrainState, Metrics]:
    batch = dict(batch)  # its leading sizes were checked by the caller (shard_map_train_step's step)
    layout = sequence_layout(state, mesh, seq_axis)
    axes: str | tuple[str, ...] = data_axis
    if layout is not None:
        axes, length, ring = (data_axis, seq_axis), np.shape(batch["inputs"])[1], mesh.shape[seq_axis]
        for k, v in batch.items():
            if np.ndim(v) >= 2:
                if np.shape(v)[1] != length:
                    raise ValueError(f"sequence parallelism splits dimension 1 of every [B, L, ...] batch array; "
                                     f"batch[{k!r}] has shape {np.shape(v)}, inputs have L={length}")
                check_layout_length(f"batch[{k!r}] {np.shape(v)}", length, layout, ring)
                # Permuted once here; the model's positions and ring masks know the layout, and every
                # position-wise layer and the loss do not care about token order.
                batch[k] = to_layout(v, layout, ring, axis=1)
    specs = _batch_specs(batch, data_axis, None if layout is None else seq_axis)
    # Per shard: state and rng whole; batch [B/D, L, ...] or, sequence-parallel, [B/D, L/P, ...].
    state_spec, rng_spec, metrics_spec = PartitionSpec(), PartitionSpec(), PartitionSpec()
    body = functools.partial(sharded_train_step, axis_name=axes, micro_batches=micro_batches)
    step = jax.shard_map(body, mesh=mesh, in_specs=(state_spec, specs, rng_spec), out_specs=(state_spec, metrics_spec))
    return step(state, batch, rng)


@functools.lru_cache(maxsize=None)
def shard_map_train_step(mesh: Mesh, data_axis: str = DATA_AXIS, seq_axis: str | None = SEQ_AXIS,
                         micro_batches: int = 1) -> StepFn:
    """``train_step`` as an explicit ``jax.shard_map`` over ``mesh``, jitted with the state donated.

    Each device computes the loss sums and gradient of its batch shard; sums, token counts and gradients
    are ``psum``-ed over ``data_axis`` (and ``seq_axis``), so the loss is the per-token mean of the whole
    batch and the result equals the one-device :func:`~attnjax.train.train_step`.

    Sequence parallelism: if the model's execution sets ``sequence_parallel_axis=seq_axis`` the step permutes
    every ``[B, L, ...]`` batch array into the model's ring layout and splits ``L`` over ``seq_axis``;
    the model's self-attention layers run ring attention over it, position-wise layers stay local, and
    the loss is reduced over both axes. Other mesh axes (``model``) see replicated inputs.

    Inputs: the state and rng replicated (``jax.device_put(x, replicated(mesh))``), the batch in natural
    token order, split over ``data_axis`` (:func:`attnjax.train.shard_batch`). Cached per mesh, axes and
    ``micro_batches`` (> 1: each device accumulates over its shard in that many micro-batches).

    Raises (when called):
        ValueError: batch arrays with different or indivisible leading sizes (with micro-batches: a batch
            size not divisible by the ``data_axis`` size times ``micro_batches``), a sequence length not
            divisible by the ring (``2 * P`` for zigzag), or a model/mesh mismatch (:func:`sequence_layout`).
    """
    rep, data = replicated(mesh), batch_sharded(mesh, data_axis)
    fn = functools.partial(_shard_map_step, mesh=mesh, data_axis=data_axis, seq_axis=seq_axis,
                           micro_batches=micro_batches)
    jitted = jax.jit(fn, donate_argnums=(0,), in_shardings=(rep, data, rep), out_shardings=(rep, rep))

    @functools.wraps(fn)
    def step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
        # Checked before jit, whose own sharding check would fire first with a less helpful message.
        batch_size, devices = _check_batch(batch, data_axis, mesh.shape[data_axis]), mesh.shape[data_axis]
        if (batch_size // devices) % micro_batches:
            raise ValueError(f"micro_batches={micro_batches} splits each device's rows: a batch of {batch_size} over "
                             f"mesh axis {data_axis!r} of size {devices} leaves {batch_size // devices} rows per "
                             f"device; use a batch size divisible by {devices * micro_batches}")
        return jitted(state, batch, rng)

    return step


@functools.lru_cache(maxsize=None)
def pmap_train_step(data_axis: str = DATA_AXIS, devices: tuple[jax.Device, ...] | None = None,
                    micro_batches: int = 1) -> StepFn:
    """``train_step`` under ``jax.pmap``: the same per-device function and reduction as the shard_map step.

    The returned ``step(state, batch, rng)`` takes the state replicated with a leading device axis
    (:func:`replicate`), the batch split into ``[D, B/D, ...]`` (:func:`split_batch`) and one unreplicated
    rng; it returns the new replicated state (donated input) and ``[D]`` metrics (equal across devices).

    Args:
        data_axis: the pmap axis name.
        devices: the devices (default: all local devices, ``D = jax.local_device_count()``).
        micro_batches: > 1: each device accumulates over its ``B/D`` rows in that many micro-batches.
    """
    body = functools.partial(sharded_train_step, axis_name=data_axis, micro_batches=micro_batches)
    return jax.pmap(body, axis_name=data_axis,
                    in_axes=(0, 0, None), donate_argnums=(0,), devices=None if devices is None else list(devices))


def split_batch(batch: Mapping[str, Any], num_devices: int) -> dict[str, np.ndarray]:
    """``[B, ...]`` host arrays -> ``[num_devices, B / num_devices, ...]`` for :func:`pmap_train_step`.

    Raises:
        ValueError: leading sizes that differ or are not divisible by ``num_devices``.
    """
    batch_size = _check_batch(batch, "pmap devices", num_devices)
    return {k: np.reshape(np.asarray(v), (num_devices, batch_size // num_devices, *np.shape(v)[1:]))
            for k, v in batch.items()}


def replicate(tree: Any, devices: tuple[jax.Device, ...] | None = None) -> Any:
    """One copy of ``tree`` per device, stacked on a leading axis (the pmap state layout)."""
    return jax_utils.replicate(tree, None if devices is None else list(devices))


def unreplicate(tree: Any) -> Any:
    """The first device's copy of a replicated tree (they are equal)."""
    return jax_utils.unreplicate(tree)


__all__ = ["pmap_train_step", "replicate", "sequence_layout", "shard_map_train_step", "sharded_train_step",
           "split_batch", "unreplicate"]
