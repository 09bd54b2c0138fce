"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology"), NumPy only.

One example of length ``L = seq_len`` with ``P = num_kv_pairs`` pairs over a vocabulary of ``V`` ids::

    position   0    1    2    3   ...  2P-2  2P-1 | 2P ...                                   L-1
    token      k_0  v_0  k_1  v_1 ...  k_P-1 v_P-1 | filler, with k_j at 2P + 2 g_j for each j
    target     -    -    -    -   ...  -     -     | v_j at 2P + 2 g_j, nothing elsewhere

as Zoology's generator (HazyResearch/zoology, ``zoology/data/associative_recall.py``, ``_mqar``) builds it:

* **vocabulary split**: keys are ids ``1 .. V//2 - 1``, values ``V//2 .. V-1``; id 0 is the empty filler
  token (Zoology's placeholder). The ``P`` keys of an example are distinct, and so are its values.
* **context first**: the pairs ``k_0 v_0 ... k_{P-1} v_{P-1}`` fill positions ``0 .. 2P-1``.
* **every pair is queried once, later**: the query region ``2P .. L-1`` has ``S = (L - 2P) // 2`` even
  slots; pair ``j`` draws a slot ``g_j`` (distinct slots) and its key sits at ``2P + 2 g_j``. Slots are
  drawn without replacement with probability ``p(g) ∝ a (g + 1)^(a - 1)``, ``g = 0 .. S-1``: a power law
  in the gap from the context (``power_a = a``; Zoology's 0.01 puts most queries near the context, 1.0 is
  uniform). The successive draws without replacement are Gumbel-top-P sampling, the same distribution as
  ``numpy.random.choice(S, P, replace=False, p=p)``.
* **only queries are scored**: the target at a query position is the value paired with that key in the
  context (the model predicts it *at* the key, as a next-token LM reading ``k_j`` outputs ``v_j``);
  ``loss_mask`` is 1 there and 0 at every other position (context, filler).
* **filler / distractor noise**: every other position of the query region is filler. With probability
  ``noise`` it holds a token drawn uniformly from all ``V`` ids (keys, values and 0 alike: a random token
  may repeat a context key or value, a distractor the model must ignore), else the empty token 0.
  ``noise=1`` is Zoology's generator default (``random_non_queries=True``); ``noise=0`` is
  ``random_non_queries=False``, the setting of the paper's Figure 2 configs.

Differences from Zoology's generator (the semantics above are the same): randomness comes from a
``numpy.random.Generator`` passed in (Zoology seeds NumPy's global state and draws filler with torch), and
Zoology's assertion ``vocab_size > seq_len`` is not required (nothing in the layout needs it).

The batch follows :mod:`attnjax.train.steps`: ``inputs [B, L]`` int32 ids (a model with
``vocab_size = V``, see :mod:`attnjax.nn.contract`) or ``[B, L, V]`` float32 one-hot, ``targets [B, L]``
int32 (0 where unscored), ``loss_mask [B, L]`` float32 and ``seq_lengths [B]`` int32 (all ``L``).
"""

from __future__ import annotations

import numpy as np

Batch = dict[str, np.ndarray]
FILLER = 0  # the empty token; keys start at 1 so a filler never reads as a key of the context


def key_range(vocab_size: int) -> tuple[int, int]:
    """``[low, high)`` of key ids: ``1 .. V//2 - 1``."""
    return 1, vocab_size // 2


def value_range(vocab_size: int) -> tuple[int, int]:
    """``[low, high)`` of value ids: ``V//2 .. V-1``."""
    return vocab_size // 2, vocab_size


def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_mqar(vocab_size: int, seq_len: int, num_kv_pairs: int, noise: float = 1.0, power_a: float = 0.01) -> None:
    """Raises ValueError (naming the argument, the expected and the actual value) unless the settings build
    valid MQAR examples."""
    vocab_size = _int("vocab_size", vocab_size, 4)
    seq_len = _int("seq_len", seq_len, 4)
    num_kv_pairs = _int("num_kv_pairs", num_kv_pairs, 1)
    if seq_len % 2:
        raise ValueError(f"seq_len must be even (queries sit on every other slot), got {seq_len}")
    if 4 * num_kv_pairs > seq_len:
        raise ValueError(f"seq_len must be >= 4 * num_kv_pairs = {4 * num_kv_pairs} (context 2P plus a query slot and "
                         f"a filler per pair), got seq_len={seq_len} for num_kv_pairs={num_kv_pairs}")
    lo, hi = key_range(vocab_size)
    if hi - lo < num_kv_pairs:
        raise ValueError(f"vocab_size must give at least num_kv_pairs={num_kv_pairs} distinct keys (ids 1..V//2-1): "
                         f"needs vocab_size >= {2 * (num_kv_pairs + 1)}, got {vocab_size}")
    if not isinstance(noise, (int, float, np.floating)) or isinstance(noise, bool) or not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be a float in [0, 1] (share of filler positions holding a random token), "
                         f"got {noise!r}")
    if not isinstance(power_a, (int, float, np.floating)) or isinstance(power_a, bool) or not power_a > 0:
        raise ValueError(f"power_a must be a float > 0 (1.0: uniform query gaps; Zoology: 0.01), got {power_a!r}")


def gap_probabilities(num_slots: int, power_a: float) -> np.ndarray:
    """``[S]`` probabilities ``∝ a (g + 1)^(a - 1)`` of placing a query ``g`` slots after the context."""
    p = power_a * np.arange(1, num_slots + 1, dtype=np.float64) ** (power_a - 1.0)
    return p / p.sum()


def _has_duplicate(rows: np.ndarray) -> np.ndarray:
    s = np.sort(rows, axis=1)
    return np.any(s[:, 1:] == s[:, :-1], axis=1)


def _distinct(rng: np.random.Generator, low: int, high: int, n: int, k: int) -> np.ndarray:
    """``[n, k]`` ids in ``[low, high)``, distinct within each row, uniform over such rows."""
    size = high - low
    if k * k <= size:
        # Collisions are rare: redraw only the rows that have one (rejection keeps the law uniform).
        out = rng.integers(low, high, (n, k))
        bad = _has_duplicate(out)
        while bad.any():
            out[bad] = rng.integers(low, high, (int(bad.sum()), k))
            bad[bad] = _has_duplicate(out[bad])
        return out
    # Small ranges: the first k of a random permutation per row, a few thousand rows at a time.
    chunk = max(1, 4_000_000 // size)
    parts = [np.argsort(rng.random((min(chunk, n - i), size)), axis=1)[:, :k] for i in range(0, n, chunk)]
    return np.concatenate(parts, axis=0) + low


def mqar_tokens(rng: np.random.Generator, num_examples: int, *, vocab_size: int, seq_len: int, num_kv_pairs: int,
                noise: float = 1.0, power_a: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``num_examples`` MQAR sequences as ids (layout in the module docstring).

    Args:
        rng: NumPy generator (consumed; the same state gives the same examples).
        num_examples: ``B`` >= 1.
        vocab_size: ``V`` (keys ``1..V//2-1``, values ``V//2..V-1``, filler 0).
        seq_len: ``L``, even, at least ``4 * num_kv_pairs``.
        num_kv_pairs: ``P``, pairs in the context, each queried once.
        noise: probability that a filler position holds a uniformly random id instead of 0.
        power_a: power-law exponent of the query gaps (Zoology: 0.01; 1.0 uniform).

    Returns:
        ``(tokens [B, L] int32, targets [B, L] int32 (0 where unscored), query_mask [B, L] bool)``.

    Raises:
        ValueError: see :func:`check_mqar`; ``num_examples < 1``.
    """
    check_mqar(vocab_size, seq_len, num_kv_pairs, noise, power_a)
    B = _int("num_examples", num_examples, 1)
    P, L = num_kv_pairs, seq_len
    keys = _distinct(rng, *key_range(vocab_size), B, P)
    values = _distinct(rng, *value_range(vocab_size), B, P)
    num_slots = (L - 2 * P) // 2
    # Gumbel-top-P: successive weighted draws without replacement, vectorized over examples.
    scores = np.log(gap_probabilities(num_slots, power_a))[None, :] + rng.gumbel(size=(B, num_slots))
    gaps = np.argsort(-scores, axis=1)[:, :P]
    query_pos = 2 * P + 2 * gaps  # [B, P]: pair j is queried at query_pos[:, j]

    tokens = np.full((B, L), FILLER, np.int64)
    tokens[:, 0:2 * P:2], tokens[:, 1:2 * P:2] = keys, values
    rows = np.arange(B)[:, None]
    tokens[rows, query_pos] = keys
    targets = np.zeros((B, L), np.int64)
    targets[rows, query_pos] = values
    query_mask = np.zeros((B, L), bool)
    query_mask[rows, query_pos] = True
    filler = np.ones((B, L), bool)
    filler[:, :2 * P] = False
    filler &= ~query_mask
    noisy = filler & (rng.random((B, L)) < noise)
    tokens[noisy] = rng.integers(0, vocab_size, int(noisy.sum()))
    return tokens.astype(np.int32), targets.astype(np.int32), query_mask


def mqar_batch(rng: np.random.Generator, num_examples: int, *, vocab_size: int, seq_len: int, num_kv_pairs: int,
               noise: float = 1.0, power_a: float = 0.01, one_hot: bool = False) -> Batch:
    """A batch of MQAR examples in the sequence-model format of :mod:`attnjax.train.steps`.

    Args: see :func:`mqar_tokens`; ``one_hot``: inputs as ``[B, L, V]`` float32 one-hot instead of ids.

    Returns:
        ``inputs`` (``[B, L]`` int32 ids, or ``[B, L, V]`` float32), ``targets [B, L]`` int32,
        ``loss_mask [B, L]`` float32 (1 at the ``P`` query positions), ``seq_lengths [B]`` int32 (``L``).
    """
    tokens, targets, query_mask = mqar_tokens(rng, num_examples, vocab_size=vocab_size, seq_len=seq_len,
                                              num_kv_pairs=num_kv_pairs, noise=noise, power_a=power_a)
    inputs = (tokens[..., None] == np.arange(vocab_size)).astype(np.float32) if one_hot else tokens
    return {"inputs": inputs, "targets": targets, "loss_mask": query_mask.astype(np.float32),
            "seq_lengths": np.full((tokens.shape[0],), seq_len, np.int32)}


__all__ = ["FILLER", "check_mqar", "gap_probabilities", "key_range", "mqar_batch", "mqar_tokens", "value_range"]
