"""Accuracy ceilings computed from a task's data alone, with no model: what a predictor blind to something can reach.

A score at such a ceiling is the blind rule, not the skill a task tests. The length-generalization report puts
:func:`position_blind_ceiling` beside every sequence task, because a Transformer without positional encoding and
without a causal mask is position-blind: every blank output position carries the same token and sees the same
keys, so it gets the same representation and the same prediction.
"""

from __future__ import annotations

import numpy as np

from attnjax.data.tasks import Task


def position_blind_accuracy(task: Task, rng: np.random.Generator, batch_size: int, length: int) -> float:
    """The best per-token accuracy at input length ``length`` of any predictor that emits one token per example.

    Such a predictor may read the whole input, but not which output position it fills. Its best choice for an
    example is the most frequent target among the example's scored positions (the task's accuracy mask), so
    the ceiling is that token's share, weighted by tokens as the evaluation weights them (scored positions
    correct over scored positions, summed over the batch).

    Args:
        task: the task.
        rng: NumPy generator (consumed).
        batch_size: examples sampled, >= 1.
        length: requested input length, >= 1.

    Returns:
        The ceiling, a fraction in [0, 1] (1.0 for a classification task: one output position).
    """
    _, targets = task.sample(rng, batch_size, length)  # sample() checks batch_size and length
    mask = task.accuracy_mask(targets)
    counts = np.stack([((targets == k) & mask).sum(axis=1) for k in range(task.output_size)], axis=1)  # [B, C]
    return float(counts.max(axis=1).sum() / mask.sum())


def position_blind_ceiling(task: Task, train_max_length: int, test_max_length: int, batch_size: int = 2048,
                           seed: int = 0) -> tuple[float, float]:
    """:func:`position_blind_accuracy` averaged as the study averages a model's scores.

    Returns:
        ``(in-distribution, out-of-distribution)``: the means over input lengths ``1..train_max_length`` and
        ``train_max_length + 1..test_max_length``, ``batch_size`` examples each, one generator seeded by ``seed``
        (so the numbers are the same on every call).

    Raises:
        ValueError: ``train_max_length`` below 1 or not below ``test_max_length``.
    """
    if not 1 <= train_max_length < test_max_length:
        raise ValueError(f"need 1 <= train_max_length < test_max_length, got train_max_length={train_max_length} "
                         f"and test_max_length={test_max_length}")
    rng = np.random.default_rng(seed)
    acc = [position_blind_accuracy(task, rng, batch_size, n) for n in range(1, test_max_length + 1)]
    return float(np.mean(acc[:train_max_length])), float(np.mean(acc[train_max_length:]))
