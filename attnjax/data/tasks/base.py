"""The :class:`Task` record, the tier names, and the sampling helpers the three tier modules share.

Contract of a task (everything is host-side NumPy, deterministic per ``np.random.Generator``):

* ``generate(rng, B, n) -> (inputs [B, input_length(n)], targets [B, output_length(input_length(n))])``,
  integer tokens. ``input_length`` is the identity for every task except ``modular_arithmetic``, whose
  reference code shortens an even ``n`` to ``n - 1``.
* The accuracy mask is not returned by the generator: it is a function of the targets alone, exactly as in
  the reference (``accuracy_mask(target)``). A task with a ``termination_token`` is scored up to and including
  the first occurrence of that token in each row; a task without one is scored everywhere.
  :meth:`Task.accuracy_mask` is the one place that rule lives.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

# Chomsky-hierarchy tiers of Delétang et al. (2022), lowest first (the reference calls them regular, dcf, cs).
TIERS = ("regular", "context_free", "context_sensitive")

Generator = Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray]]


def same_length(n: int) -> int:
    """``n -> n``: the default ``input_length`` and the output length of reverse/sort-like tasks."""
    return n


def one_output(n: int) -> int:
    """``n -> 1``: the output length of a classification task."""
    del n
    return 1


@dataclasses.dataclass(frozen=True)
class Task:
    """One algorithmic task.

    Attributes:
        name: registry key.
        tier: one of :data:`TIERS`.
        input_size: size of the input alphabet (tokens ``0..input_size-1``; the blank is extra).
        output_size: number of output classes per output position.
        output_length: ``n -> m``, the number of output tokens for an input of (actual) length ``n``.
        generate: ``(rng, batch_size, n) -> (inputs [B, input_length(n)], targets [B, m])`` integer arrays.
        input_length: requested length ``n`` -> actual input length (identity except ``modular_arithmetic``).
        termination_token: output id that ends the scored part of each target row, or ``None`` (all scored).
        scored_outputs: only output ids below this are scored (``None``: all); ids at or above it are
            annotations the model also writes but that are not the answer (index hints).
    """

    name: str
    tier: str
    input_size: int
    output_size: int
    output_length: Callable[[int], int]
    generate: Generator
    input_length: Callable[[int], int] = same_length
    termination_token: int | None = None
    scored_outputs: int | None = None

    def __post_init__(self):
        if self.tier not in TIERS:
            raise ValueError(f"tier must be one of {TIERS}, got {self.tier!r}")
        if self.termination_token is not None and not 0 <= self.termination_token < self.output_size:
            raise ValueError(f"termination_token must be in [0, output_size={self.output_size}), "
                             f"got {self.termination_token}")

    @property
    def is_classification(self) -> bool:
        """True when the output is a single token at every length.

        Checked at lengths 1, 2, 10 and 100 (the reference checks 10): ``compute_sqrt`` outputs one token at
        lengths 1 and 2 but is a sequence task.
        """
        return all(self.output_length(n) == 1 for n in (1, 2, 10, 100))

    def sequence_length(self, length: int) -> int:
        """Input plus blank positions for a requested input length: ``input_length(n) + m``."""
        n = self.input_length(int(length))
        return n + self.output_length(n)

    def sample(self, rng: np.random.Generator, batch_size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``batch_size`` examples of requested input length ``length``.

        Args:
            rng: NumPy generator (consumed).
            batch_size: ``B`` >= 1.
            length: requested input length ``n`` >= 1.

        Returns:
            ``(inputs [B, n'], targets [B, output_length(n')])``, int32, with ``n' = input_length(n)``; input
            tokens lie in ``[0, input_size)`` and targets in ``[0, output_size)``.

        Raises:
            ValueError: ``batch_size`` or ``length`` below 1.
        """
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(length) < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        batch_size, length = int(batch_size), int(length)
        inputs, targets = self.generate(rng, batch_size, length)
        n = self.input_length(length)
        # A mismatch here is a task bug, not a user error: fail loudly near its source.
        if inputs.shape != (batch_size, n) or targets.shape != (batch_size, self.output_length(n)):
            raise AssertionError(f"task {self.name} produced inputs {inputs.shape} and targets {targets.shape}, "
                                 f"expected {(batch_size, n)} and {(batch_size, self.output_length(n))}")
        if inputs.min() < 0 or inputs.max() >= self.input_size or targets.min() < 0 \
                or targets.max() >= self.output_size:
            raise AssertionError(f"task {self.name} produced tokens out of range")
        return inputs.astype(np.int32), targets.astype(np.int32)

    def answer_lengths(self, targets: np.ndarray) -> np.ndarray:
        """``[B]`` length of each target row's answer: up to and including the first termination token, or
        the whole row for a task without one.

        Raises:
            ValueError: ``targets`` is not 2-D, or a row lacks the termination token.
        """
        targets = np.asarray(targets)
        if targets.ndim != 2:
            raise ValueError(f"targets must be [B, m], got shape {targets.shape}")
        if self.termination_token is None:
            return np.full(targets.shape[0], targets.shape[1])
        hit = targets == self.termination_token
        missing = np.nonzero(~hit.any(axis=1))[0]
        if missing.size:
            raise ValueError(f"targets of task {self.name} must contain termination token "
                             f"{self.termination_token} in every row; rows {missing[:5].tolist()} lack it")
        return hit.argmax(axis=1) + 1

    def accuracy_mask(self, targets: np.ndarray) -> np.ndarray:
        """Which target positions count towards accuracy.

        Args:
            targets: ``[B, m]`` integer targets of this task.

        Returns:
            ``[B, m]`` bool: the answer (:meth:`answer_lengths`; the reference's ``indices <= argmax(target
            ids)``, the same position because the termination token is the largest id and occurs once), less
            the unscored annotations (ids ``>= scored_outputs``).

        Raises:
            ValueError: ``targets`` is not 2-D, or a row lacks the termination token.
        """
        targets = np.asarray(targets)
        mask = np.arange(targets.shape[-1])[None, :] < self.answer_lengths(targets)[:, None]
        return mask if self.scored_outputs is None else mask & (targets < self.scored_outputs)


