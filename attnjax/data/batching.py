"""Blank-token batches with a fixed padded length, so a train step compiles exactly once.

Layout of one example of requested length ``n`` (actual input length ``n' = task.input_length(n)``, which is
``n`` except for ``modular_arithmetic``) and output length ``m = task.output_length(n')``:

    position        0 .. n'-1       n' .. n'+m-1                      n'+m .. P-1
    token           input symbols   blank                             padding (all-zero one-hot)
    loss_mask       0               1                                 0
    accuracy_mask   0               1 up to the termination token     0

The model reads ``[B, P, V]`` one-hot vectors with ``V = task.input_size + 1`` (the last symbol is the blank,
id ``input_size``, as in the reference's ``make_model_with_empty_targets``). ``seq_lengths = n' + m`` tells a
bidirectional model which keys are real, so padding can never leak into real positions.

Loss vs accuracy, as in the reference (``experiments/example.py``): the loss is the cross-entropy averaged
over *every* output position, including the 0-padding after a termination token (so ``loss_mask`` marks all
blanks); only the accuracy uses the task's mask (``accuracy_mask``), which for stack_manipulation,
binary_addition and binary_multiplication stops at the termination token and equals ``loss_mask`` elsewhere.

Training lengths. The reference samples **one** length per batch, uniform in ``1..N``, so each step's loss is a
mean over ``B * m(n)`` tokens of a single length and every length gets the same share of steps
(:func:`training_batch`'s default). With ``per_example_lengths=True`` each example draws its own length: a
per-token mean then weights an example by its output length, so longer inputs dominate the gradient of
sequence tasks (classification tasks weight all examples equally either way). Both pad to
``padded_length(task, N)`` so the shape, hence the compiled step, never changes.
"""

from __future__ import annotations

import functools

import numpy as np

from attnjax.data.tasks import Task

Batch = dict[str, np.ndarray]


def vocab_size(task: Task) -> int:
    """Model input size ``V``: the task's alphabet plus the blank token."""
    return task.input_size + 1


def blank_token(task: Task) -> int:
    """Id of the blank token (the last one)."""
    return task.input_size


def _positive_int(name: str, value) -> int:
    if int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


@functools.lru_cache(maxsize=256)
def _padded_length(task: Task, max_length: int) -> int:
    return max(task.sequence_length(n) for n in range(1, max_length + 1))


def padded_length(task: Task, max_length: int) -> int:
    """``P``: positions needed by every requested length ``1..max_length`` (input plus blanks).

    Raises:
        ValueError: ``max_length`` below 1.
    """
    return _padded_length(task, _positive_int("max_length", max_length))


def _check_lengths(task: Task, lengths: np.ndarray, pad_to: int) -> None:
    if lengths.ndim != 1 or lengths.size == 0:
        raise ValueError(f"lengths must be a non-empty [B] array, got shape {lengths.shape}")
    if lengths.min() < 1:
        raise ValueError(f"lengths must be >= 1, got min {lengths.min()}")
    needed = max(task.sequence_length(int(n)) for n in np.unique(lengths))
    if needed > pad_to:
        raise ValueError(f"pad_to={pad_to} is too short: lengths up to {lengths.max()} need {needed} positions")


