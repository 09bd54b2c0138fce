"""Where a train step runs and how its inputs get there: one device, a mesh, or a mesh over many processes.

One convention for host batches everywhere (:func:`shard_batch`, :func:`~attnjax.train.fit`,
:func:`~attnjax.train.evaluate`): a host batch is the **global** batch ``[B, ...]``. In a single process it
is split over the mesh's ``data`` axis; in a multi-process job (``jax.process_count() > 1``) every process
passes the same global batch (the same seeded generator on every host) and feeds only its own rows
(:func:`~attnjax.parallel.process_batch_rows`), so the job computes exactly what one process would. A
job that loads different data on each host builds its global arrays itself with
:func:`~attnjax.parallel.global_batch_from_process_data` and calls the jitted step directly.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from attnjax.parallel.distributed import global_batch_from_process_data, process_batch_rows, to_global
from attnjax.parallel.mesh import DATA_AXIS, batch_sharded, replicated
from attnjax.train.steps import train_step


def jit_train_step(mesh: Mesh, data_axis: str = DATA_AXIS, step_fn: Callable = train_step) -> Callable:
    """``step_fn`` jitted with the state donated and replicated, the batch split over ``data_axis``: the
    ``parallel="jit"`` form of :func:`~attnjax.train.make_train_step`, which is how to build it.

    XLA inserts the gradient all-reduce over ``data_axis`` (the loss is a global mean), so the result
    equals the single-device step. Cached per (mesh, step function), so repeated :func:`fit` calls
    (seeds, restarts) reuse one jitted function and its compiled programs.

    Args:
        mesh: mesh with a ``data_axis``.
        data_axis: mesh axis the batch dimension is split over.
        step_fn: a module-level pure ``(state, batch, rng) -> (state, metrics)`` whose batch is a dict of
            arrays with a leading batch dimension: :func:`attnjax.train.train_step` (default) or
            :func:`attnjax.train.seq2seq_train_step`.
    """
    return _jit_train_step(mesh, data_axis, step_fn)


@functools.lru_cache(maxsize=None)
def _jit_train_step(mesh: Mesh, data_axis: str, step_fn: Callable) -> Callable:
    # The arguments normalized before the cache: jit_train_step(mesh) is jit_train_step(mesh, "data", train_step).
    rep, data = replicated(mesh), batch_sharded(mesh, data_axis)
    return jax.jit(step_fn, donate_argnums=(0,), in_shardings=(rep, data, rep), out_shardings=(rep, rep))


def shard_batch(batch: Mapping[str, Any], mesh: Mesh, data_axis: str = DATA_AXIS) -> dict[str, jax.Array]:
    """Places a global host batch ``[B, ...]`` with its leading dimension split over ``data_axis``.

    With several processes, each passes the same global batch and only its own rows are transferred.

    Raises:
        ValueError: batch size not divisible by the axis size.
    """
    n = mesh.shape[data_axis]
    sizes = {k: np.shape(v)[0] for k, v in batch.items()}
    if any(s % n for s in sizes.values()):
        raise ValueError(f"batch sizes {sizes} must be divisible by mesh axis {data_axis!r} of size {n}")
    if jax.process_count() == 1:
        return jax.device_put(dict(batch), batch_sharded(mesh, data_axis))
    size = next(iter(sizes.values()))
    rows = process_batch_rows(mesh, size, data_axis)
    return global_batch_from_process_data({k: np.asarray(v)[rows] for k, v in batch.items()}, mesh, size, data_axis)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    """A pytree every process holds identically (state, RNG key) as arrays replicated over ``mesh``.

    ``jax.device_put`` in one process; :func:`~attnjax.parallel.to_global` when the mesh spans processes
    (``device_put`` refuses shardings over other hosts' devices).
    """
    return jax.device_put(tree, replicated(mesh)) if jax.process_count() == 1 else to_global(tree, mesh)
