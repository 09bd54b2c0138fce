"""``fit``: compile the train step once (donated state, explicit shardings) and run it with logging and checkpoints."""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from typing import IO, Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from attnjax.parallel.mesh import DATA_AXIS, SEQ_AXIS, data_mesh
from attnjax.train.checkpoint import Checkpointer, generator_state, set_generator_state
from attnjax.train.parallel_steps import sequence_layout
from attnjax.train.placement import put_replicated, shard_batch
from attnjax.train.state import TrainState
from attnjax.train.step_factory import make_train_step
from attnjax.train.steps import train_step
from attnjax.train.tensorboard import TensorBoardWriter

BatchSource = Iterator[Mapping[str, np.ndarray]] | Callable[[int], Mapping[str, np.ndarray]]
DataRng = np.random.Generator | Sequence[np.random.Generator] | None


def _compiled_step(state: TrainState, mesh: Mesh, data_axis: str, step_fn: Callable) -> Callable:
    """The compiled step :func:`fit` runs (:func:`~attnjax.train.make_train_step`): ``parallel="jit"``, or for a
    sequence-parallel model (its execution sets ``sequence_parallel_axis``) ``parallel="shard_map"`` with ring
    attention over the mesh's ``seq`` axis.

    Raises:
        ValueError: the mesh splits ``seq`` but the model is not sequence-parallel (or the reverse), or a
            sequence-parallel model with a ``step_fn`` other than :func:`~attnjax.train.train_step`.
    """
    if sequence_layout(state, mesh, SEQ_AXIS) is None:
        return make_train_step(parallel="jit", mesh=mesh, data_axis=data_axis, step_fn=step_fn)
    if step_fn is not train_step:
        raise ValueError(f"a sequence-parallel model trains with step_fn=attnjax.train.train_step (the shard_map "
                         f"step splits its batch over the sequence), "
                         f"got step_fn={getattr(step_fn, '__name__', step_fn)!r}")
    return make_train_step(parallel="shard_map", mesh=mesh, data_axis=data_axis, seq_axis=SEQ_AXIS)


class BatchShapeWarning(UserWarning):
    """:func:`fit` got a batch whose shapes or dtypes differ from its first batch's, so the step compiles again."""


def batch_signature(batch: Mapping[str, Any]) -> dict[str, str]:
    """``{key: "shape dtype"}`` of a host batch: what the compiled step is specialized to (no device transfer)."""
    return {k: f"{tuple(np.shape(v))} {v.dtype if hasattr(v, 'dtype') else np.result_type(v)}"
            for k, v in batch.items()}


def _shape_change(first: Mapping[str, str], new: Mapping[str, str], step: int) -> str:
    changed = sorted(k for k in {*first, *new} if first.get(k) != new.get(k))
    was = ", ".join(f"{k} {first.get(k, 'absent')}" for k in changed)
    now = ", ".join(f"{k} {new.get(k, 'absent')}" for k in changed)
    return (f"fit compiles its step for the first batch's shapes, but the batch of step {step} has {now} where the "
            f"first had {was}: every new shape compiles the step again, which costs far more than a step. Pad every "
            f"batch to one length and mask the padding (attnjax.data.training_batch does), or to a few bucket "
            f"lengths. Warned once per fit call")


def _next_batch(source: BatchSource, step: int):
    return source(step) if callable(source) else next(source)


def batch_counts(batch: Mapping[str, Any]) -> tuple[int, int]:
    """``(examples, tokens)`` of a host batch, from shapes alone (no device transfer).

    ``examples`` is the leading (batch) size ``B``; ``tokens`` is ``B`` times the padded sequence length, the
    largest dimension 1 among the ``[B, L, ...]`` arrays (``B`` when no array has one). Padding counts: it
    is the work the device does.
    """
    shapes = [np.shape(v) for v in batch.values() if np.ndim(v)]
    examples = shapes[0][0] if shapes else 0
    length = max((s[1] for s in shapes if len(s) >= 2), default=1)
    return int(examples), int(examples) * int(length)


def _generators(data_rng: DataRng) -> list[np.random.Generator]:
    gens = [] if data_rng is None else [data_rng] if isinstance(data_rng, np.random.Generator) else list(data_rng)
    bad = [type(g).__name__ for g in gens if not isinstance(g, np.random.Generator)]
    if bad:
        raise TypeError(f"data_rng must be a numpy.random.Generator or a sequence of them, got {bad}")
    return gens