def make_batch(task: Task, rng: np.random.Generator, lengths: np.ndarray, pad_to: int) -> Batch:
    """Samples one example per entry of ``lengths`` and lays them out with blanks and padding.

    Args:
        task: the task.
        rng: NumPy generator (consumed).
        lengths: ``[B]`` requested input lengths, each >= 1.
        pad_to: ``P``, at least ``task.sequence_length(n)`` for every ``n`` in ``lengths``.

    Returns:
        dict with ``inputs [B, P, V]`` float32 one-hot (all-zero at padding), ``targets [B, P]`` int32 (0 where
        unscored), ``loss_mask [B, P]`` float32 (1 at every blank), ``accuracy_mask [B, P]`` float32 (1 at the
        blanks the task scores: up to and including its termination token, else all blanks) and
        ``seq_lengths [B]`` int32 (input plus blanks).

    Raises:
        ValueError: empty, non-integer or non-positive ``lengths``, or ``pad_to`` too short.
    """
    lengths = np.asarray(lengths)
    if lengths.size and not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
    lengths = lengths.astype(np.int64)
    pad_to = _positive_int("pad_to", pad_to)
    _check_lengths(task, lengths, pad_to)
    B, P, V = lengths.shape[0], pad_to, vocab_size(task)
    tokens = np.full((B, P), -1, dtype=np.int64)  # -1 = padding -> all-zero one-hot below
    targets = np.zeros((B, P), dtype=np.int32)
    loss_mask = np.zeros((B, P), dtype=np.float32)
    accuracy_mask = np.zeros((B, P), dtype=np.float32)
    seq_lengths = np.zeros((B,), dtype=np.int32)
    # One vectorized generator call per distinct length keeps this fast at batch 128.
    for n in np.unique(lengths):
        rows = np.nonzero(lengths == n)[0]
        x, y = task.sample(rng, rows.size, int(n))
        n_in, m = x.shape[1], y.shape[1]
        tokens[rows, :n_in] = x
        tokens[rows, n_in:n_in + m] = blank_token(task)
        targets[rows, n_in:n_in + m] = y
        loss_mask[rows, n_in:n_in + m] = 1.0
        accuracy_mask[rows, n_in:n_in + m] = task.accuracy_mask(y)
        seq_lengths[rows] = n_in + m
    inputs = (tokens[..., None] == np.arange(V)).astype(np.float32)
    return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask, "accuracy_mask": accuracy_mask,
            "seq_lengths": seq_lengths}


def sample_lengths(rng: np.random.Generator, batch_size: int, max_length: int, min_length: int = 1) -> np.ndarray:
    """``[B]`` input lengths drawn independently and uniformly from ``min_length..max_length`` (inclusive).

    Raises:
        ValueError: ``batch_size`` below 1, or not ``1 <= min_length <= max_length``.
    """
    batch_size = _positive_int("batch_size", batch_size)
    if not 1 <= min_length <= max_length:
        raise ValueError(f"need 1 <= min_length <= max_length, got min_length={min_length}, max_length={max_length}")
    return rng.integers(min_length, max_length + 1, size=(batch_size,))


def training_batch(task: Task, rng: np.random.Generator, batch_size: int, max_length: int,
                   per_example_lengths: bool = False) -> Batch:
    """A training batch padded to ``padded_length(task, max_length)``.

    Args:
        task: the task.
        rng: NumPy generator (consumed).
        batch_size: ``B`` >= 1.
        max_length: ``N``; lengths are uniform in ``1..N``.
        per_example_lengths: False (default, the reference protocol): one length per batch, so each batch's
            loss is a mean over tokens of one length and lengths share steps equally. True: one length per
            example, so under a per-token mean longer examples contribute more tokens (weight ``m(n)``).

    Returns:
        see :func:`make_batch`.

    Raises:
        ValueError: ``batch_size`` or ``max_length`` below 1.
    """
    batch_size = _positive_int("batch_size", batch_size)
    max_length = _positive_int("max_length", max_length)
    if per_example_lengths:
        lengths = sample_lengths(rng, batch_size, max_length)
    else:
        lengths = np.full((batch_size,), rng.integers(1, max_length + 1))
    return make_batch(task, rng, lengths, padded_length(task, max_length))


def length_batch(task: Task, rng: np.random.Generator, batch_size: int, length: int,
                 pad_to: int | None = None) -> Batch:
    """A batch whose every example has requested input length ``length`` (for per-length evaluation).

    ``pad_to`` defaults to ``task.sequence_length(length)``.
    """
    length = _positive_int("length", length)
    pad_to = task.sequence_length(length) if pad_to is None else pad_to
    return make_batch(task, rng, np.full((_positive_int("batch_size", batch_size),), length), pad_to)


def fixed_size_batches(batch: Batch, size: int, n: int | None = None) -> list[Batch]:
    """The first ``n`` rows (default: all) of ``batch`` (arrays ``[N, ...]`` with ``loss_mask`` and
    ``seq_lengths``) as batches of exactly ``size`` rows, so an evaluation compiles one program: the last batch
    is padded with all-zero rows, unscored (``loss_mask`` 0) and as long as the first row (``seq_lengths``).
    """
    n = len(batch["seq_lengths"]) if n is None else n
    padded = {k: np.concatenate([v[:n], np.zeros((-n % size, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
    padded["seq_lengths"][n:] = batch["seq_lengths"][0]
    return [{k: v[i:i + size] for k, v in padded.items()} for i in range(0, n, size)]
