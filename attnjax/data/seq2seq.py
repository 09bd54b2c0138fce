"""Transduction tasks for encoder-decoder models (NumPy only; no JAX tracing happens here).

Each task maps a source sequence of ``n`` tokens over a small alphabet ``{0..A-1}`` to a target of the same
length ``n`` that is a *reordering* of the source, so one alphabet serves input and output (``V = C = A``):

* ``copy``: the source itself (monotonic alignment: target ``t`` reads source ``t``);
* ``reverse``: the source backwards (anti-diagonal alignment: target ``t`` reads source ``n-1-t``);
* ``sort``: the source sorted ascending (a content-based alignment: no fixed source position);
* ``odds_first``: tokens at odd positions (1, 3, ...) then those at even positions (0, 2, ...), Delétang et al.'s
  odds_first with 0-based positions (a two-slope alignment).

Layout of one example of length ``n`` padded to ``P`` (both axes share ``P``: target length = source length)::

    position         0        1        ...  n-1         n .. P-1
    source           x_0      x_1      ...  x_{n-1}     all-zero one-hot (padding)
    target_inputs    C        y_0      ...  y_{n-2}     y_{n-1}, then 0  (= targets shifted right)
    targets          y_0      y_1      ...  y_{n-1}     0
    target_mask      1        1        ...  1           0

``C`` (= ``A``) is the decoder's begin token (:func:`attnjax.nn.contract.begin_token`). ``target_inputs`` is the
whole padded ``targets`` row shifted right behind the begin token (the rule of
:func:`attnjax.nn.rnn_seq2seq.shift_right`), so the positions past ``n`` are unscored and, by the decoder's
causality, never change a scored one. There is no end-of-sequence token: the output length equals the
source length and only the first ``n`` positions are scored, so a model never has to learn when to stop.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

Batch = dict[str, np.ndarray]


def copy_targets(sources: np.ndarray) -> np.ndarray:
    """``[B, n]`` -> ``[B, n]``: the sources themselves."""
    return np.array(sources, copy=True)


def reverse_targets(sources: np.ndarray) -> np.ndarray:
    """``[B, n]`` -> ``[B, n]``: each row backwards."""
    return np.array(sources[:, ::-1], copy=True)


def sort_targets(sources: np.ndarray) -> np.ndarray:
    """``[B, n]`` -> ``[B, n]``: each row sorted ascending (duplicates kept)."""
    return np.sort(sources, axis=1, kind="stable")


def odds_first_targets(sources: np.ndarray) -> np.ndarray:
    """``[B, n]`` -> ``[B, n]``: tokens at odd positions, then tokens at even positions (0-based)."""
    return np.concatenate([sources[:, 1::2], sources[:, 0::2]], axis=1)


@dataclasses.dataclass(frozen=True)
class Seq2SeqTask:
    """A reordering task: ``targets = transform(sources)``, both ``[B, n]`` int, for every ``n >= 1``.

    Attributes:
        name: key in :data:`SEQ2SEQ_TASKS`.
        transform: ``sources [B, n] -> targets [B, n]``, a per-row permutation of the tokens.
        alignment: what target position ``t`` must read, in words (for reports).
    """

    name: str
    transform: Callable[[np.ndarray], np.ndarray]
    alignment: str


SEQ2SEQ_TASKS: dict[str, Seq2SeqTask] = {t.name: t for t in (
    Seq2SeqTask("copy", copy_targets, "source position t (diagonal)"),
    Seq2SeqTask("reverse", reverse_targets, "source position n-1-t (anti-diagonal)"),
    Seq2SeqTask("sort", sort_targets, "the t-th smallest token (content-based)"),
    Seq2SeqTask("odds_first", odds_first_targets, "position 2t+1 for t < n//2, then 2(t - n//2) (two slopes)"),
)}


def get_seq2seq_task(name: str) -> Seq2SeqTask:
    """The task named ``name``.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    if not isinstance(name, str) or name not in SEQ2SEQ_TASKS:
        raise ValueError(f"task must be one of {sorted(SEQ2SEQ_TASKS)}, got {name!r}")
    return SEQ2SEQ_TASKS[name]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def task_targets(task: str | Seq2SeqTask, sources: np.ndarray, alphabet_size: int) -> np.ndarray:
    """The targets of ``task`` for ``sources [B, n]`` (all of length ``n``).

    Raises:
        ValueError: unknown task, ``sources`` not ``[B, n]`` with ``n >= 1``, non-integer, or a token outside
            ``[0, alphabet_size)``.
    """
    task = get_seq2seq_task(task) if isinstance(task, str) else task
    alphabet_size = _positive_int("alphabet_size", alphabet_size)
    x = np.asarray(sources)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"sources must be [B, n] with n >= 1, got shape {x.shape}")
    if x.size and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"sources must be integer tokens, got dtype {x.dtype}")
    if x.size and (x.min() < 0 or x.max() >= alphabet_size):
        raise ValueError(f"sources must hold tokens in [0, alphabet_size={alphabet_size}), "
                         f"got range [{x.min()}, {x.max()}]")
    return task.transform(x.astype(np.int32)).astype(np.int32)