def _rng_bits(rng: jax.Array) -> jax.Array:
    """The raw ``uint32`` bits of a typed key (or the legacy ``uint32`` key itself)."""
    return jax.random.key_data(rng) if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng


def _checkpoint_arrays(state: TrainState, rng: jax.Array) -> dict[str, Any]:
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state, "rng": _rng_bits(rng)}


def _checkpoint_meta(history: list[dict[str, float]], window: list, gens: list[np.random.Generator]
                     ) -> dict[str, Any]:
    # The metrics of the log window in progress are saved too (in their dtype: the window mean is taken in
    # it), so a resumed run logs the same records as an uninterrupted one.
    fetched = jax.device_get(window)
    return {"history": history, "window": [{k: float(v) for k, v in m.items()} for m in fetched],
            "window_dtypes": {k: str(np.asarray(v).dtype) for k, v in (fetched[0] if fetched else {}).items()},
            "data_rngs": [generator_state(g) for g in gens]}


def _resume(checkpointer: Checkpointer, state: TrainState, rng: jax.Array, gens: list[np.random.Generator],
            start_step: int, end_step: int, mesh: Mesh
            ) -> tuple[TrainState, list[dict[str, float]], list[dict[str, np.ndarray]]]:
    """``state`` with the newest intact checkpoint's step, parameters and optimizer state (unchanged when there
    is none), the logged history and the log window in progress; the data generators are set where they were."""
    restored = checkpointer.restore_latest(_checkpoint_arrays(state, rng))
    if restored is None:
        return state, [], []
    arrays, meta = restored.arrays, restored.meta
    if not start_step <= restored.step <= end_step:
        raise ValueError(f"checkpoint {restored.path} is at step {restored.step}, outside this run's steps "
                         f"{start_step}..{end_step} (the initial state's step plus num_steps); use another "
                         f"checkpoint_dir")
    if not np.array_equal(arrays["rng"], np.asarray(jax.device_get(_rng_bits(rng)))):
        raise ValueError(f"checkpoint {restored.path} was written by a run with another rng key; pass the same "
                         f"rng to resume it, or use another checkpoint_dir")
    if len(meta["data_rngs"]) != len(gens):
        raise ValueError(f"checkpoint {restored.path} saved {len(meta['data_rngs'])} data generator state(s), but "
                         f"data_rng has {len(gens)} generator(s)")
    for gen, saved in zip(gens, meta["data_rngs"]):
        set_generator_state(gen, saved)
    dtypes = meta["window_dtypes"]
    window = [{k: np.asarray(v, dtypes[k]) for k, v in m.items()} for m in meta["window"]]
    # The step as a Python int, as TrainState.create holds it: the jitted step sees the same argument types
    # (a weakly typed int32) as in an uninterrupted run, so it reuses its compiled program.
    state = state.replace(step=int(arrays["step"]), params=arrays["params"], opt_state=arrays["opt_state"])
    return put_replicated(state, mesh), list(meta["history"]), window


