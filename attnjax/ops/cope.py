"""CoPE, contextual position encoding (Golovneva et al., "Contextual Position Encoding: Learning to Count
What's Important", 2024).

Positions are counted in context: a gate per query-key pair decides whether a key counts, and the position
of key ``j`` for query ``i`` is the number of counted keys from ``j`` to ``i``. Positions are fractional, so
a learned table of position embeddings is interpolated between its integer rows::

    g_ij = sigmoid(scale * q_i . k_j)                                   (scale = 1 / sqrt(H))
    p_ij = min(sum_{k=j}^{i} g_ik, p_max)                               (causal)
    z_ij = (p_ij - floor p_ij) * q_i . e[ceil p_ij] + (1 - p_ij + floor p_ij) * q_i . e[floor p_ij]
    a_ij = softmax_j(scale * (q_i . k_j + z_ij) + bias_ij)
    o_i  = sum_j a_ij v_j

``q_i . e[p]`` is computed once for every integer position ``p = 0 .. p_max`` (a ``[B, N, T, p_max + 1]``
product) and then gathered at ``floor p`` and ``ceil p``, as the reference code does; gradients reach the
table through the gathered products and the gates through the interpolation weight ``p - floor p`` (the
rounded positions themselves are integers, with no gradient, also as in the reference). The softmax is
float32 (float64 for float64 inputs) with attnjax's conventions: masked logits at a large finite negative,
rows that see no key output zeros with zero gradients.

Choices the paper leaves open, and what this module does (following facebookresearch/RAM, projects/cope):

* **Scale.** The gates and the logits are divided by ``sqrt(H)`` (the reference's default, not
  ``--cope-nodiv``): ``sigmoid(q.k / sqrt(H))`` and ``(q.k + z) / sqrt(H)``; ``scale`` replaces ``1/sqrt(H)``
  in both.
* **Gate keys.** The gates use the attention keys themselves (the reference's default; a separate gate key
  projection is the calling layer's choice: pass other keys).
* **The table** ``position_embeddings``: ``[P, H]`` shared by every head (the reference's
  ``pos_emb [1, H, npos]`` per layer), or ``[N, P, H]``, one per query head. ``p_max = P - 1`` unless
  ``npos_max`` is given (``<= P - 1``); longer counts are clamped to ``p_max``, as the reference clamps to
  ``npos - 1``. :func:`init_cope_params` builds a zero table (the reference's initialization: at the start
  CoPE is plain softmax attention, and the table learns from there).
* **Masks, lengths and bias.** Hidden keys (the one rule of :mod:`attnjax.ops.visibility`, and ``mask``)
  have gate 0, so they are not counted (the reference multiplies the gates by its mask). ``bias`` is added
  to the logits after the position term and does not enter the gates.
* **Not causal** (``is_causal=False``): the count runs from key ``j`` to the last key the row sees, the
  reference's reverse cumulative sum over the whole row, so positions are measured from the end of the
  context rather than from the query. The paper only uses CoPE causally.
* **Dropout** (``dropout_rate``) on the attention probabilities, as in the reference layer.
* **Queries further along the keys** (``query_offset``): query ``i`` sits at key position ``query_offset + i``
  (its causal horizon), for decoding with a key/value cache whose keys are the cached tokens.

Two paths, the same row function: ``implementation="dense"`` (None, ``"xla"``) materializes ``[B, N, T, S]``;
``"blockwise"`` evaluates ``block_q`` query rows at a time and recomputes them in the backward pass
(:mod:`attnjax.ops.query_tiles`), ``O(block_q * (S + P))`` memory. Its dropout mask is drawn per tile.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops import checks
from attnjax.ops.masks import combine_masks
from attnjax.ops.primitives import dropout, masked_softmax, scaled_logits, stat_dtype, weighted_values
from attnjax.ops.query_tiles import block_q_of, check_implementation, check_query_offset, map_query_tiles
from attnjax.ops.visibility import Visibility

Array = jnp.ndarray

# Largest contextual position of the table that init_cope_params builds (positions beyond are clamped).
DEFAULT_NPOS_MAX = 64


def init_cope_params(rng: jax.Array, *, head_dim: int, num_heads: int, npos_max: int = DEFAULT_NPOS_MAX,
                     per_head: bool = False) -> dict[str, jax.Array]:
    """``{"position_embeddings": zeros [npos_max + 1, head_dim]}`` (``[num_heads, npos_max + 1, head_dim]``
    with ``per_head``): the reference initializes the table at zero. ``rng`` is unused (kept for the
    registry's ``init_params`` signature)."""
    del rng
    npos_max = checks.check_int("npos_max", npos_max, 0)
    shape = (npos_max + 1, head_dim) if not per_head else (num_heads, npos_max + 1, head_dim)
    return {"position_embeddings": jnp.zeros(shape, jnp.float32)}


def _check_table(table: Any, num_heads: int, head_dim: int, npos_max: Any) -> int:
    """The largest position ``p_max``; raises naming ``position_embeddings``/``npos_max`` when malformed."""
    if table is None:
        raise ValueError(f"position_embeddings is required: the learned [P, H] = [npos_max + 1, {head_dim}] table "
                         f"(or [N, P, H]); build it with attnjax.ops.cope.init_cope_params or "
                         f"init_attention_params('cope', rng, head_dim=H, num_heads=N)")
    shape = tuple(np.shape(table))
    if not ((len(shape) == 2 and shape[1] == head_dim) or (len(shape) == 3 and shape[0] == num_heads
                                                            and shape[2] == head_dim)) or shape[-2] < 1:
        raise ValueError(f"position_embeddings must have shape [P, H] = [P, {head_dim}] or [N, P, H] = "
                         f"[{num_heads}, P, {head_dim}] with P >= 1, got {shape}")
    checks.check_floating("position_embeddings", table)
    rows = shape[-2]
    if npos_max is None:
        return rows - 1
    npos_max = checks.check_int("npos_max", npos_max, 0)
    if npos_max > rows - 1:
        raise ValueError(f"npos_max={npos_max} needs a position_embeddings table of at least npos_max + 1 = "
                         f"{npos_max + 1} rows, got shape {shape}")
    return npos_max


def _prepare(query, key, value, bias, mask, *, scale, query_seq_lengths, key_value_seq_lengths,
             position_embeddings, npos_max):
    checks.check_positive("scale", scale)
    query, key, value = (jnp.asarray(x) for x in (query, key, value))
    dims = checks.check_inputs(query, key, value, bias=bias, mask=mask, query_seq_lengths=query_seq_lengths,
                               key_value_seq_lengths=key_value_seq_lengths)
    p_max = _check_table(position_embeddings, dims[3], dims[5], npos_max)
    return query, key, value, checks.pad_to_rank4(bias), checks.pad_to_rank4(mask), dims, p_max


def _positions(qk, mask, q_pos, *, is_causal, query_seq_lengths, key_value_seq_lengths):
    """``(p [B, N, t, S], visible [B|1, N|1, t, S] | None)``: unclamped contextual positions
    ``sum_{k >= j} g_ik`` over the keys row ``i`` sees, from ``qk = scale * q.k``."""
    k_pos = jnp.arange(qk.shape[3], dtype=jnp.int32)
    rule = Visibility(is_causal=is_causal).mask(q_pos, k_pos, query_seq_lengths=query_seq_lengths,
                                                key_value_seq_lengths=key_value_seq_lengths)
    visible = combine_masks(None if rule is None else rule[:, None], mask)
    gates = jax.nn.sigmoid(qk)
    if visible is not None:
        gates = jnp.where(visible, gates, 0.0)  # hidden keys are not counted
    return jax.lax.cumsum(gates, axis=3, reverse=True), visible


def _cope_rows(query, key, table, bias, mask, q_pos, *, scale, p_max, is_causal, query_seq_lengths,
               key_value_seq_lengths):
    """``(logits [B, N, t, S], visible [B|1, N|1, t, S] | None)`` of the query rows at positions ``q_pos``."""
    acc = stat_dtype(query.dtype)
    qk = scaled_logits(query, key, scale=scale)  # scale * q.k, [B, N, t, S]
    positions, visible = _positions(qk, mask, q_pos, is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                                    key_value_seq_lengths=key_value_seq_lengths)
    positions = jnp.minimum(positions, p_max)
    low = jax.lax.stop_gradient(jnp.floor(positions))
    high = jax.lax.stop_gradient(jnp.ceil(positions))
    frac = positions - low
    # q_i . e[p] for every integer position p: [B, N, t, P]; gathered at floor p and ceil p.
    table = jnp.asarray(table).astype(acc)
    spec = "BTNH,PH->BNTP" if table.ndim == 2 else "BTNH,NPH->BNTP"
    at = jnp.einsum(spec, query.astype(acc), table)
    gather = lambda idx: jnp.take_along_axis(at, idx.astype(jnp.int32), axis=3)  # noqa: E731
    z = frac * gather(high) + (1.0 - frac) * gather(low)
    logits = qk + jnp.asarray(scale, acc) * z
    if bias is not None:
        logits = logits + bias.astype(acc)
    return logits, visible


def cope_attention(query, key, value, bias=None, mask=None, *, position_embeddings=None, is_causal: bool = False,
                   query_seq_lengths=None, key_value_seq_lengths=None, scale: float | None = None,
                   npos_max: int | None = None, dropout_rate: float = 0.0, dropout_rng=None,
                   implementation: str | None = None, block_sizes=None, query_offset: Any = 0) -> Array:
    """Softmax attention with contextual position encoding (module docstring: equations and choices).

    Args:
        query: ``[B, T, N, H]`` floating.
        key: ``[B, S, K, H]``, same dtype, ``N % K == 0`` (grouped-query attention; the gates of query head
            ``n`` use key head ``n // (N // K)``).
        value: ``[B, S, K, Hv]``, same dtype.
        bias: added to the logits, broadcastable to ``[B, N, T, S]`` (rank < 4 counts as leading 1s).
        mask: boolean, ``True`` = may attend, broadcastable to ``[B, N, T, S]``; hidden keys are not counted.
        position_embeddings: the learned table, ``[P, H]`` (shared by the heads) or ``[N, P, H]``; required
            (:func:`init_cope_params` builds one).
        is_causal: query ``i`` sees keys ``j <= i`` (CoPE as published); False counts to the row's last key.
        query_seq_lengths: ``[B]`` int; rows past the length output zeros.
        key_value_seq_lengths: ``[B]`` int; keys past the length are hidden and not counted.
        scale: multiplier of the gate logits and the attention logits, default ``1 / sqrt(H)``.
        npos_max: largest position (counts are clamped to it), ``<= P - 1``; default ``P - 1``.
        dropout_rate: dropout on the attention probabilities; needs ``dropout_rng`` when positive.
        dropout_rng: PRNG key.
        implementation: None/``"dense"``/``"xla"`` (materialized) or ``"blockwise"`` (query tiles).
        block_sizes: the ``"blockwise"`` tile (:class:`attnjax.ops.BlockSizes` or a pair); only ``block_q``
            is used; default 128 rows.
        query_offset: int (may be traced), the key position of query 0 (query ``i`` is at key position
            ``query_offset + i``; with ``is_causal`` it sees keys ``j <= query_offset + i``). Default 0;
            decoding with a cache passes the number of keys cached before the new queries.

    Returns:
        ``[B, T, N, Hv]`` in the query dtype; rows that see no key are zeros.

    Raises:
        ValueError: a missing or malformed table or ``npos_max``, malformed shapes, scale, implementation.
        TypeError: non-floating or mixed dtypes, a non-boolean mask.
    """
    name = "cope_attention"
    path = check_implementation(name, implementation)
    block_q = block_q_of(block_sizes)
    query, key, value, bias, mask, (B, T, S, N, K, H), p_max = _prepare(
        query, key, value, bias, mask, scale=scale, query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths, position_embeddings=position_embeddings, npos_max=npos_max)
    checks.check_dropout(dropout_rate, dropout_rng)
    scale = checks.default_scale(scale, H)
    offset = check_query_offset(query_offset)

    def rows(q, q_pos, bias_rows, mask_rows, tile):
        logits, visible = _cope_rows(q, key, position_embeddings, bias_rows, mask_rows, q_pos, scale=scale,
                                     p_max=p_max, is_causal=bool(is_causal), query_seq_lengths=query_seq_lengths,
                                     key_value_seq_lengths=key_value_seq_lengths)
        probs = masked_softmax(logits, visible)
        if dropout_rate:
            probs = dropout(probs, dropout_rate, jax.random.fold_in(dropout_rng, tile))
        return weighted_values(probs, value)

    if path == "dense":
        out = rows(query, offset + jnp.arange(T, dtype=jnp.int32), bias, mask, jnp.int32(0))
    else:
        out = map_query_tiles(rows, query, bias, mask, block_q=block_q, offset=offset)
    return out.astype(query.dtype)


def cope_weights(query, key, bias=None, mask=None, *, position_embeddings=None, is_causal: bool = False,
                 query_seq_lengths=None, key_value_seq_lengths=None, scale: float | None = None,
                 npos_max: int | None = None, query_offset: Any = 0) -> Array:
    """``[B, N, T, S]`` float32 attention probabilities of :func:`cope_attention` (for diagnostics).

    Args: as :func:`cope_attention`, without value, dropout and implementation.
    """
    query, key, _, bias, mask, (B, T, S, N, K, H), p_max = _prepare(
        query, key, key, bias, mask, scale=scale, query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths, position_embeddings=position_embeddings, npos_max=npos_max)
    q_pos = check_query_offset(query_offset) + jnp.arange(T, dtype=jnp.int32)
    logits, visible = _cope_rows(query, key, position_embeddings, bias, mask, q_pos,
                                 scale=checks.default_scale(scale, H), p_max=p_max, is_causal=bool(is_causal),
                                 query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths)
    return masked_softmax(logits, visible).astype(jnp.float32)


def contextual_positions(query, key, mask=None, *, is_causal: bool = True, scale: float | None = None,
                         query_seq_lengths=None, key_value_seq_lengths=None) -> Array:
    """``[B, N, T, S]`` float32 unclamped contextual positions ``p_ij`` (for diagnostics: what CoPE counts).

    Args: as :func:`cope_attention` (no table: positions do not depend on it); hidden entries count nothing.
    """
    query, key = jnp.asarray(query), jnp.asarray(key)
    checks.check_positive("scale", scale)
    B, T, S, N, K, H = checks.check_inputs(query, key, key, mask=mask, query_seq_lengths=query_seq_lengths,
                                           key_value_seq_lengths=key_value_seq_lengths)
    qk = scaled_logits(query, key, scale=checks.default_scale(scale, H))
    positions, _ = _positions(qk, checks.pad_to_rank4(mask), jnp.arange(T, dtype=jnp.int32),
                              is_causal=bool(is_causal), query_seq_lengths=query_seq_lengths,
                              key_value_seq_lengths=key_value_seq_lengths)
    return positions.astype(jnp.float32)


__all__ = ["DEFAULT_NPOS_MAX", "contextual_positions", "cope_attention", "cope_weights", "init_cope_params"]
