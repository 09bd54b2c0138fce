"""Regular tasks: even_pairs, modular_arithmetic (no brackets), parity_check, cycle_navigation.

Each task is an input sampler plus a public ``*_targets(inputs [B, n]) -> targets [B, 1]`` function, so the
answer can be checked on hand-written inputs. Facts (alphabets, ids, lengths) follow
google-deepmind/neural_networks_chomsky_hierarchy, ``tasks/regular``.
"""

from __future__ import annotations

import numpy as np

from attnjax.data.tasks.base import Task, check_tokens, one_output, uniform_ints

MODULUS = 5
# modular_arithmetic ids: digits 0..4, then the operators. The reference's alphabet also holds a blank
# operator "_" (id 8) that its sampler never emits; it is kept so input_size matches (9).
PLUS, MINUS, TIMES, UNUSED_BLANK = MODULUS, MODULUS + 1, MODULUS + 2, MODULUS + 3
CYCLE_LENGTH = 5


def parity_check_targets(inputs: np.ndarray) -> np.ndarray:
    """``[B, n]`` bits -> ``[B, 1]``: number of ones modulo 2."""
    x = check_tokens("parity_check", inputs, 2)
    return x.sum(axis=1, keepdims=True) % 2


def even_pairs_targets(inputs: np.ndarray) -> np.ndarray:
    """``[B, n]`` bits -> ``[B, 1]``: parity of the number of unequal neighbours ("01" plus "10" pairs).

    Class 0 when that number is even (equivalently, first bit == last bit).
    """
    x = check_tokens("even_pairs", inputs, 2)
    return (x[:, 1:] != x[:, :-1]).sum(axis=1, keepdims=True) % 2


def cycle_navigation_targets(inputs: np.ndarray) -> np.ndarray:
    """``[B, n]`` actions in {0, 1, 2} -> ``[B, 1]`` final position on a 5-cycle starting at 0.

    Following the reference code, action token ``t`` moves by ``t - 1``: 0 = left (-1), 1 = stay, 2 = right
    (+1). The reference docstring and the paper describe the actions as stay / +1 / -1; the code, which
    produced the published numbers, is followed here.
    """
    x = check_tokens("cycle_navigation", inputs, 3)
    return (x - 1).sum(axis=1, keepdims=True) % CYCLE_LENGTH


def modular_arithmetic_targets(inputs: np.ndarray) -> np.ndarray:
    """``[B, n]`` expressions ``d op d op ... d`` (n odd) -> ``[B, 1]`` value modulo 5.

    Usual precedence: ``*`` binds tighter than ``+`` and ``-``, and ``-`` negates the product that follows it,
    i.e. Python's evaluation of the string, then ``% 5`` (non-negative). The reference evaluates with int32
    products that could overflow on a chain of 16+ factors; reducing modulo 5 at every step gives the exact
    value instead.

    Raises:
        ValueError: even ``n``, or digits/operators at the wrong positions.
    """
    x = check_tokens("modular_arithmetic", inputs, UNUSED_BLANK)
    if x.shape[1] % 2 != 1:
        raise ValueError(f"inputs of modular_arithmetic must have odd length, got {x.shape[1]}")
    digits, ops = x[:, ::2], x[:, 1::2]
    if (digits >= MODULUS).any() or (ops < MODULUS).any():
        raise ValueError("inputs of modular_arithmetic must alternate digits (0..4) and operators (5..7)")
    total = np.zeros(x.shape[0], dtype=np.int64)
    term = digits[:, 0].copy()  # running product of the current additive term, modulo 5
    for j in range(ops.shape[1]):  # a scan over operators, vectorized over the batch
        op, d = ops[:, j], digits[:, j + 1]
        times = op == TIMES
        total = np.where(times, total, total + term)
        term = np.where(times, term * d, np.where(op == MINUS, -d, d)) % MODULUS
    return ((total + term) % MODULUS)[:, None]


def _binary(rng, batch_size, length):
    return uniform_ints(rng, 0, 2, (batch_size, length))


def _generate_parity_check(rng, batch_size, length):
    x = _binary(rng, batch_size, length)
    return x, parity_check_targets(x)


def _generate_even_pairs(rng, batch_size, length):
    x = _binary(rng, batch_size, length)
    return x, even_pairs_targets(x)


def _generate_cycle_navigation(rng, batch_size, length):
    x = uniform_ints(rng, 0, 3, (batch_size, length))
    return x, cycle_navigation_targets(x)


def odd_length(length: int) -> int:
    """modular_arithmetic's actual input length: ``n`` if odd, else ``n - 1`` (as the reference code does)."""
    return length if length % 2 == 1 else length - 1


def _generate_modular_arithmetic(rng, batch_size, length):
    n = odd_length(length)
    x = np.empty((batch_size, n), dtype=np.int64)
    x[:, ::2] = uniform_ints(rng, 0, MODULUS, (batch_size, n // 2 + 1))
    x[:, 1::2] = uniform_ints(rng, PLUS, TIMES + 1, (batch_size, n // 2))  # +, -, * uniformly
    return x, modular_arithmetic_targets(x)


TASKS = (
    Task(name="even_pairs", tier="regular", input_size=2, output_size=2, output_length=one_output,
         generate=_generate_even_pairs),
    # Paper: lengths of any parity. Code (followed): an even requested length n gives an input of n - 1.
    Task(name="modular_arithmetic", tier="regular", input_size=MODULUS + 4, output_size=MODULUS,
         output_length=one_output, generate=_generate_modular_arithmetic, input_length=odd_length),
    Task(name="parity_check", tier="regular", input_size=2, output_size=2, output_length=one_output,
         generate=_generate_parity_check),
    Task(name="cycle_navigation", tier="regular", input_size=3, output_size=CYCLE_LENGTH, output_length=one_output,
         generate=_generate_cycle_navigation),
)
