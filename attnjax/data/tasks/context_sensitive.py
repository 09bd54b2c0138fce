"""Context-sensitive tasks: duplicate_string, missing_duplicate_string, odds_first, binary_addition,
binary_multiplication, compute_sqrt, bucket_sort.

Each task is an input sampler plus a public ``*_targets(inputs [B, n]) -> targets [B, m]`` function. Facts
(alphabets, ids, lengths, termination tokens) follow google-deepmind/neural_networks_chomsky_hierarchy,
``tasks/cs``. Binary numbers: ``binary_addition``/``binary_multiplication`` are little-endian (least
significant bit first), ``compute_sqrt`` is big-endian, as in the reference.
"""

from __future__ import annotations

import math

import numpy as np

from attnjax.data.tasks.base import Task, check_tokens, nonzero_bit_rows, one_output, same_length, uniform_ints

SEPARATOR = 2  # binary_addition / binary_multiplication input: a + b and a * b are "a 2 b"
END = 2  # binary_addition / binary_multiplication output termination token
MISSING, FILLER = 2, 3  # missing_duplicate_string input: the hidden symbol and the odd-length filler
BUCKET_VOCAB = 5


def _binary(rng, batch_size, length):
    return uniform_ints(rng, 0, 2, (batch_size, length))


def duplicate_string_output_length(n: int) -> int:
    """``2 n``."""
    return 2 * n


def duplicate_string_targets(inputs: np.ndarray) -> np.ndarray:
    """``[B, n]`` bits -> ``[B, 2n]`` the string twice."""
    x = check_tokens("duplicate_string", inputs, 2)
    return np.concatenate([x, x], axis=1)


def _generate_duplicate_string(rng, batch_size, length):
    x = _binary(rng, batch_size, length)
    return x, duplicate_string_targets(x)


def missing_duplicate_string_targets(inputs: np.ndarray) -> np.ndarray:
    """``[B, n]`` ``s s`` with one symbol replaced by 2 (and a trailing 3 when n is odd) -> ``[B, 1]`` that symbol.

    ``n == 1`` is the reference's degenerate case: input ``1``, answer 1. Example: ``0 1 1 0 0 2 1 0`` -> 1.

    Raises:
        ValueError: a row without exactly one hidden symbol.
    """
    x = check_tokens("missing_duplicate_string", inputs, 4)
    batch, n = x.shape
    if n == 1:
        return np.ones((batch, 1), dtype=np.int64)
    half = n // 2
    hidden = x[:, :2 * half] == MISSING
    if not (hidden.sum(axis=1) == 1).all():
        raise ValueError("inputs of missing_duplicate_string must hide exactly one symbol (token 2) per row")
    index = hidden.argmax(axis=1)
    twin = np.where(index < half, index + half, index - half)
    return x[np.arange(batch), twin][:, None]


def _generate_missing_duplicate_string(rng, batch_size, length):
    if length == 1:
        x = np.ones((batch_size, 1), dtype=np.int64)
        return x, missing_duplicate_string_targets(x)
    half = length // 2
    strings = _binary(rng, batch_size, half)
    x = np.concatenate([strings, strings, np.full((batch_size, length % 2), FILLER)], axis=1)
    rows, index = np.arange(batch_size), uniform_ints(rng, 0, 2 * half, batch_size)
    answer = x[rows, index].copy()
    x[rows, index] = MISSING
    return x, answer[:, None]


def odds_first_targets(inputs: np.ndarray) -> np.ndarray:
    """``[B, n]`` -> ``[B, n]``: the symbols at odd 0-based indices (1, 3, ...), then those at even ones.

    The paper and the reference docstring say 1-based odd positions first (``s1 s3 s5 ... s2 s4 ...``); the
    reference code outputs ``x[1::2]`` then ``x[::2]``, i.e. ``s2 s4 ... s1 s3 ...``. The code is followed:
    ``0 0 1 1 0 1 0 1`` -> ``0 1 1 1 0 1 0 0``.
    """
    x = check_tokens("odds_first", inputs, 2)
    return np.concatenate([x[:, 1::2], x[:, ::2]], axis=1)


def _generate_odds_first(rng, batch_size, length):
    x = _binary(rng, batch_size, length)
    return x, odds_first_targets(x)


