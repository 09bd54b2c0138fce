"""Stick-breaking attention (Tan et al., "Scaling Stick-Breaking Attention", ICLR 2025).

Each query breaks a stick of length 1 walking back from itself over earlier keys: key ``j`` takes the
fraction ``beta_ij`` of what later keys left. No softmax and no positional encoding: the order of the keys
is in the product, which favours recent keys. For query ``i`` and key ``j`` (the reference code's default,
``attend_current=False``)::

    z_ij    = scale * q_i . k_j + bias_ij                       (scale = 1 / sqrt(H))
    beta_ij = sigmoid(z_ij)
    A_ij    = beta_ij * prod_{j < k < i} (1 - beta_ik)          for j < i, else 0
    r_i     = 1 - sum_j A_ij = prod_{k < i} (1 - beta_ik)       (what is left of the stick)
    o_i     = sum_j A_ij v_j + r_i v_i

computed in log space with one reverse cumulative sum per row: ``log beta = log_sigmoid(z)``,
``log(1 - beta) = log_sigmoid(-z)``, ``log A_ij = log_sigmoid(z_ij) + sum_{k > j} log_sigmoid(-z_ik)``
(the sum over the keys the row sees after ``j``), and ``r_i = exp(sum_k log_sigmoid(-z_ik))``: the
telescoped product, so the remainder is never ``1 - (a sum close to 1)``. Every quantity is float32
(float64 for float64 inputs) whatever the input dtype; no ``exp`` of a positive number is taken, so long
sequences and extreme logits give no overflow or NaN.

Choices the paper leaves open, and what this module does (following shawntan/stickbreaking-attention):

* **The remainder.** ``r_i`` goes to the query's own value ``v_i``, as the reference code does
  (``o = o + rem[..., None] * v``), so every row's weights sum to 1 and the first token, which has no
  earlier key, outputs its own value. It is not dropped.
* **The diagonal.** ``attend_current=False`` (the reference's default): key ``i`` is not on query ``i``'s
  stick (``j < i``, the product over ``j < k < i``); it gets only the remainder. ``attend_current=True``
  puts it on the stick first (``j <= i``, the product over ``j < k <= i``), the remainder still going to
  ``v_i``.
* **Masks and lengths** (the one rule of :mod:`attnjax.ops.visibility`, and ``mask``): a hidden key neither
  takes weight nor breaks the stick (``log(1 - beta) = 0``, the reference's ``masked_fill``). The remainder
  goes to ``v_i`` only when key ``i`` itself is visible to query ``i``; otherwise it is dropped. So a query
  row that sees no key (padding, a fully masked row) outputs **zeros**, with zero gradients, and a hidden
  key has no influence at all.
* **Causality.** The product runs backwards from the query, so the mechanism is causal only:
  ``is_causal`` defaults to True and ``is_causal=False`` raises ValueError. With ``T != S`` the causal
  mask is top-left aligned as in ``jax.nn`` (query ``i`` sees keys ``j <= i``; its "own" key is key ``i``),
  unless ``query_offset`` places the queries further along the keys (query ``i`` at key position
  ``query_offset + i``: decoding with a key/value cache, where the keys are the cached tokens).
* **Bias.** ``bias`` is added to ``z`` before the sigmoid (the paper has none; a positional bias such as
  ALiBi then shifts each ``beta``).
* **Dropout** (``dropout_rate``) drops entries of ``A`` (inverted scaling); the remainder is computed from
  the undropped weights, as in the reference layer.

Two paths, the same row function: ``implementation="dense"`` (None, ``"xla"``) materializes ``[B, N, T, S]``;
``"blockwise"`` evaluates ``block_q`` query rows at a time and recomputes them in the backward pass
(:mod:`attnjax.ops.query_tiles`), ``O(block_q * S)`` memory. Its dropout mask is drawn per tile, so for
one ``dropout_rng`` it differs from the dense path's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops import checks
from attnjax.ops.masks import combine_masks
from attnjax.ops.primitives import dropout, repeat_kv_heads, scaled_logits, stat_dtype, weighted_values
from attnjax.ops.query_tiles import block_q_of, check_implementation, check_query_offset, map_query_tiles
from attnjax.ops.visibility import Visibility

Array = jnp.ndarray


def _check_causal(fn_name: str, is_causal: Any) -> None:
    if not isinstance(is_causal, (bool, np.bool_)) or not is_causal:
        raise ValueError(f"{fn_name} is causal only (each key takes a share of what the keys between it and "
                         f"the query left), so is_causal must be True, got is_causal={is_causal!r}")


def _prepare(fn_name, query, key, value, bias, mask, *, is_causal, scale, query_seq_lengths, key_value_seq_lengths,
             attend_current):
    _check_causal(fn_name, is_causal)
    if not isinstance(attend_current, bool):
        raise ValueError(f"attend_current must be True or False, got {attend_current!r}")
    checks.check_positive("scale", scale)
    query, key, value = (jnp.asarray(x) for x in (query, key, value))
    dims = checks.check_inputs(query, key, value, bias=bias, mask=mask, query_seq_lengths=query_seq_lengths,
                               key_value_seq_lengths=key_value_seq_lengths)
    return query, key, value, checks.pad_to_rank4(bias), checks.pad_to_rank4(mask), dims


def _stick_breaking_rows(query, key, bias, mask, q_pos, *, scale, attend_current, query_seq_lengths,
                         key_value_seq_lengths):
    """``(A [B, N, t, S], r [B, N, t], own [B|1, N|1, t])`` of the query rows at positions ``q_pos [t]``:
    stick weights, remainder, and whether each row's own key is visible (the remainder's destination)."""
    S = key.shape[1]
    acc = stat_dtype(query.dtype)
    z = scaled_logits(query, key, scale=scale)  # [B, N, t, S]
    if bias is not None:
        z = z + bias.astype(acc)
    k_pos = jnp.arange(S, dtype=jnp.int32)
    rule = Visibility(is_causal=True).mask(q_pos, k_pos, query_seq_lengths=query_seq_lengths,
                                           key_value_seq_lengths=key_value_seq_lengths)
    visible = combine_masks(rule[:, None], mask)  # [B|1, N|1, t, S], key j <= i included
    own = jnp.any(visible & (k_pos[None, :] == q_pos[:, None]), axis=-1)
    stick = visible if attend_current else visible & (k_pos[None, :] < q_pos[:, None])
    z = jnp.where(stick, z, 0.0)  # hidden entries stay finite, so their (unused) gradients are 0, not NaN
    log_keep = jnp.where(stick, jax.nn.log_sigmoid(-z), 0.0)  # log(1 - beta); hidden keys break nothing
    suffix = jax.lax.cumsum(log_keep, axis=3, reverse=True)  # sum_{k >= j}
    after = jnp.concatenate([suffix[..., 1:], jnp.zeros_like(suffix[..., :1])], axis=-1)  # sum_{k > j}, exact
    weights = jnp.where(stick, jnp.exp(jax.nn.log_sigmoid(z) + after), 0.0)
    remainder = jnp.exp(suffix[..., 0])
    return weights, remainder, own


def _own_values(value: Array, q_pos: Array, num_heads: int) -> Array:
    """``[B, t, N, Hv]``: value of key ``q_pos`` for every query head (clamped to ``S - 1`` past the keys,
    where the remainder is 0 anyway)."""
    own = jnp.take(value, jnp.minimum(q_pos, value.shape[1] - 1), axis=1)
    return repeat_kv_heads(own, num_heads, axis=2)


def stick_breaking_attention(query, key, value, bias=None, mask=None, *, is_causal: bool = True,
                             query_seq_lengths=None, key_value_seq_lengths=None, scale: float | None = None,
                             attend_current: bool = False, dropout_rate: float = 0.0, dropout_rng=None,
                             implementation: str | None = None, block_sizes=None, query_offset: Any = 0) -> Array:
    """Stick-breaking attention (module docstring: equations and choices).

    Args:
        query: ``[B, T, N, H]`` floating.
        key: ``[B, S, K, H]``, same dtype, ``N % K == 0`` (grouped-query attention).
        value: ``[B, S, K, Hv]``, same dtype.
        bias: added to the logits ``z`` before the sigmoid, broadcastable to ``[B, N, T, S]`` (rank < 4 counts
            as leading 1s, as in ``jax.nn``).
        mask: boolean, ``True`` = may attend, broadcastable to ``[B, N, T, S]``.
        is_causal: must be True (the default): the mechanism is causal only.
        query_seq_lengths: ``[B]`` int; rows past the length output zeros.
        key_value_seq_lengths: ``[B]`` int; keys past the length are hidden.
        scale: logit multiplier, default ``1 / sqrt(H)``.
        attend_current: put key ``i`` on query ``i``'s stick (``j <= i``); default False, the reference's.
        dropout_rate: dropout on the stick weights ``A``; needs ``dropout_rng`` when positive.
        dropout_rng: PRNG key.
        implementation: None/``"dense"``/``"xla"`` (``[B, N, T, S]`` materialized) or ``"blockwise"``
            (query tiles, ``O(block_q * S)`` memory in both passes).
        block_sizes: the ``"blockwise"`` tile: a :class:`attnjax.ops.BlockSizes` or ``(block_q, block_k)``;
            only ``block_q`` is used (a tile holds every key of its rows); default 128 rows.
        query_offset: int (may be traced), the key position of query 0: query ``i`` sees keys
            ``j <= query_offset + i`` and its own key is key ``query_offset + i``. Default 0 (self-attention);
            decoding with a cache passes the number of keys cached before the new queries.

    Returns:
        ``[B, T, N, Hv]`` in the query dtype; rows that see no key are zeros.

    Raises:
        ValueError: ``is_causal`` not True, malformed shapes, scale, implementation or block sizes.
        TypeError: non-floating or mixed dtypes, a non-boolean mask.
    """
    name = "stick_breaking_attention"
    path = check_implementation(name, implementation)
    block_q = block_q_of(block_sizes)
    query, key, value, bias, mask, (B, T, S, N, K, H) = _prepare(
        name, query, key, value, bias, mask, is_causal=is_causal, scale=scale, query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths, attend_current=attend_current)
    checks.check_dropout(dropout_rate, dropout_rng)
    scale = checks.default_scale(scale, H)
    offset = check_query_offset(query_offset)

    def rows(q, q_pos, bias_rows, mask_rows, tile):
        weights, remainder, own = _stick_breaking_rows(
            q, key, bias_rows, mask_rows, q_pos, scale=scale, attend_current=attend_current,
            query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths)
        if dropout_rate:
            weights = dropout(weights, dropout_rate, jax.random.fold_in(dropout_rng, tile))
        out = weighted_values(weights, value)  # [B, t, N, Hv]
        left = jnp.where(own, remainder, 0.0)  # [B, N, t]
        return out + jnp.swapaxes(left, 1, 2)[..., None] * _own_values(value, q_pos, N).astype(out.dtype)

    if path == "dense":
        out = rows(query, offset + jnp.arange(T, dtype=jnp.int32), bias, mask, jnp.int32(0))
    else:
        out = map_query_tiles(rows, query, bias, mask, block_q=block_q, offset=offset)
    return out.astype(query.dtype)


def stick_breaking_weights(query, key, bias=None, mask=None, *, is_causal: bool = True, query_seq_lengths=None,
                           key_value_seq_lengths=None, scale: float | None = None,
                           attend_current: bool = False, query_offset: Any = 0) -> Array:
    """``[B, N, T, S]`` float32 effective weights of :func:`stick_breaking_attention` (for diagnostics).

    The stick weights ``A`` plus the remainder on the diagonal (``j == i``, where key ``i`` is visible to
    query ``i``), so that ``weights @ V`` is the attention output and each row sums to 1 (0 for a row that
    sees no key, or whose own key is hidden and whose stick is not used up).

    Args: as :func:`stick_breaking_attention`, without value, dropout and implementation.
    """
    query, key, _, bias, mask, (B, T, S, N, K, H) = _prepare(
        "stick_breaking_weights", query, key, key, bias, mask, is_causal=is_causal, scale=scale,
        query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
        attend_current=attend_current)
    q_pos = check_query_offset(query_offset) + jnp.arange(T, dtype=jnp.int32)
    weights, remainder, own = _stick_breaking_rows(
        query, key, bias, mask, q_pos, scale=checks.default_scale(scale, H), attend_current=attend_current,
        query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths)
    diagonal = jnp.arange(S)[None, :] == q_pos[:, None]  # [T, S]
    weights = weights + jnp.where(diagonal & own[..., None], remainder[..., None], 0.0)
    return weights.astype(jnp.float32)


__all__ = ["stick_breaking_attention", "stick_breaking_weights"]
