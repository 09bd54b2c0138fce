"""The decoder-only (autoregressive) layout of a task: input, separator, output, end token, as next tokens.

One example of requested length ``n`` (input ``x`` of length ``n' = task.input_length(n)``, target ``y`` of length
``m = task.output_length(n')``, of which the first ``k`` are the answer: up to and including the task's
termination token, else all ``m``, see :meth:`~attnjax.data.tasks.Task.answer_lengths`) is the token sequence

    position   0 .. n'-1     n'     n'+1 .. n'+k    n'+k+1    (then padding up to P + 1)
    token      x             SEP    y[:k]           END

with one vocabulary ``V = I + O + 2`` for an input alphabet of ``I`` symbols and an output alphabet of ``O``:
input symbol ``s`` is id ``s``, output symbol ``o`` is id ``I + o`` (the two alphabets never share an id, so a
model always knows which side of the separator it writes), ``SEP = I + O`` and ``END = I + O + 1``.

The model reads positions ``0 .. P-1`` and predicts the token one position later (teacher forcing):

    inputs     [B, P, V]   one-hot of tokens[:, :-1] (all-zero at padding)
    targets    [B, P]      tokens[:, 1:] (0 where unscored)
    loss_mask  [B, P]      1 where the next token is an output token or END: the loss is on the output only
    accuracy_mask [B, P]   1 where the next token is a scored answer token (the task's accuracy mask; not END)
    seq_lengths [B]        n' + 1 + k: the positions read (the END token is a target, never an input)
    prompt_lengths [B]     n' + 1: greedy decoding starts after the separator

Differences from the encoder protocol (:mod:`attnjax.data.batching`): a task with a termination token stops at
it (the encoder protocol keeps the 0-padding after it as blank targets in the loss), and the END token is
trained, so a free-running model says where its answer ends. Scores compare the first ``k`` generated tokens
with ``y[:k]`` under the same accuracy mask as the encoder protocol; exact match asks for all ``k``.
"""

from __future__ import annotations

import numpy as np

from attnjax.data.batching import Batch
from attnjax.data.tasks import Task


def vocab_size(task: Task) -> int:
    """``V = I + O + 2``: input symbols, output symbols, the separator and the end token."""
    return task.input_size + task.output_size + 2


def separator_token(task: Task) -> int:
    return task.input_size + task.output_size


def end_token(task: Task) -> int:
    return task.input_size + task.output_size + 1


def output_token(task: Task, symbols: np.ndarray) -> np.ndarray:
    """Output symbols ``[...]`` in ``0..O-1`` -> their token ids ``I + symbol``."""
    return np.asarray(symbols) + task.input_size


def output_symbol(task: Task, tokens: np.ndarray) -> np.ndarray:
    """Token ids -> output symbols (``token - I``; ids that are not output symbols map outside ``0..O-1``)."""
    return np.asarray(tokens) - task.input_size


def read_length(task: Task, length: int) -> int:
    """Positions the model reads for requested input length ``length`` at most: ``n' + 1 + m``."""
    n = task.input_length(int(length))
    return n + 1 + task.output_length(n)


def padded_length(task: Task, max_length: int) -> int:
    """``P``: positions needed by every requested length ``1..max_length``.

    Raises:
        ValueError: ``max_length`` below 1.
    """
    if int(max_length) != max_length or max_length < 1:
        raise ValueError(f"max_length must be an integer >= 1, got {max_length!r}")
    return max(read_length(task, n) for n in range(1, int(max_length) + 1))


