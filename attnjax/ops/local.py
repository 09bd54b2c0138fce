"""Local sliding-window softmax attention in ``O(T * window)`` memory.

Query ``i`` sees keys ``i - left .. i + right`` (and ``j <= i`` when causal). Queries are cut into
blocks of ``C``; block ``b`` only needs the ``C + left + right`` keys around it, so each step of a
``lax.map`` builds a ``[B, N, C, C + left + right]`` logits tile and the full ``[T, S]`` matrix never
exists. The result equals ``dot_product_attention(..., local_window_size=(left, right))`` (the
dense reference), which is what the tests check, values and gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnjax.ops import checks
from attnjax.ops.dot_product import attention_weights, masked_softmax, scaled_logits, weighted_values

Array = jnp.ndarray


def _check(query, key, value, bias, mask, window_size, scale, query_seq_lengths, key_value_seq_lengths,
           block_size):
    dims = checks.check_inputs(query, key, value, bias=bias, mask=mask, query_seq_lengths=query_seq_lengths,
                               key_value_seq_lengths=key_value_seq_lengths)
    checks.check_positive("scale", scale)
    if window_size is None:
        raise ValueError("window_size must be an int or a (left, right) pair of ints, got None")
    window = checks.normalize_window(window_size, name="window_size")
    checks.check_positive_int("block_size", block_size)
    return dims, window


def _slice_tile(x, start_t, C, start_s, W):
    """Slices a ``[B|1, N|1, T|1, S|1]`` (already padded) array to its ``[.., C|1, W|1]`` tile."""
    if x.shape[2] != 1:
        x = jax.lax.dynamic_slice_in_dim(x, start_t, C, axis=2)
    if x.shape[3] != 1:
        x = jax.lax.dynamic_slice_in_dim(x, start_s, W, axis=3)
    return x


def local_attention(query, key, value, bias=None, mask=None, *, window_size: int | tuple[int, int] = 64,
                    is_causal: bool = False, scale: float | None = None, query_seq_lengths=None,
                    key_value_seq_lengths=None, block_size: int = 64) -> Array:
    """Sliding-window softmax attention, blocked so memory is ``O(T * (block + window))``.

    Args:
        query: ``[B, T, N, H]``; key, value: ``[B, S, K, H]`` (same dtype), ``N % K == 0``.
        bias: added to the logits, broadcastable to ``[B, N, T, S]``.
        mask: boolean, ``True`` = attend, broadcastable to ``[B, N, T, S]``.
        window_size: ``w`` or ``(left, right)``: query ``i`` sees keys ``i - left .. i + right``.
        is_causal: additionally hide keys ``j > i``.
        scale: logit multiplier, default ``1 / sqrt(H)``.
        query_seq_lengths, key_value_seq_lengths: ``[B]`` padding lengths, as in
            :func:`attnjax.dot_product_attention`.
        block_size: queries per tile.

    Returns:
        ``[B, T, N, H]`` in the query dtype; rows with no visible key are zeros.

    Raises:
        ValueError/TypeError: malformed shapes, dtypes, window, scale or block size.
    """
    query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)
    bias = None if bias is None else jnp.asarray(bias).astype(jnp.float32)
    mask = None if mask is None else jnp.asarray(mask)
    (B, T, S, N, K, H), (left, right) = _check(query, key, value, bias, mask, window_size, scale,
                                               query_seq_lengths, key_value_seq_lengths, block_size)
    if is_causal:
        right = 0
    C = min(int(block_size), T)
    n_blocks = -(-T // C)
    T_pad = n_blocks * C
    W = C + left + right
    # Keys are padded by `left` in front and enough behind so that every tile slice is in range.
    S_pad = max(S + left, T_pad + left + right)

    def pad_t(x, axis):
        return jnp.pad(x, [(0, T_pad - x.shape[axis]) if a == axis else (0, 0) for a in range(x.ndim)])

    def pad_s(x, axis):
        return jnp.pad(x, [(left, S_pad - left - x.shape[axis]) if a == axis else (0, 0) for a in range(x.ndim)])

    q_pad = pad_t(query, 1)
    k_pad, v_pad = pad_s(key, 1), pad_s(value, 1)
    if bias is not None:
        bias = jnp.broadcast_to(bias, bias.shape)
        bias = pad_t(bias, 2) if bias.shape[2] != 1 else bias
        bias = pad_s(bias, 3) if bias.shape[3] != 1 else bias
    if mask is not None:
        mask = pad_t(mask, 2) if mask.shape[2] != 1 else mask
        mask = pad_s(mask, 3) if mask.shape[3] != 1 else mask
    q_len = None if query_seq_lengths is None else jnp.asarray(query_seq_lengths)
    kv_len = None if key_value_seq_lengths is None else jnp.asarray(key_value_seq_lengths)

    def tile(block):
        t0 = block * C
        q_blk = jax.lax.dynamic_slice_in_dim(q_pad, t0, C, axis=1)
        k_blk = jax.lax.dynamic_slice_in_dim(k_pad, t0, W, axis=1)
        v_blk = jax.lax.dynamic_slice_in_dim(v_pad, t0, W, axis=1)
        logits = scaled_logits(q_blk, k_blk, scale=scale)  # [B, N, C, W]
        if bias is not None:
            logits = logits + _slice_tile(bias, t0, C, t0, W)
        q_pos = t0 + jnp.arange(C)
        k_pos = t0 - left + jnp.arange(W)  # true key positions of the tile's columns
        rel = k_pos[None, :] - q_pos[:, None]
        keep = (k_pos[None, :] >= 0) & (k_pos[None, :] < S) & (rel >= -left) & (rel <= right)
        keep = keep[None, None]
        if mask is not None:
            keep = keep & _slice_tile(mask, t0, C, t0, W)
        if q_len is not None:
            keep = keep & (q_pos[None, :] < q_len[:, None])[:, None, :, None]
        if kv_len is not None:
            keep = keep & (k_pos[None, :] < kv_len[:, None])[:, None, None, :]
        probs = masked_softmax(logits, keep)
        return weighted_values(probs, v_blk)  # [B, C, N, H] float32

    out = jax.lax.map(tile, jnp.arange(n_blocks))  # [n_blocks, B, C, N, H]
    out = jnp.moveaxis(out, 0, 1).reshape(B, T_pad, N, value.shape[-1])[:, :T]
    return out.astype(query.dtype)


def local_weights(query, key, bias=None, mask=None, *, window_size: int | tuple[int, int] = 64,
                  is_causal: bool = False, scale=None, query_seq_lengths=None,
                  key_value_seq_lengths=None) -> Array:
    """``[B, N, T, S]`` float32 probabilities of :func:`local_attention` (materialized, for diagnostics)."""
    query, key = jnp.asarray(query), jnp.asarray(key)
    _check(query, key, key, bias, mask, window_size, scale, query_seq_lengths, key_value_seq_lengths, 1)
    return attention_weights(query, key, bias, mask, scale=scale, is_causal=is_causal,
                             query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                             local_window_size=window_size)