def fit(state: TrainState, batches: BatchSource, num_steps: int, *, rng: jax.Array, mesh: Mesh | None = None,
        data_axis: str = DATA_AXIS, log_every: int = 100, log_file: IO[str] | None = None,
        progress: bool | None = None, description: str = "train", step_fn: Callable = train_step,
        checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int | None = None, keep: int = 2,
        data_rng: DataRng = None, tensorboard_dir: str | os.PathLike | None = None,
        validate: Callable[[TrainState], Mapping[str, float]] | None = None,
        stop: Callable[[list[dict]], str | None] | None = None
        ) -> tuple[TrainState, list[dict[str, float]]]:
    """Trains for ``num_steps`` steps, optionally saving checkpoints and resuming from the newest one.

    The step is compiled once: every batch must have the same shapes and dtypes (pad to a fixed length with a
    loss mask). A batch that differs from the first compiles the step again and, the first time in a call, warns
    with a :class:`BatchShapeWarning` naming the old and new shapes. It runs on ``mesh``, built by
    :func:`~attnjax.train.make_train_step`: the batch split over ``data_axis`` (``parallel="jit"``), and for a
    sequence-parallel model also over ``seq`` with ring attention (``parallel="shard_map"``). In a multi-process
    job (after :func:`~attnjax.parallel.initialize_from_config`, with a mesh over every process's devices) every
    process calls ``fit`` with the same arguments: the same initial state, rng and global batches (the same seeded
    generator), and each feeds only its own rows (:mod:`attnjax.train.placement`), so the run equals a
    single-process one. Batches are generated on the host while the previous step runs (JAX dispatch is
    asynchronous); metrics are fetched only every ``log_every`` steps. Inside the loop the only transfers
    are the explicit ones (each batch's ``device_put``, the logged metrics' ``device_get``, checkpoints):
    the step itself moves nothing between host and device.

    **Checkpoints** (``checkpoint_dir`` set): the step, parameters, optimizer state, the rng key, the data
    generators' states (``data_rng``) and the logged metrics are saved every ``checkpoint_every`` steps and
    after the last one, keeping the newest ``keep`` (:mod:`attnjax.train.checkpoint`). A call that finds a
    checkpoint there continues from the newest intact one, exactly where it was: a run killed at any point
    and restarted with the same arguments ends with the same parameters and logged metrics as one that was
    never interrupted (timings aside). Corrupt or partial checkpoints are skipped with a warning naming them.
    The batches must then be regenerable from the saved position: either ``batches`` is a function of the
    step number alone, or every random draw it makes comes from the generators in ``data_rng``.

    Args:
        state: initial state. It is **consumed** (its buffers are donated); use the returned one.
        batches: iterator of host batches, or ``step -> batch``.
        num_steps: steps to run, from the initial state's step (a resumed run runs only the rest).
        rng: base key; each step folds in its step number.
        mesh: mesh with a ``data_axis`` (default: every device on ``'data'``), and a ``'seq'`` axis for a
            sequence-parallel model.
        data_axis: mesh axis the batch dimension is split over.
        log_every: steps per log record (metrics averaged over the window, plus ``steps_per_sec``,
            ``examples_per_sec`` and ``tokens_per_sec``: see :func:`batch_counts`).
        log_file: text stream receiving one JSON object per line (None: no file logging). A resumed run first
            writes the records it restored, so a file opened with ``"w"`` ends up with the whole run.
        progress: show a tqdm bar; None = only when stderr is a terminal.
        description: progress-bar label.
        step_fn: the pure train step, which ``fit`` compiles on ``mesh``: :func:`~attnjax.train.train_step`
            (default), :func:`~attnjax.train.seq2seq_train_step`, or gradient accumulation,
            ``make_train_step(micro_batches=k)``; its metrics must hold ``loss`` and ``accuracy``. A
            sequence-parallel model takes the default.
        checkpoint_dir: directory of this run's checkpoints (None: no checkpoints, no resuming).
        checkpoint_every: save every this many steps (None: only after the last step).
        keep: how many of the newest checkpoints to keep.
        data_rng: the NumPy generator(s) ``batches`` draws from; their ``bit_generator`` states are saved
            with every checkpoint and restored on resume.
        tensorboard_dir: also write every log record as TensorBoard scalars there
            (:class:`~attnjax.train.tensorboard.TensorBoardWriter`; needs tensorboardX). None: JSON lines only.
        validate: ``state -> {name: value}``, called at every log record; its values join the record as
            ``val_<name>`` (e.g. held-out accuracy for a stop rule). It must not touch the training data's
            generators. None: no validation.
        stop: a stop rule (e.g. :class:`~attnjax.train.TrainToFit`), called with the history after every log
            record: a returned reason (``"fit"``, ``"flat"``) ends the run there; the last record then holds
            ``"stop": reason``, or ``"stop": "budget"`` when the steps ran out first. A checkpoint is saved at
            the stopping step, and a resumed run that finds a stopped history returns at once.

    Returns:
        ``(state, history)`` where ``history`` holds the logged records (a resumed run's included).

    Raises:
        ValueError: ``num_steps < 0``, ``log_every < 1``, a ``stop`` rule without ``validate``,
            ``checkpoint_every < 1``, an iterator ``batches`` with ``checkpoint_dir`` but no ``data_rng`` (an
            iterator cannot be rewound), or a checkpoint of another run (another state, rng key or number of
            data generators, or past the last step), or a mesh and model that disagree on sequence parallelism.
    """
    if num_steps < 0 or log_every < 1:
        raise ValueError(f"need num_steps >= 0 and log_every >= 1, got num_steps={num_steps}, log_every={log_every}")
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be an int >= 1 or None, got {checkpoint_every!r}")
    if stop is not None and validate is None:
        raise ValueError("a stop rule reads validation metrics: pass validate= with stop=")
    gens = _generators(data_rng)
    if checkpoint_dir is not None and not callable(batches) and not gens:
        raise ValueError("checkpoint_dir with an iterator of batches needs data_rng (the generator(s) the iterator "
                         "draws from): a resumed run cannot rewind an iterator; or pass batches as step -> batch")
    mesh = data_mesh() if mesh is None else mesh
    jitted_step = _compiled_step(state, mesh, data_axis, step_fn)
    state, rng = put_replicated((state, rng), mesh)
    progress = sys.stderr.isatty() if progress is None else progress
    start_step = int(jax.device_get(state.step))
    end_step = start_step + num_steps
    history: list[dict[str, float]] = []
    window: list[dict[str, Any]] = []
    checkpointer = None if checkpoint_dir is None else Checkpointer(checkpoint_dir, keep)
    board = None if tensorboard_dir is None else TensorBoardWriter(tensorboard_dir)
    try:
        if checkpointer is not None:
            state, history, window = _resume(checkpointer, state, rng, gens, start_step, end_step, mesh)
            if log_file is not None and history:
                log_file.writelines(json.dumps(record) + "\n" for record in history)
                log_file.flush()
            for record in history if board is not None else ():
                board.write(record)
        first = int(jax.device_get(state.step))
        if history and "stop" in history[-1]:  # a resumed run that had stopped
            first = end_step
        stopped = False  # set when the stop rule ends the run (or marks the budget) at a log record
        counts: list[tuple[int, int]] = []  # (examples, tokens) of the window's steps run by this call
        first_signature, warned = None, False
        t0 = time.perf_counter()
        with tqdm(total=num_steps, initial=first - start_step, disable=not progress, desc=description,
                  leave=False) as bar:
            for step in range(first, end_step):
                host_batch = _next_batch(batches, step)
                counts.append(batch_counts(host_batch))
                if not warned:
                    signature = batch_signature(host_batch)
                    first_signature = first_signature or signature
                    if signature != first_signature:
                        warnings.warn(_shape_change(first_signature, signature, step), BatchShapeWarning, stacklevel=2)
                        warned = True
                state, metrics = jitted_step(state, shard_batch(host_batch, mesh, data_axis), rng)
                window.append(metrics)
                if len(window) == log_every or step + 1 == end_step:
                    fetched = jax.device_get(window)  # blocks: the window's steps are done
                    t1 = time.perf_counter()
                    seconds = max(t1 - t0, 1e-9)
                    record = {"step": step + 1}
                    record.update({k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]})
                    record["steps_per_sec"] = len(counts) / seconds
                    record["examples_per_sec"] = sum(e for e, _ in counts) / seconds
                    record["tokens_per_sec"] = sum(t for _, t in counts) / seconds
                    if validate is not None:
                        record.update({f"val_{k}": float(v) for k, v in validate(state).items()})
                    history.append(record)
                    reason = None if stop is None else stop(history)
                    if stop is not None and (reason is not None or step + 1 == end_step):
                        record["stop"] = reason or "budget"
                        stopped = True
                    if log_file is not None:
                        log_file.write(json.dumps(record) + "\n")
                        log_file.flush()
                    if board is not None:
                        board.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}")
                    bar.update(len(counts))
                    window, counts, t0 = [], [], time.perf_counter()  # validation time is not step time
                if checkpointer is not None and (step + 1 == end_step or stopped or (
                        checkpoint_every is not None and (step + 1) % checkpoint_every == 0)):
                    checkpointer.save(step + 1, _checkpoint_arrays(state, rng), _checkpoint_meta(history, window, gens))
                if stopped:
                    break
    finally:
        if checkpointer is not None:
            checkpointer.close()  # waits for the last save
        if board is not None:
            board.close()
    return state, history
