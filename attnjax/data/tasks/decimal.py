"""Decimal addition in the formats of Zhou et al. (2024), "Transformers Can Achieve Length Generalization But
Not Robustly": plain, with the sum's digits reversed, and reversed with index hints.

These are not among Delétang et al.'s 15 tasks (so not in :data:`attnjax.data.TASKS`, which the encoder grid
enumerates); :data:`attnjax.data.tasks.ALL_TASKS` holds both.

Requested length ``n`` is the number of digits of each operand. Input: ``a`` then ``+`` then ``b``, most
significant digit first (``2n + 1`` tokens; digits are ids 0-9, ``+`` is 10). Output: the ``n + 1`` digits of
``a + b`` (a leading 0 when there is no final carry).

* ``decimal_addition``: the sum most significant digit first, as written on paper.
* ``decimal_addition_reversed``: least significant digit first, so each output digit depends on the digits
  of the same significance and one carry (Zhou et al.'s reversed format).
* ``decimal_addition_hints``: the reversed format with an index hint before every digit of the operands and
  of the sum. The hint of a digit names its significance ``i`` as hint token ``offset + i``, with ``offset``
  drawn per example uniformly so that the hints of every length up to :data:`NUM_HINTS` digits are seen in
  training (Zhou et al. 2023/2024 draw consecutive hints from a larger ordered set the same way). Hints are
  output ids ``10 ..`` and are written by the model but not scored (``scored_outputs = 10``).

Differences from Zhou et al.: both operands have exactly ``n`` digits and may start with 0 (theirs: lengths
drawn separately); the hint set has :data:`NUM_HINTS` symbols, not letters; the sum always has ``n + 1`` digits.
"""

from __future__ import annotations

import numpy as np

from attnjax.data.tasks.base import Task, uniform_ints

PLUS = 10
NUM_HINTS = 64  # hint symbols: operands of up to NUM_HINTS - 1 digits


def _operands(rng, batch_size, n):
    return uniform_ints(rng, 0, 10, (batch_size, n)), uniform_ints(rng, 0, 10, (batch_size, n))


def sum_digits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[B, n]`` digit arrays (most significant first) -> ``[B, n + 1]`` digits of ``a + b``, least
    significant first (schoolbook addition with carries, exact at any length)."""
    total = a[:, ::-1] + b[:, ::-1]
    digits = np.zeros((a.shape[0], a.shape[1] + 1), dtype=np.int64)
    carry = np.zeros(a.shape[0], dtype=np.int64)
    for i in range(a.shape[1]):
        column = total[:, i] + carry
        digits[:, i], carry = column % 10, column // 10
    digits[:, -1] = carry
    return digits


def _generate(reverse: bool):
    def generate(rng, batch_size, n):
        a, b = _operands(rng, batch_size, n)
        plus = np.full((batch_size, 1), PLUS)
        total = sum_digits(a, b)
        return np.concatenate([a, plus, b], axis=1), total if reverse else total[:, ::-1]
    return generate


def _generate_hints(rng, batch_size, n):
    if n >= NUM_HINTS:
        raise ValueError(f"decimal_addition_hints has {NUM_HINTS} hint symbols: length must be < {NUM_HINTS}, got {n}")
    a, b = _operands(rng, batch_size, n)
    offset = rng.integers(0, NUM_HINTS - n, size=(batch_size, 1))  # the sum's n + 1 digits need n + 1 hints
    hints = offset + np.arange(n + 1)[None, :]  # significance i -> hint offset + i
    hint_in, hint_out = PLUS + 1 + hints, 10 + hints  # input hint ids after '+', output hint ids after the digits

    def interleave(h, d):
        return np.stack([h, d], axis=2).reshape(batch_size, -1)

    operand_hints = hint_in[:, :n][:, ::-1]  # most significant digit first
    inputs = np.concatenate([interleave(operand_hints, a), np.full((batch_size, 1), PLUS),
                             interleave(operand_hints, b)], axis=1)
    return inputs, interleave(hint_out, sum_digits(a, b))


TASKS = (
    Task(name="decimal_addition", tier="context_sensitive", input_size=11, output_size=10,
         output_length=lambda n: (n - 1) // 2 + 1, input_length=lambda n: 2 * n + 1, generate=_generate(False)),
    Task(name="decimal_addition_reversed", tier="context_sensitive", input_size=11, output_size=10,
         output_length=lambda n: (n - 1) // 2 + 1, input_length=lambda n: 2 * n + 1, generate=_generate(True)),
    Task(name="decimal_addition_hints", tier="context_sensitive", input_size=11 + NUM_HINTS,
         output_size=10 + NUM_HINTS, output_length=lambda n: 2 * ((n - 1) // 4 + 1), input_length=lambda n: 4 * n + 1,
         generate=_generate_hints, scored_outputs=10),
)