def make_batch(task: Task, rng: np.random.Generator, lengths: np.ndarray, pad_to: int) -> Batch:
    """Samples one example per entry of ``lengths`` in the autoregressive layout (module docstring).

    Args:
        task: the task.
        rng: NumPy generator (consumed; the same draws as the encoder layout's :func:`make_batch`, so both
            protocols see the same examples for the same seed).
        lengths: ``[B]`` requested input lengths, each >= 1.
        pad_to: ``P``, at least :func:`read_length` of every length.

    Returns:
        dict with ``inputs [B, P, V]`` float32, ``targets``, ``loss_mask``, ``accuracy_mask`` ``[B, P]``,
        ``seq_lengths`` and ``prompt_lengths`` ``[B]`` int32 (module docstring).

    Raises:
        ValueError: empty, non-integer or non-positive ``lengths``, or ``pad_to`` too short (both named).
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.size == 0 or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be a non-empty [B] integer array, got shape {lengths.shape}, "
                         f"dtype {lengths.dtype}")
    if lengths.min() < 1:
        raise ValueError(f"lengths must be >= 1, got min {lengths.min()}")
    needed = max(read_length(task, int(n)) for n in np.unique(lengths))
    if int(pad_to) < needed:
        raise ValueError(f"pad_to={pad_to} is too short: lengths up to {lengths.max()} need {needed} positions")
    B, P, V = lengths.shape[0], int(pad_to), vocab_size(task)
    tokens = np.full((B, P + 1), -1, dtype=np.int64)  # -1 = padding -> all-zero one-hot
    scored = np.zeros((B, P + 1), dtype=bool)
    seq_lengths = np.zeros((B,), dtype=np.int32)
    prompt_lengths = np.zeros((B,), dtype=np.int32)
    for n in np.unique(lengths):
        rows = np.nonzero(lengths == n)[0]
        x, y = task.sample(rng, rows.size, int(n))
        n_in = x.shape[1]
        k = task.answer_lengths(y)  # up to the termination token, or the whole row
        tokens[rows, :n_in] = x
        tokens[rows, n_in] = separator_token(task)
        answer = np.arange(y.shape[1])[None, :] < k[:, None]
        tokens[rows, n_in + 1:n_in + 1 + y.shape[1]] = np.where(answer, output_token(task, y), -1)
        tokens[rows, n_in + 1 + k] = end_token(task)
        scored[rows, n_in + 1:n_in + 1 + y.shape[1]] = task.accuracy_mask(y)
        seq_lengths[rows] = n_in + 1 + k
        prompt_lengths[rows] = n_in + 1
    positions = np.arange(P)[None, :]
    reads, nexts = np.where(positions < seq_lengths[:, None], tokens[:, :-1], -1), tokens[:, 1:]
    answer = (positions >= prompt_lengths[:, None] - 1) & (positions < seq_lengths[:, None])
    return {"inputs": (reads[..., None] == np.arange(V)).astype(np.float32),
            "targets": np.maximum(nexts, 0).astype(np.int32) * answer,
            "loss_mask": answer.astype(np.float32),
            "accuracy_mask": scored[:, 1:].astype(np.float32),
            "seq_lengths": seq_lengths, "prompt_lengths": prompt_lengths}


def training_batch(task: Task, rng: np.random.Generator, batch_size: int, max_length: int,
                   per_example_lengths: bool = False) -> Batch:
    """A training batch padded to ``padded_length(task, max_length)``, lengths uniform in ``1..max_length``.

    ``per_example_lengths`` as in :func:`attnjax.data.batching.training_batch`.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    P = padded_length(task, max_length)
    if per_example_lengths:
        lengths = rng.integers(1, int(max_length) + 1, size=(int(batch_size),))
    else:
        lengths = np.full((int(batch_size),), rng.integers(1, int(max_length) + 1))
    return make_batch(task, rng, lengths, P)


def length_batch(task: Task, rng: np.random.Generator, batch_size: int, length: int,
                 pad_to: int | None = None) -> Batch:
    """A batch whose every example has requested input length ``length`` (``pad_to`` defaults to
    :func:`read_length`)."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    pad_to = read_length(task, length) if pad_to is None else pad_to
    return make_batch(task, rng, np.full((int(batch_size),), int(length)), pad_to)
