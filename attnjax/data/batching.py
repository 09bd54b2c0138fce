"""Blank-token batches with a fixed padded length, so a train step compiles exactly once.

Layout of one example of input length ``n`` and output length ``m = task.output_length(n)``:

    position   0 .. n-1        n .. n+m-1        n+m .. P-1
    token      input symbols   blank             padding (all-zero one-hot)
    scored     no              yes (targets)     no

The model reads ``[B, P, V]`` one-hot vectors with ``V = task.input_size + 1`` (the last symbol is the
blank) and is scored only where ``loss_mask`` is 1. ``seq_lengths = n + m`` tells a bidirectional
model which keys are real, so padding can never leak into real positions.

Training batches sample the input length **per example**, uniformly in ``1..max_length`` (Delétang
et al. sample one length per batch; per example gives every step the whole length range at the same
padded shape).
"""

from __future__ import annotations

import numpy as np

from attnjax.data.tasks import Task

Batch = dict[str, np.ndarray]


def vocab_size(task: Task) -> int:
    """Model input size ``V``: the task's alphabet plus the blank token."""
    return task.input_size + 1


def blank_token(task: Task) -> int:
    """Id of the blank token (the last one)."""
    return task.input_size


def padded_length(task: Task, max_length: int) -> int:
    """``P``: positions needed for the longest input ``max_length`` and its blanks."""
    return int(max_length) + task.output_length(int(max_length))


def _check_lengths(task: Task, lengths: np.ndarray, pad_to: int) -> None:
    if lengths.ndim != 1 or lengths.size == 0:
        raise ValueError(f"lengths must be a non-empty [B] array, got shape {lengths.shape}")
    if lengths.min() < 1:
        raise ValueError(f"lengths must be >= 1, got min {lengths.min()}")
    needed = max(n + task.output_length(int(n)) for n in np.unique(lengths))
    if needed > pad_to:
        raise ValueError(f"pad_to={pad_to} is too short: lengths up to {lengths.max()} need {needed} positions")


def make_batch(task: Task, rng: np.random.Generator, lengths: np.ndarray, pad_to: int) -> Batch:
    """Samples one example per entry of ``lengths`` and lays them out with blanks and padding.

    Args:
        task: the task.
        rng: NumPy generator (consumed).
        lengths: ``[B]`` input lengths, each >= 1.
        pad_to: ``P``, at least ``n + output_length(n)`` for every ``n`` in ``lengths``.

    Returns:
        dict with ``inputs [B, P, V]`` float32 one-hot, ``targets [B, P]`` int32 (0 where unscored),
        ``loss_mask [B, P]`` float32, ``seq_lengths [B]`` int32 (input plus blanks).

    Raises:
        ValueError: empty or non-positive ``lengths``, or ``pad_to`` too short.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    _check_lengths(task, lengths, int(pad_to))
    B, P, V = lengths.shape[0], int(pad_to), vocab_size(task)
    tokens = np.full((B, P), -1, dtype=np.int64)  # -1 = padding -> all-zero one-hot below
    targets = np.zeros((B, P), dtype=np.int32)
    loss_mask = np.zeros((B, P), dtype=np.float32)
    seq_lengths = np.zeros((B,), dtype=np.int32)
    # One vectorized generator call per distinct length keeps this fast at batch 128.
    for n in np.unique(lengths):
        rows = np.nonzero(lengths == n)[0]
        x, y = task.sample(rng, rows.size, int(n))
        n, m = int(n), y.shape[1]
        tokens[rows, :n] = x
        tokens[rows, n:n + m] = blank_token(task)
        targets[rows, n:n + m] = y
        loss_mask[rows, n:n + m] = 1.0
        seq_lengths[rows] = n + m
    inputs = (tokens[..., None] == np.arange(V)).astype(np.float32)
    return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask, "seq_lengths": seq_lengths}


def sample_lengths(rng: np.random.Generator, batch_size: int, max_length: int, min_length: int = 1) -> np.ndarray:
    """``[B]`` input lengths drawn uniformly from ``min_length..max_length`` (inclusive)."""
    if not 1 <= min_length <= max_length:
        raise ValueError(f"need 1 <= min_length <= max_length, got min_length={min_length}, max_length={max_length}")
    return rng.integers(min_length, max_length + 1, size=(batch_size,))


def training_batch(task: Task, rng: np.random.Generator, batch_size: int, max_length: int) -> Batch:
    """A batch with per-example lengths uniform in ``1..max_length``, padded to ``padded_length``."""
    lengths = sample_lengths(rng, batch_size, max_length)
    return make_batch(task, rng, lengths, padded_length(task, max_length))


def length_batch(task: Task, rng: np.random.Generator, batch_size: int, length: int, pad_to: int | None = None) -> Batch:
    """A batch whose every example has input length ``length`` (for per-length evaluation)."""
    pad_to = padded_length(task, length) if pad_to is None else pad_to
    return make_batch(task, rng, np.full((batch_size,), length), pad_to)