def uniform_ints(rng: np.random.Generator, low: int, high: int, shape) -> np.ndarray:
    """Integers uniform in ``[low, high)`` as int64 (the dtype every generator computes in)."""
    return rng.integers(low, high, size=shape, dtype=np.int64)


def nonzero_bit_rows(rng: np.random.Generator, bits: np.ndarray, fields: list[np.ndarray]) -> np.ndarray:
    """Resamples rows of ``bits`` until every field of every row holds a 1.

    The reference draws each operand uniformly from ``1..2**L - 1``; uniform ``L``-bit strings conditioned on
    not being all zero are exactly that distribution.

    Args:
        rng: NumPy generator (consumed).
        bits: ``[B, n]`` 0/1 array, resampled in place.
        fields: ``[B, n]`` bool masks, each marking one operand's positions (non-empty in every row).

    Returns:
        ``bits``.
    """
    while True:
        bad = np.zeros(bits.shape[0], dtype=bool)
        for field in fields:
            bad |= ~(bits.astype(bool) & field).any(axis=1)
        if not bad.any():
            return bits
        bits[bad] = uniform_ints(rng, 0, 2, (int(bad.sum()), bits.shape[1]))


def check_tokens(name: str, inputs: np.ndarray, high: int, min_length: int = 1) -> np.ndarray:
    """Validates a public targets function's ``inputs [B, n]`` and returns them as int64.

    Raises:
        ValueError: wrong rank, too short, or a token outside ``[0, high)``.
    """
    x = np.asarray(inputs)
    if x.ndim != 2 or x.shape[1] < min_length:
        raise ValueError(f"inputs of {name} must be [B, n] with n >= {min_length}, got shape {x.shape}")
    if x.size and (x.min() < 0 or x.max() >= high):
        raise ValueError(f"inputs of {name} must hold tokens in [0, {high}), got range [{x.min()}, {x.max()}]")
    return x.astype(np.int64)