def bucket_sort_targets(inputs: np.ndarray) -> np.ndarray:
    """``[B, n]`` tokens in ``0..4`` -> ``[B, n]`` sorted ascending."""
    return np.sort(check_tokens("bucket_sort", inputs, BUCKET_VOCAB), axis=1)


def _generate_bucket_sort(rng, batch_size, length):
    x = uniform_ints(rng, 0, BUCKET_VOCAB, (batch_size, length))
    return x, bucket_sort_targets(x)


def binary_addition_output_length(n: int) -> int:
    """``n + 1``: the sum has at most ``n - 1`` bits, then the termination token, then 0-padding."""
    return n + 1


def binary_multiplication_output_length(n: int) -> int:
    """``n``: the product has at most ``n - 1`` bits, then the termination token, then 0-padding."""
    return n


def _operands(x: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Splits ``[B, n]`` rows ``a 2 b`` into little-endian ``[B, n]`` 0/1 arrays (zero-extended)."""
    batch, n = x.shape
    is_separator = x == SEPARATOR
    if not (is_separator.sum(axis=1) == 1).all():
        raise ValueError(f"inputs of {name} of length >= 3 must hold one separator (token 2) per row")
    split = is_separator.argmax(axis=1)[:, None]
    pos = np.arange(n)[None, :]
    a = np.where(pos < split, x, 0)
    shifted = split + 1 + pos  # b's bits start right after the separator
    b = np.where(shifted < n, np.take_along_axis(x, np.minimum(shifted, n - 1), axis=1), 0)
    return a, b


def _terminate(bits: np.ndarray, width: int) -> np.ndarray:
    """Little-endian ``[B, k]`` bits -> ``[B, width]``: bits without leading zeros (at least one), END, zeros."""
    batch, k = bits.shape
    ones = np.nonzero(bits)
    length = np.ones(batch, dtype=np.int64)  # zero is written as a single 0
    np.maximum.at(length, ones[0], ones[1] + 1)
    y = np.zeros((batch, width), dtype=np.int64)
    y[:, :k] = np.where(np.arange(k)[None, :] < length[:, None], bits, 0)[:, :width]
    y[np.arange(batch), length] = END
    return y


def _to_ints(bits: np.ndarray, bitorder: str) -> list[int]:
    """``[B, k]`` 0/1 -> Python ints (``bitorder`` "little": column 0 is the least significant bit)."""
    if bitorder == "big":
        bits = bits[:, ::-1]
    packed = np.packbits(bits.astype(np.uint8), axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def _from_ints(values: list[int], width: int, bitorder: str) -> np.ndarray:
    """Python ints (each < ``2**width``) -> ``[B, width]`` 0/1 in the given bit order."""
    n_bytes = (width + 7) // 8
    raw = np.frombuffer(b"".join(v.to_bytes(n_bytes, "little") for v in values), dtype=np.uint8)
    bits = np.unpackbits(raw.reshape(len(values), n_bytes), axis=1, bitorder="little")[:, :width]
    return (bits[:, ::-1] if bitorder == "big" else bits).astype(np.int64)


def binary_addition_targets(inputs: np.ndarray) -> np.ndarray:
    """``[B, n]`` ``a 2 b`` (little-endian) -> ``[B, n + 1]`` ``a + b`` little-endian without leading zeros,
    then termination token 2, then zeros.

    For ``n <= 2`` the reference's input is one number (no separator) and the output is that number.
    Example: ``0 0 1 2 0 1 1 0 1`` (4 + 22) -> ``0 1 0 1 1 2 0 0 0 0`` (26).
    """
    x = check_tokens("binary_addition", inputs, 3)
    batch, n = x.shape
    if n <= 2:
        if (x == SEPARATOR).any():
            raise ValueError(f"inputs of binary_addition of length {n} <= 2 must be bits (0/1)")
        return _terminate(x, n + 1)
    a, b = _operands(x, "binary_addition")
    total = np.zeros((batch, n), dtype=np.int64)
    carry = np.zeros(batch, dtype=np.int64)
    for i in range(n):  # ripple carry, vectorized over the batch
        s = a[:, i] + b[:, i] + carry
        total[:, i], carry = s & 1, s >> 1
    return _terminate(total, n + 1)


def binary_multiplication_targets(inputs: np.ndarray) -> np.ndarray:
    """``[B, n]`` ``a 2 b`` (little-endian) -> ``[B, n]`` ``a * b`` little-endian without leading zeros,
    then termination token 2, then zeros. Products use Python ints (one per row).

    For ``n <= 2`` the reference fixes the answer regardless of the input: ``[2]`` for ``n == 1`` and
    ``[0, 2]`` for ``n == 2``. Example: ``1 0 0 1 2 0 0 0 0 0 1`` (9 * 32) -> ``0 0 0 0 0 1 0 0 1 2 0``.
    """
    x = check_tokens("binary_multiplication", inputs, 3)
    batch, n = x.shape
    if n <= 2:
        y = np.zeros((batch, n), dtype=np.int64)
        y[:, -1] = END
        return y
    a, b = _operands(x, "binary_multiplication")
    products = [p * q for p, q in zip(_to_ints(a, "little"), _to_ints(b, "little"))]
    return _terminate(_from_ints(products, n, "little"), n)


def _addition_like_inputs(rng, batch_size, length):
    if length <= 2:  # the reference: one number uniform in 0..2**n - 2, written in n bits
        value = uniform_ints(rng, 0, 2 ** length - 1, (batch_size, 1))
        return (value >> np.arange(length)[None, :]) & 1
    split = uniform_ints(rng, 1, length - 1, (batch_size, 1))  # len(a) uniform in 1..n-2
    pos = np.arange(length)[None, :]
    bits = nonzero_bit_rows(rng, _binary(rng, batch_size, length), [pos < split, pos > split])
    return np.where(pos == split, SEPARATOR, bits)


def _generate_binary_addition(rng, batch_size, length):
    x = _addition_like_inputs(rng, batch_size, length)
    return x, binary_addition_targets(x)


def _generate_binary_multiplication(rng, batch_size, length):
    x = _addition_like_inputs(rng, batch_size, length)
    return x, binary_multiplication_targets(x)


def compute_sqrt_output_length(n: int) -> int:
    """``ceil(n / 2)``: the bits of ``isqrt`` of an ``n``-bit number."""
    return math.ceil(n / 2)


def compute_sqrt_targets(inputs: np.ndarray) -> np.ndarray:
    """``[B, n]`` big-endian bits -> ``[B, ceil(n/2)]`` big-endian ``floor(sqrt(value))``, zero-padded on the
    left. Uses Python's ``math.isqrt`` per row. Example: ``1 0 0 1 0 1`` (37) -> ``1 1 0`` (6).
    """
    x = check_tokens("compute_sqrt", inputs, 2)
    roots = [math.isqrt(v) for v in _to_ints(x, "big")]
    return _from_ints(roots, compute_sqrt_output_length(x.shape[1]), "big")


def _generate_compute_sqrt(rng, batch_size, length):
    # The reference draws the number uniformly from 1..2**n - 1 (so leading zeros occur).
    x = nonzero_bit_rows(rng, _binary(rng, batch_size, length), [np.ones((1, length), dtype=bool)])
    return x, compute_sqrt_targets(x)


TASKS = (
    Task(name="duplicate_string", tier="context_sensitive", input_size=2, output_size=2,
         output_length=duplicate_string_output_length, generate=_generate_duplicate_string),
    Task(name="missing_duplicate_string", tier="context_sensitive", input_size=4, output_size=2,
         output_length=one_output, generate=_generate_missing_duplicate_string),
    Task(name="odds_first", tier="context_sensitive", input_size=2, output_size=2, output_length=same_length,
         generate=_generate_odds_first),
    Task(name="binary_addition", tier="context_sensitive", input_size=3, output_size=3,
         output_length=binary_addition_output_length, generate=_generate_binary_addition, termination_token=END),
    Task(name="binary_multiplication", tier="context_sensitive", input_size=3, output_size=3,
         output_length=binary_multiplication_output_length, generate=_generate_binary_multiplication,
         termination_token=END),
    Task(name="compute_sqrt", tier="context_sensitive", input_size=2, output_size=2,
         output_length=compute_sqrt_output_length, generate=_generate_compute_sqrt),
    Task(name="bucket_sort", tier="context_sensitive", input_size=BUCKET_VOCAB, output_size=BUCKET_VOCAB,
         output_length=same_length, generate=_generate_bucket_sort),
)
