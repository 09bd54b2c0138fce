"""``make_train_step``: the one way to build a train step, from the pure step to every parallel form.

One factory, the same step in every form: the per-token mean loss over the whole batch and its gradient,
then one optimizer update (:func:`~attnjax.train.steps.optimizer_step`). The forms differ in where the work
runs, not in what it computes: each equals the one-device :func:`~attnjax.train.train_step` up to float32
summation order (tested on 8 fake CPU devices). The pieces it composes stay in their modules:
:mod:`attnjax.train.accumulate` (micro-batches), :mod:`attnjax.train.placement` (``jit`` with shardings),
:mod:`attnjax.train.parallel_steps` (``shard_map``, sequence parallelism, ``pmap``).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
from jax.sharding import Mesh

from attnjax.parallel.mesh import DATA_AXIS
from attnjax.train.accumulate import accumulated_train_step
from attnjax.train.parallel_steps import pmap_train_step, shard_map_train_step
from attnjax.train.placement import jit_train_step
from attnjax.train.steps import StepFn, train_step

PARALLEL = (None, "jit", "shard_map", "pmap")


def _name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


@functools.lru_cache(maxsize=None)
def _pure_step(step_fn: Callable, micro_batches: int) -> StepFn:
    # Cached: equal arguments give the same function object, so a jit of it (fit's, cached per step
    # function) compiles once.
    if micro_batches == 1:
        return step_fn
    return functools.partial(accumulated_train_step, micro_batches=micro_batches)


@functools.lru_cache(maxsize=None)
def _plain_jit(step: StepFn) -> StepFn:
    return jax.jit(step, donate_argnums=(0,))


def make_train_step(*, parallel: str | None = None, mesh: Mesh | None = None, data_axis: str = DATA_AXIS,
                    seq_axis: str | None = None, micro_batches: int = 1, step_fn: Callable = train_step) -> StepFn:
    """A train step ``step(state, batch, rng) -> (new_state, metrics)``, pure or compiled for devices.

    ``parallel`` picks the form:

    * ``None`` (default): the **pure** step, not compiled: what ``fit(..., step_fn=...)`` takes (``fit``
      compiles it on its mesh) and what you ``jax.jit`` yourself. ``micro_batches=1`` gives ``step_fn`` itself.
    * ``"jit"``: ``jax.jit`` with the state donated. With a ``mesh``: the state and rng replicated, the batch
      split over ``data_axis`` (place them with :func:`~attnjax.train.put_replicated` and
      :func:`~attnjax.train.shard_batch`); XLA inserts the gradient all-reduce; works across processes.
      Without: inputs stay where they are (one device).
    * ``"shard_map"``: ``jax.shard_map`` over ``mesh``, the reduction written out (``psum`` of loss sums, token
      counts and gradients over ``data_axis``). With ``seq_axis`` it is the **sequence-parallel** step: every
      ``[B, L, ...]`` batch array is permuted into the model's ring layout and ``L`` is split over
      ``seq_axis``; the model's execution must set ``sequence_parallel_axis=seq_axis``. Inputs placed as for
      ``"jit"``, the batch in natural token order.
    * ``"pmap"``: ``jax.pmap`` over the local devices, axis ``data_axis``. The state replicated with a leading
      device axis (:func:`attnjax.train.parallel_steps.replicate`), the batch ``[D, B/D, ...]``
      (:func:`~attnjax.train.parallel_steps.split_batch`), one rng; metrics come back ``[D]`` (equal). pmap
      sees one process's devices only: across hosts use ``"jit"`` or ``"shard_map"``.

    ``micro_batches=k > 1`` accumulates over ``k`` micro-batches, one after another (activations of ``B / k``
    examples alive at a time; :mod:`attnjax.train.accumulate`), in every form: under ``"shard_map"`` and
    ``"pmap"`` each device accumulates over its own shard, then the one reduction.

    Cached: equal arguments give the same function object, so seeds, restarts and ``fit`` calls reuse its
    compiled programs.

    Args:
        parallel: ``None``, ``"jit"``, ``"shard_map"`` or ``"pmap"`` (above).
        mesh: the device mesh, for ``"jit"`` (optional) and ``"shard_map"`` (required).
        data_axis: the mesh axis (pmap: the axis name) the batch dimension is split over.
        seq_axis: the mesh axis the sequence is split over (``"shard_map"`` only); None: no sequence
            parallelism.
        micro_batches: ``k >= 1``; ``B`` (per device: ``B / D``) must be divisible by it.
        step_fn: the pure one-device step: :func:`~attnjax.train.train_step` (default) or another
            module-level ``(state, batch, rng) -> (state, metrics)`` such as
            :func:`~attnjax.train.seq2seq_train_step`. Micro-batches, ``"shard_map"`` and ``"pmap"`` need
            ``train_step``: they run its sums per piece and per device.

    Returns:
        the step. Each call's result equals ``step_fn`` on the whole batch on one device (up to float32
        summation order; with dropout, the sharded and micro-batched forms draw other masks, from the same
        distribution).

    Raises:
        ValueError: a combination that does not exist, naming the argument and its value: an unknown
            ``parallel``, ``micro_batches`` not an int >= 1, ``mesh`` without a mesh form or missing for
            ``"shard_map"``, ``seq_axis`` outside ``"shard_map"``, an axis the mesh does not have, or
            micro-batches / ``"shard_map"`` / ``"pmap"`` with a ``step_fn`` other than ``train_step``. When
            called, the forms raise on batches they cannot split
            (:func:`~attnjax.train.parallel_steps.shard_map_train_step`).
    """
    if parallel not in PARALLEL:
        raise ValueError(f"parallel must be one of {PARALLEL}, got parallel={parallel!r}")
    if not isinstance(micro_batches, int) or isinstance(micro_batches, bool) or micro_batches < 1:
        raise ValueError(f"micro_batches must be an int >= 1, got {micro_batches!r}")
    if not callable(step_fn):
        raise ValueError(f"step_fn must be a callable (state, batch, rng) -> (state, metrics), got {step_fn!r}")
    if step_fn is not train_step:
        if micro_batches > 1:
            raise ValueError(f"micro_batches={micro_batches} accumulates attnjax.train.train_step's loss sums; "
                             f"step_fn={_name(step_fn)} has no micro-batch form (use micro_batches=1)")
        if parallel in ("shard_map", "pmap"):
            raise ValueError(f"parallel={parallel!r} runs attnjax.train.train_step on each device's shard; "
                             f"step_fn={_name(step_fn)} has no per-device form (use parallel='jit')")
    if seq_axis is not None and parallel != "shard_map":
        raise ValueError(f"seq_axis={seq_axis!r} (sequence parallelism) needs parallel='shard_map', "
                         f"got parallel={parallel!r}")
    if mesh is not None and parallel not in ("jit", "shard_map"):
        why = ("pmap maps over the local devices, without a mesh" if parallel == "pmap" else
               "the pure step has no placement")
        raise ValueError(f"a mesh (axes {dict(mesh.shape)}) needs parallel='jit' or 'shard_map', got "
                         f"parallel={parallel!r} ({why})")
    if parallel == "shard_map" and mesh is None:
        raise ValueError("parallel='shard_map' needs a mesh, got mesh=None")
    if mesh is not None:
        for arg, axis in (("data_axis", data_axis), ("seq_axis", seq_axis)):
            if axis is not None and axis not in mesh.axis_names:
                raise ValueError(f"{arg}={axis!r} is not an axis of the mesh, whose axes are {dict(mesh.shape)}")
        if seq_axis is not None and seq_axis == data_axis:
            raise ValueError(f"seq_axis={seq_axis!r} is also data_axis: the sequence and the batch need two mesh axes")

    if parallel == "shard_map":
        return shard_map_train_step(mesh, data_axis, seq_axis, micro_batches)
    if parallel == "pmap":
        return pmap_train_step(data_axis, None, micro_batches)
    step = _pure_step(step_fn, micro_batches)
    if parallel is None:
        return step
    return _plain_jit(step) if mesh is None else jit_train_step(mesh, data_axis, step)


__all__ = ["PARALLEL", "make_train_step"]
