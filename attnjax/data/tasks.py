"""Algorithmic tasks of Delétang et al. (2022), "Neural Networks and the Chomsky Hierarchy".

A task turns a length ``n`` into a batch of ``(inputs [B, n], targets [B, output_length(n)])`` integer
token arrays, sampled with a NumPy ``Generator`` (host-side data is cheap, deterministic per seed and
never has to be traced). Classification tasks have ``output_length(n) == 1``; sequence tasks output
``n`` (reverse) or ``2n`` (duplicate) tokens. How the model reads them (one blank token per output
position) is :mod:`attnjax.data.batching`'s job, so adding a task is one generator function plus one
``TASKS`` entry.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

Generator = Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Task:
    """One algorithmic task.

    Attributes:
        name: registry key.
        input_size: size of the input alphabet (tokens ``0..input_size-1``; the blank is extra).
        output_size: number of output classes per output position.
        output_length: ``n -> m``, the number of output tokens for an input of length ``n``.
        generate: ``(rng, batch_size, n) -> (inputs [B, n] int32, targets [B, m] int32)``.
    """

    name: str
    input_size: int
    output_size: int
    output_length: Callable[[int], int]
    generate: Generator

    @property
    def is_classification(self) -> bool:
        """True when every input length maps to a single output token."""
        return self.output_length(1) == 1 and self.output_length(2) == 1

    def sample(self, rng: np.random.Generator, batch_size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``batch_size`` examples of input length ``length``.

        Returns:
            ``(inputs [B, length], targets [B, output_length(length)])``, int32.

        Raises:
            ValueError: ``batch_size`` or ``length`` below 1.
        """
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(length) < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        inputs, targets = self.generate(rng, int(batch_size), int(length))
        expected = (int(batch_size), self.output_length(int(length)))
        if targets.shape != expected:  # a task bug, not a user error: fail loudly near its source
            raise AssertionError(f"task {self.name} produced targets {targets.shape}, expected {expected}")
        return inputs.astype(np.int32), targets.astype(np.int32)


def _binary_strings(rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray:
    return rng.integers(0, 2, size=(batch_size, length), dtype=np.int32)


def _parity_check(rng, batch_size, length):
    x = _binary_strings(rng, batch_size, length)
    return x, (x.sum(axis=1, keepdims=True) % 2)


def _reverse_string(rng, batch_size, length):
    x = _binary_strings(rng, batch_size, length)
    return x, x[:, ::-1].copy()


def _duplicate_string(rng, batch_size, length):
    x = _binary_strings(rng, batch_size, length)
    return x, np.concatenate([x, x], axis=1)


# name -> task. Later tasks (even_pairs, cycle_navigation, modular_arithmetic, odds_first,
# bucket_sort, ...) are one generator and one entry each.
TASKS: dict[str, Task] = {
    "parity_check": Task("parity_check", 2, 2, lambda n: 1, _parity_check),
    "reverse_string": Task("reverse_string", 2, 2, lambda n: n, _reverse_string),
    "duplicate_string": Task("duplicate_string", 2, 2, lambda n: 2 * n, _duplicate_string),
}


def get_task(name: str) -> Task:
    """Looks a task up by name.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]
