"""``fit``: jit the train step once (donated state, explicit shardings) and run it with logging."""

from __future__ import annotations

import functools
import json
import sys
import time
from typing import IO, Any, Callable, Iterator, Mapping

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from attnjax.parallel.mesh import DATA_AXIS, batch_sharded, data_mesh, replicated
from attnjax.train.state import TrainState
from attnjax.train.steps import train_step

BatchSource = Iterator[Mapping[str, np.ndarray]] | Callable[[int], Mapping[str, np.ndarray]]


@functools.lru_cache(maxsize=None)
def jit_train_step(mesh: Mesh, data_axis: str = DATA_AXIS) -> Callable:
    """``train_step`` jitted with the state donated and replicated, the batch split over ``data_axis``.

    XLA inserts the gradient all-reduce over ``data_axis`` (the loss is a global mean), so the result
    equals the single-device step. Cached per mesh, so repeated :func:`fit` calls (seeds, restarts)
    reuse one jitted function and its compiled programs.
    """
    rep, data = replicated(mesh), batch_sharded(mesh, data_axis)
    return jax.jit(train_step, donate_argnums=(0,), in_shardings=(rep, data, rep), out_shardings=(rep, rep))


def shard_batch(batch: Mapping[str, Any], mesh: Mesh, data_axis: str = DATA_AXIS) -> dict[str, jax.Array]:
    """Places a host batch with its leading dimension split over ``data_axis``.

    Raises:
        ValueError: batch size not divisible by the axis size.
    """
    n = mesh.shape[data_axis]
    sizes = {k: np.shape(v)[0] for k, v in batch.items()}
    if any(s % n for s in sizes.values()):
        raise ValueError(f"batch sizes {sizes} must be divisible by mesh axis {data_axis!r} of size {n}")
    return jax.device_put(dict(batch), batch_sharded(mesh, data_axis))


def _next_batch(source: BatchSource, step: int):
    return source(step) if callable(source) else next(source)


def fit(state: TrainState, batches: BatchSource, num_steps: int, *, rng: jax.Array, mesh: Mesh | None = None,
        data_axis: str = DATA_AXIS, log_every: int = 100, log_file: IO[str] | None = None,
        progress: bool | None = None, description: str = "train") -> tuple[TrainState, list[dict[str, float]]]:
    """Trains for ``num_steps`` steps.

    The step is compiled once: every batch must have the same shapes (pad to a fixed length with a
    loss mask). Batches are generated on the host while the previous step runs (JAX dispatch is
    asynchronous); metrics are fetched only every ``log_every`` steps.

    Args:
        state: initial state. It is **consumed** (its buffers are donated); use the returned one.
        batches: iterator of host batches, or ``step -> batch``.
        num_steps: steps to run.
        rng: base key; each step folds in its step number.
        mesh: mesh with a ``data_axis`` (default: every device on ``'data'``).
        data_axis: mesh axis the batch dimension is split over.
        log_every: steps per log record (metrics averaged over the window, plus ``steps_per_sec``).
        log_file: text stream receiving one JSON object per line (None: no file logging).
        progress: show a tqdm bar; None = only when stderr is a terminal.
        description: progress-bar label.

    Returns:
        ``(state, history)`` where ``history`` holds the logged records.

    Raises:
        ValueError: ``num_steps < 0`` or ``log_every < 1``.
    """
    if num_steps < 0 or log_every < 1:
        raise ValueError(f"need num_steps >= 0 and log_every >= 1, got num_steps={num_steps}, log_every={log_every}")
    mesh = data_mesh() if mesh is None else mesh
    step_fn = jit_train_step(mesh, data_axis)
    state = jax.device_put(state, replicated(mesh))
    rng = jax.device_put(rng, replicated(mesh))
    progress = sys.stderr.isatty() if progress is None else progress
    history: list[dict[str, float]] = []
    window: list[dict[str, jax.Array]] = []
    start_step = int(state.step)
    t0 = time.perf_counter()
    with tqdm(total=num_steps, disable=not progress, desc=description, leave=False) as bar:
        for i in range(num_steps):
            batch = shard_batch(_next_batch(batches, start_step + i), mesh, data_axis)
            state, metrics = step_fn(state, batch, rng)
            window.append(metrics)
            if len(window) == log_every or i == num_steps - 1:
                fetched = jax.device_get(window)  # blocks: the window's steps are done
                t1 = time.perf_counter()
                record = {"step": start_step + i + 1}
                record.update({k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]})
                record["steps_per_sec"] = len(window) / max(t1 - t0, 1e-9)
                history.append(record)
                if log_file is not None:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}")
                bar.update(len(window))
                window, t0 = [], t1
    return state, history