def make_seq2seq_batch(task: str | Seq2SeqTask, rng: np.random.Generator, lengths, pad_to: int,
                       alphabet_size: int) -> Batch:
    """One example per entry of ``lengths``, each source uniform over the alphabet, padded to ``pad_to``.

    Args:
        task: a name in :data:`SEQ2SEQ_TASKS` or the task.
        rng: NumPy generator (consumed).
        lengths: ``[B]`` int source lengths, each in ``1..pad_to``.
        pad_to: ``P``, the padded source and target length.
        alphabet_size: ``A`` (= ``V`` = ``C``); the begin token is ``A``.

    Returns:
        ``source [B, P, A]`` float32 one-hot (all-zero at padding), ``source_lengths [B]`` int32,
        ``target_inputs [B, P]`` int32 (the begin token ``A``, then ``targets`` shifted right),
        ``targets [B, P]`` int32 (0 at padding), ``target_mask [B, P]`` float32 (1 at the first ``n``).

    Raises:
        ValueError: unknown task; ``lengths`` empty, not 1-D, not integer, below 1 or above ``pad_to``;
            ``pad_to`` or ``alphabet_size`` not an int >= 1.
    """
    task = get_seq2seq_task(task) if isinstance(task, str) else task
    pad_to = _positive_int("pad_to", pad_to)
    alphabet_size = _positive_int("alphabet_size", alphabet_size)
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.size == 0:
        raise ValueError(f"lengths must be a non-empty [B] array, got shape {lengths.shape}")
    if not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
    if lengths.min() < 1 or lengths.max() > pad_to:
        raise ValueError(f"lengths must be in [1, pad_to={pad_to}], got range [{lengths.min()}, {lengths.max()}]")
    B, P, A = lengths.size, pad_to, alphabet_size
    tokens = np.full((B, P), -1, np.int64)  # -1 = padding -> all-zero one-hot below
    targets = np.zeros((B, P), np.int32)
    # One vectorized draw per distinct length keeps this fast at large batches.
    for n in np.unique(lengths):
        rows = np.nonzero(lengths == n)[0]
        x = rng.integers(0, A, size=(rows.size, int(n)), dtype=np.int64)
        tokens[rows, :n] = x
        targets[rows, :n] = task.transform(x)
    mask = (np.arange(P)[None, :] < lengths[:, None]).astype(np.float32)
    target_inputs = np.concatenate([np.full((B, 1), A, np.int32), targets[:, :-1]], axis=1)
    return {"source": (tokens[..., None] == np.arange(A)).astype(np.float32),
            "source_lengths": lengths.astype(np.int32), "target_inputs": target_inputs,
            "targets": targets, "target_mask": mask}


def seq2seq_training_batch(task: str | Seq2SeqTask, rng: np.random.Generator, batch_size: int, max_length: int,
                           alphabet_size: int) -> Batch:
    """A training batch: every example draws its own length uniform in ``1..max_length``; padded to ``max_length``
    so every batch has one shape and the train step compiles once.

    Raises:
        ValueError: see :func:`make_seq2seq_batch`; ``batch_size`` or ``max_length`` not an int >= 1.
    """
    batch_size = _positive_int("batch_size", batch_size)
    max_length = _positive_int("max_length", max_length)
    lengths = rng.integers(1, max_length + 1, size=(batch_size,))
    return make_seq2seq_batch(task, rng, lengths, max_length, alphabet_size)


def seq2seq_length_batch(task: str | Seq2SeqTask, rng: np.random.Generator, batch_size: int, length: int,
                         pad_to: int, alphabet_size: int) -> Batch:
    """A batch whose every example has length ``length``, padded to ``pad_to`` (for per-length evaluation).

    Raises:
        ValueError: see :func:`make_seq2seq_batch`.
    """
    batch_size = _positive_int("batch_size", batch_size)
    length = _positive_int("length", length)
    return make_seq2seq_batch(task, rng, np.full((batch_size,), length), pad_to, alphabet_size)


__all__ = ["SEQ2SEQ_TASKS", "Seq2SeqTask", "copy_targets", "get_seq2seq_task", "make_seq2seq_batch",
           "odds_first_targets", "reverse_targets", "seq2seq_length_batch", "seq2seq_training_batch",
           "sort_targets", "task_targets"]
