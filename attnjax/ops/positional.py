"""Positional encodings as pure functions of integer *positions*.

Everything takes explicit positions (``[T]`` or ``[B, T]`` integers) rather than a length, so the
same code serves consecutive positions, offsets (decoding with a cache) and randomized positions
(Ruoss et al. 2023: every encoding read at a sorted random subset of ``[0, max_len)``, see
:func:`randomized_positions`). Three ways to inject position, one per kind in :data:`POSITIONAL`:

* ``"embedding"``: a ``[.., T, D]`` vector added to the token embeddings (sinusoidal, learned table);
* ``"rotary"``: rotate queries and keys, ``[B, T, N, H] -> [B, T, N, H]`` (RoPE);
* ``"bias"``: an additive logit bias ``[1|B, N, T, S]`` passed as ``bias=`` to an attention function
  (ALiBi, T5 relative buckets), or the same bias as a ``score_mod`` computed inside the kernel, never
  materialized (:func:`alibi_score_mod`, :func:`t5_score_mod`; each form evaluates one scalar rule, on the
  ``[T, S]`` grid or per logit);
* ``"none"``: NoPE (causal masking alone carries order).

Learned tables (absolute embeddings, T5 buckets) are created by ``*_init`` helpers and owned by the
calling Flax module; these functions only read them.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops.checks import check_int
from attnjax.ops.flex import ScoreMod

Array = jnp.ndarray


# --------------------------------------------------------------------------- argument checks

def _check_positions(name: str, positions, *, allow_float: bool = False) -> Array:
    positions = jnp.asarray(positions)
    if positions.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape [T] or [B, T], got {tuple(positions.shape)}")
    dtype = positions.dtype
    if not jnp.issubdtype(dtype, jnp.integer) and not (allow_float and jnp.issubdtype(dtype, jnp.floating)):
        kind = "an integer or float" if allow_float else "an integer"
        raise TypeError(f"{name} must be {kind} array, got dtype {dtype}")
    return positions


def _check_pair(q_positions, k_positions) -> tuple[Array, Array]:
    q = _check_positions("q_positions", q_positions)
    k = _check_positions("k_positions", k_positions)
    if q.ndim != k.ndim or (q.ndim == 2 and q.shape[0] != k.shape[0]):
        raise ValueError(
            f"q_positions and k_positions must both be [T]/[S] or [B, T]/[B, S] with equal B, got "
            f"{tuple(q.shape)} and {tuple(k.shape)}")
    return q, k


def _relative(q: Array, k: Array) -> Array:
    """``k_j - q_i`` as ``[1|B, 1, T, S]`` int32 (negative = key in the past)."""
    rel = k[..., None, :].astype(jnp.int32) - q[..., :, None].astype(jnp.int32)
    return rel[None, None] if rel.ndim == 2 else rel[:, None]


def _grid(q: Array, k: Array) -> tuple[Array, Array]:
    """Checked positions as ``[1|B, 1, T, 1]`` and ``[1|B, 1, 1, S]``: a rule written for one (query, key)
    pair, evaluated on them, broadcasts to the ``[1|B, N, T, S]`` bias."""
    q, k = (x[None] if x.ndim == 1 else x for x in (q, k))
    return q[:, None, :, None], k[:, None, None, :]


def _check_hook_positions(q_positions, k_positions) -> tuple[Array | None, Array | None]:
    """Positions a hook looks its indices up in: both None (the indices are the positions), or ``[T]``/``[B, T]``
    and ``[S]``/``[B, S]`` arrays (``k_positions`` defaults to ``q_positions``: self-attention)."""
    if q_positions is None:
        if k_positions is not None:
            raise ValueError("k_positions needs q_positions too (only k_positions may be left out, for "
                             "self-attention)")
        return None, None
    return _check_pair(q_positions, q_positions if k_positions is None else k_positions)


def _at(positions: Array | None, batch, index):
    """The position of (scalar) ``index`` in batch row ``batch``: ``index`` itself without positions."""
    if positions is None:
        return index
    if positions.ndim == 1:
        return positions[index]
    return positions[batch if positions.shape[0] > 1 else 0, index]


# --------------------------------------------------------------------------- absolute embeddings

def sinusoidal_encoding(positions, dim: int, *, max_timescale: float = 10_000.0) -> Array:
    """Vaswani et al. (2017) encodings: ``[sin(p w_0), .., sin(p w_{D/2-1}), cos(p w_0), ..]``.

    Frequencies ``w_i = max_timescale^(-2i / D)``.

    Args:
        positions: ``[T]`` or ``[B, T]``, integer or float.
        dim: ``D``, even.
        max_timescale: longest wavelength (over ``2 pi``).

    Returns:
        ``[T, D]`` or ``[B, T, D]`` float32.
    """
    positions = _check_positions("positions", positions, allow_float=True)
    dim = check_int("dim", dim)
    if dim % 2:
        raise ValueError(f"dim must be even (sin/cos pairs), got {dim}")
    if not max_timescale > 1:
        raise ValueError(f"max_timescale must be > 1, got {max_timescale!r}")
    freqs = jnp.exp(-math.log(max_timescale) * jnp.arange(dim // 2, dtype=jnp.float32) * 2.0 / dim)
    angles = positions.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def learned_table_init(rng: jax.Array, max_len: int, dim: int, *, std: float = 0.02) -> Array:
    """A ``[max_len, D]`` float32 table of learned absolute position embeddings, ``N(0, std^2)``."""
    max_len, dim = check_int("max_len", max_len), check_int("dim", dim)
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std!r}")
    return std * jax.random.normal(rng, (max_len, dim), jnp.float32)


def learned_encoding(table, positions) -> Array:
    """Rows of a learned ``[max_len, D]`` table at ``positions``.

    Positions outside ``[0, max_len)`` get a **zero** vector: a learned table has nothing to say
    about positions it never had, and length-generalization evaluations must still run (no NaN,
    no silent clipping to the last row).

    Returns:
        ``[T, D]`` or ``[B, T, D]`` in the table dtype.
    """
    table = jnp.asarray(table)
    if table.ndim != 2:
        raise ValueError(f"table must have shape [max_len, D], got {tuple(table.shape)}")
    positions = _check_positions("positions", positions)
    return jnp.take(table, positions, axis=0, mode="fill", fill_value=0)


# --------------------------------------------------------------------------- RoPE

def rope(x, positions, *, base: float = 10_000.0, fraction: float = 1.0) -> Array:
    """Rotary position embedding (Su et al. 2021) of queries or keys.

    The first ``R = 2 * floor(fraction * H / 2)`` features are rotated in pairs ``(i, i + R/2)``
    (the "half-split" layout of GPT-NeoX) by angle ``p * base^(-2i / R)``; the other ``H - R``
    features pass through (partial rotary). Computed in float32, returned in ``x.dtype``. Rotating
    both queries and keys makes ``q_i . k_j`` depend on positions only through ``i - j``.

    Args:
        x: ``[B, T, N, H]``.
        positions: ``[T]`` or ``[B, T]`` integer (or float) positions.
        base: frequency base (> 1).
        fraction: share of the head dim that is rotated, in ``(0, 1]``.

    Returns:
        ``[B, T, N, H]``, same dtype as ``x``.
    """
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must have shape [B, T, N, H], got {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be floating, got dtype {x.dtype}")
    positions = _check_positions("positions", positions, allow_float=True)
    B, T, N, H = x.shape
    if positions.shape[-1] != T or (positions.ndim == 2 and positions.shape[0] not in (1, B)):
        raise ValueError(f"positions must have shape [T] = ({T},) or [B, T] = ({B}, {T}), got {tuple(positions.shape)}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if not base > 1:
        raise ValueError(f"base must be > 1, got {base!r}")
    R = 2 * int(fraction * H // 2)
    if R == 0:
        raise ValueError(f"fraction={fraction} of head dim H={H} rotates no feature pair; raise fraction")
    half = R // 2
    inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) * 2.0 / R)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [(B,) T, R/2]
    angles = angles[None, :, None, :] if angles.ndim == 2 else angles[:, :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x32 = x.astype(jnp.float32)
    x1, x2, rest = x32[..., :half], x32[..., half:R], x32[..., R:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1)
    return rotated.astype(x.dtype)


# --------------------------------------------------------------------------- ALiBi

def alibi_slopes(num_heads: int) -> Array:
    """Per-head ALiBi slopes (Press et al. 2022), ``[N]`` float32.

    For ``N`` a power of two, the geometric sequence ``2^(-8/N), 2^(-16/N), .., 2^-8``; otherwise
    the slopes of the nearest lower power of two ``M`` followed by every other slope of ``2M``.
    """
    num_heads = check_int("num_heads", num_heads)

    def powers(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    m = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = powers(m) if m == num_heads else powers(m) + powers(2 * m)[0::2][: num_heads - m]
    return jnp.asarray(slopes, jnp.float32)


def alibi_bias(q_positions, k_positions, slopes, *, is_causal: bool = True) -> Array:
    """ALiBi linear distance penalty as an additive logit bias.

    With query positions ``p_i`` and key positions ``p_j``: ``bias[n, i, j] = -slope_n * |p_i - p_j|``
    (``is_causal=False``) or ``-slope_n * (p_i - p_j)`` for ``p_j <= p_i`` and 0 for ``p_j > p_i``
    (``is_causal=True``: those keys must be hidden by the attention's ``is_causal``/a mask anyway).
    Positions need not be consecutive: with randomized positions the distances are differences of
    the drawn positions.

    Args:
        q_positions: ``[T]`` or ``[B, T]`` integer.
        k_positions: ``[S]`` or ``[B, S]`` integer.
        slopes: ``[N]`` (e.g. :func:`alibi_slopes`), may be learned.
        is_causal: see above.

    Returns:
        ``[1, N, T, S]`` (or ``[B, N, T, S]``) float32.
    """
    q, k = _check_pair(q_positions, k_positions)
    slopes = _check_slopes(slopes)
    return _alibi(slopes[None, :, None, None], *_grid(q, k), is_causal)


def _check_slopes(slopes) -> Array:
    slopes = jnp.asarray(slopes)
    if slopes.ndim != 1:
        raise ValueError(f"slopes must have shape [N], got {tuple(slopes.shape)}")
    return slopes


def _alibi(slope, q_pos, k_pos, is_causal: bool) -> Array:
    """The ALiBi rule for a query at ``q_pos`` and a key at ``k_pos`` (elementwise, broadcasting), float32."""
    distance = q_pos.astype(jnp.int32) - k_pos.astype(jnp.int32)  # >= 0 for past keys
    distance = jnp.maximum(distance, 0) if is_causal else jnp.abs(distance)
    return -slope.astype(jnp.float32) * distance.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class AlibiScoreMod:
    """ALiBi as a ``score_mod``: ``score + bias[head, i, j]`` of :func:`alibi_bias`, from the same rule.

    ``params``: ``{"slopes": [N], "q_positions": [T] | [B, T] | None, "k_positions": ...}``
    (:func:`alibi_score_mod` builds them)."""

    is_causal: bool = True

    def __call__(self, score, batch, head, q_idx, kv_idx, params):
        q, k = _at(params["q_positions"], batch, q_idx), _at(params["k_positions"], batch, kv_idx)
        return score + _alibi(params["slopes"][head], q, k, self.is_causal).astype(score.dtype)


def alibi_score_mod(slopes, q_positions=None, k_positions=None, *, is_causal: bool = True) -> ScoreMod:
    """:func:`alibi_bias` as a ``score_mod``, computed per logit inside the kernel (no ``[N, T, S]`` array).

    ``dot_product_attention(q, k, v, **alibi_score_mod(slopes, pos, pos).keywords())`` equals
    ``dot_product_attention(q, k, v, alibi_bias(pos, pos, slopes))``, values and gradients (the slopes'
    included: they are ``score_mod_params``).

    Args:
        slopes: ``[N]`` per query head (e.g. :func:`alibi_slopes`), may be learned.
        q_positions: ``[T]`` or ``[B, T]`` integer positions of the queries; None: ``q_idx`` itself.
        k_positions: ``[S]`` or ``[B, S]``; default ``q_positions`` (self-attention), or ``kv_idx`` when both
            are None.
        is_causal: as in :func:`alibi_bias` (keys after the query get no penalty).

    Returns:
        :class:`~attnjax.ops.flex.ScoreMod`: an :class:`AlibiScoreMod` and its params.
    """
    q, k = _check_hook_positions(q_positions, k_positions)
    return ScoreMod(AlibiScoreMod(bool(is_causal)), {"slopes": _check_slopes(slopes), "q_positions": q,
                                                     "k_positions": k})


# --------------------------------------------------------------------------- T5 relative buckets

def t5_relative_bucket(relative_position, *, is_causal: bool = False, num_buckets: int = 32,
                       max_distance: int = 128) -> Array:
    """T5 (Raffel et al. 2020) buckets of ``relative_position = key - query``.

    Half of the buckets (per direction) hold exact small distances; the rest cover distances
    logarithmically up to ``max_distance``, beyond which everything shares the last bucket. Without
    ``is_causal`` (T5's bidirectional buckets) the first half of buckets is for past keys, the second
    for future keys; with ``is_causal`` future keys all fall in bucket 0 (with distance 0).

    Returns:
        int32 buckets in ``[0, num_buckets)``, same shape as ``relative_position``.
    """
    num_buckets = check_int("num_buckets", num_buckets, 2)
    max_distance = check_int("max_distance", max_distance, 1)
    n = -jnp.asarray(relative_position).astype(jnp.int32)  # > 0 for past keys
    buckets = jnp.zeros_like(n)
    if not is_causal:
        num_buckets //= 2
        buckets = buckets + (n < 0).astype(jnp.int32) * num_buckets
        n = jnp.abs(n)
    else:
        n = jnp.maximum(n, 0)
    max_exact = max(num_buckets // 2, 1)
    log_ratio = jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact) / math.log(
        max(max_distance / max_exact, 1.0 + 1e-6))
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return buckets + jnp.where(n < max_exact, n, large)


def t5_table_init(rng: jax.Array, num_buckets: int, num_heads: int, *, std: float = 0.02) -> Array:
    """A ``[num_buckets, N]`` float32 table of learned per-head bucket biases."""
    num_buckets, num_heads = check_int("num_buckets", num_buckets, 2), check_int("num_heads", num_heads)
    return std * jax.random.normal(rng, (num_buckets, num_heads), jnp.float32)


def t5_relative_bias(table, q_positions, k_positions, *, is_causal: bool = False,
                     max_distance: int = 128) -> Array:
    """T5 relative position bias ``table[bucket(k_j - q_i), n]`` as an additive logit bias.

    ``q_i`` and ``k_j`` are positions, consecutive or not (randomized positions give bucketed
    differences of the drawn positions).

    Args:
        table: ``[num_buckets, N]`` learned biases (see :func:`t5_table_init`).
        q_positions: ``[T]`` or ``[B, T]``; k_positions: ``[S]`` or ``[B, S]`` integers.
        is_causal: buckets for causal attention (see :func:`t5_relative_bucket`).
        max_distance: see :func:`t5_relative_bucket`.

    Returns:
        ``[1, N, T, S]`` (or ``[B, N, T, S]``) in the table dtype.
    """
    table = _check_table(table)
    q, k = _check_pair(q_positions, k_positions)
    heads = jnp.arange(table.shape[1], dtype=jnp.int32)[None, :, None, None]
    return _t5(table, heads, *_grid(q, k), is_causal, max_distance)


def _check_table(table) -> Array:
    table = jnp.asarray(table)
    if table.ndim != 2:
        raise ValueError(f"table must have shape [num_buckets, N], got {tuple(table.shape)}")
    return table


def _t5(table, head, q_pos, k_pos, is_causal: bool, max_distance: int) -> Array:
    """The T5 rule ``table[bucket(k_pos - q_pos), head]`` (elementwise, broadcasting), in the table dtype."""
    bucket = t5_relative_bucket(k_pos.astype(jnp.int32) - q_pos.astype(jnp.int32), is_causal=is_causal,
                                num_buckets=table.shape[0], max_distance=max_distance)
    return table[bucket, head]


@dataclasses.dataclass(frozen=True)
class T5ScoreMod:
    """T5 relative buckets as a ``score_mod``: ``score + bias[head, i, j]`` of :func:`t5_relative_bias`, from
    the same rule.

    ``params``: ``{"table": [num_buckets, N], "q_positions": [T] | [B, T] | None, "k_positions": ...}``
    (:func:`t5_score_mod` builds them)."""

    is_causal: bool = False
    max_distance: int = 128

    def __call__(self, score, batch, head, q_idx, kv_idx, params):
        q, k = _at(params["q_positions"], batch, q_idx), _at(params["k_positions"], batch, kv_idx)
        return score + _t5(params["table"], head, q, k, self.is_causal, self.max_distance).astype(score.dtype)


def t5_score_mod(table, q_positions=None, k_positions=None, *, is_causal: bool = False,
                 max_distance: int = 128) -> ScoreMod:
    """:func:`t5_relative_bias` as a ``score_mod``, computed per logit inside the kernel (no ``[N, T, S]``
    array); the table gets its gradient as ``score_mod_params``.

    Args:
        table: ``[num_buckets, N]`` learned biases (see :func:`t5_table_init`).
        q_positions: ``[T]`` or ``[B, T]`` integer positions of the queries; None: ``q_idx`` itself.
        k_positions: ``[S]`` or ``[B, S]``; default ``q_positions`` (self-attention), or ``kv_idx`` when both
            are None.
        is_causal, max_distance: as in :func:`t5_relative_bias`.

    Returns:
        :class:`~attnjax.ops.flex.ScoreMod`: a :class:`T5ScoreMod` and its params.
    """
    table = _check_table(table)
    check_int("num_buckets", table.shape[0], 2)
    max_distance = check_int("max_distance", max_distance, 1)
    q, k = _check_hook_positions(q_positions, k_positions)
    return ScoreMod(T5ScoreMod(bool(is_causal), max_distance), {"table": table, "q_positions": q, "k_positions": k})


# --------------------------------------------------------------------------- positions

def consecutive_positions(batch: int, length: int, offset: int = 0) -> Array:
    """``[B, T]`` int32 positions ``offset, offset + 1, ..`` (standard, non-randomized encodings)."""
    batch, length = check_int("batch", batch), check_int("length", length)
    return jnp.broadcast_to(offset + jnp.arange(length, dtype=jnp.int32), (batch, length))


def randomized_positions(rng: jax.Array, batch: int, length: int, max_len: int) -> Array:
    """Randomized positions (Ruoss et al. 2023): a sorted random subset of ``[0, max_len)``.

    Each of the ``batch`` rows draws ``length`` distinct positions uniformly without replacement from
    ``[0, max_len)`` and sorts them, so a model trained on short sequences still sees every position
    value (and gaps) up to ``max_len``. Ruoss et al. draw one subset per batch (``batch=1``, broadcast
    over the examples) in every forward pass, at evaluation as well as in training, with
    ``max_len = 2048``; the encodings then read these positions exactly as they read ``0..T-1``.

    Args:
        rng: PRNG key.
        batch: number of independent subsets ``B`` (1: one subset shared by the whole batch).
        length: ``T``, at most ``max_len``.
        max_len: ``L``, the exclusive upper bound of the positions.

    Returns:
        ``[B, T]`` int32, strictly increasing along ``T``, in ``[0, max_len)``.

    Raises:
        ValueError: ``length > max_len``.
    """
    batch, length, max_len = (check_int("batch", batch), check_int("length", length),
                              check_int("max_len", max_len))
    if length > max_len:
        raise ValueError(f"length ({length}) must be <= max_len ({max_len}) to draw distinct positions")
    # The top-`length` of i.i.d. uniform scores is a uniform random subset of [0, max_len).
    scores = jax.random.uniform(rng, (batch, max_len))
    _, idx = jax.lax.top_k(scores, length)
    return jnp.sort(idx, axis=-1).astype(jnp.int32)


def positions_for(rng: jax.Array | None, batch: int, length: int, *, randomized: bool,
                  max_len: int = 2048) -> Array:
    """The positions an encoding reads: :func:`randomized_positions` or :func:`consecutive_positions`.

    Args:
        rng: PRNG key; required when ``randomized`` (ignored otherwise, may be None).
        batch: ``B`` rows (pass 1 for one subset shared by the batch, as Ruoss et al.).
        length: ``T``.
        randomized: draw a sorted random subset of ``[0, max_len)`` instead of ``0..T-1``.
        max_len: ``L`` for randomized positions.

    Returns:
        ``[B, T]`` int32.

    Raises:
        ValueError: ``randomized`` without ``rng``, or ``length > max_len``.
    """
    if not randomized:
        return consecutive_positions(batch, length)
    if rng is None:
        raise ValueError("rng is required when randomized=True (randomized positions are drawn at random)")
    return randomized_positions(rng, batch, length, max_len)


# --------------------------------------------------------------------------- lookup

@dataclasses.dataclass(frozen=True)
class PositionalSpec:
    """How a model applies a positional encoding.

    Every encoding but ``nope`` also has a randomized version (Ruoss et al. 2023): the same formula
    read at :func:`randomized_positions`; see :func:`check_randomized`.

    Attributes:
        name: key in :data:`POSITIONAL`.
        kind: ``"embedding"`` (add to token embeddings), ``"rotary"`` (rotate q and k), ``"bias"``
            (additive attention bias) or ``"none"``.
        learned: the encoding has a learned table (``learned``, ``t5``).
        description: one line.
    """

    name: str
    kind: str
    learned: bool = False
    description: str = ""


POSITIONAL: dict[str, PositionalSpec] = {spec.name: spec for spec in (
    PositionalSpec("sinusoidal", "embedding", description="fixed sin/cos embeddings (Vaswani et al.)"),
    PositionalSpec("learned", "embedding", learned=True, description="learned absolute table"),
    PositionalSpec("rope", "rotary", description="rotary q/k (Su et al.)"),
    PositionalSpec("alibi", "bias", description="linear distance bias (Press et al.)"),
    PositionalSpec("t5", "bias", learned=True, description="bucketed relative bias (Raffel et al.)"),
    PositionalSpec("nope", "none", description="no positional information"),
)}

# What randomized positions do at evaluation: "random" draws a fresh subset in every forward pass, as
# in training (Ruoss et al. 2023); "consecutive" uses 0..T-1 at evaluation (random in training only).
RANDOMIZED_EVAL = ("random", "consecutive")


def get_positional(name: str) -> PositionalSpec:
    """The :class:`PositionalSpec` named ``name``; ValueError listing valid names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"positional name must be a str, got {type(name).__name__}: {name!r}")
    if name not in POSITIONAL:
        raise ValueError(f"unknown positional encoding {name!r}; valid names: {', '.join(sorted(POSITIONAL))}")
    return POSITIONAL[name]


def check_randomized(name: str, randomized: bool, randomized_eval: str = "random") -> PositionalSpec:
    """Validates a (positional, randomized, randomized_eval) choice before any training.

    Returns:
        The :class:`PositionalSpec` of ``name``.

    Raises:
        ValueError: unknown ``name``; ``randomized_eval`` not in :data:`RANDOMIZED_EVAL`; ``randomized``
            with ``nope`` (no positions to randomize).
        TypeError: ``randomized`` not a bool.
    """
    spec = get_positional(name)
    if not isinstance(randomized, (bool, np.bool_)):
        raise TypeError(f"randomized must be a bool, got {type(randomized).__name__}: {randomized!r}")
    if randomized_eval not in RANDOMIZED_EVAL:
        raise ValueError(f"randomized_eval must be one of {', '.join(map(repr, RANDOMIZED_EVAL))}, "
                         f"got {randomized_eval!r}")
    if randomized and spec.kind == "none":
        raise ValueError(f"randomized=True with positional={name!r}: this encoding uses no positions, so there is "
                         "nothing to randomize; pick another encoding or randomized=False")
    return spec
