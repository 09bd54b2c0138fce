"""Local sliding-window softmax attention in ``O(T * window)`` work and memory.

Query ``i`` sees keys ``i - left .. i + right`` (and ``j <= i`` when causal). This is the blockwise
path with a window and blocks sized to it: the kernel skips every key block outside the window
(:mod:`attnjax.ops.visibility` decides which), so no ``[T, S]`` matrix exists and the work grows as
``T * (block + left + right)``. The variant exists so that models and the registry can name it; the
numerics are :func:`attnjax.dot_product_attention`'s.
"""

from __future__ import annotations

import jax.numpy as jnp

from attnjax.ops.blockwise import BlockSizes
from attnjax.ops.dot_product import attention_weights, dot_product_attention

Array = jnp.ndarray

# Queries and keys per block: near the window of the default local_window_size, so a query block
# visits about three key blocks, not the whole sequence.
LOCAL_BLOCK_SIZES = BlockSizes(block_q=64, block_k=64)


def _require_window(local_window_size):
    if local_window_size is None:
        raise ValueError("local_window_size must be an int or a (left, right) pair of ints, got None")


def local_attention(query, key, value, bias=None, mask=None, *, local_window_size: int | tuple[int, int] = 64,
                    is_causal: bool = False, scale: float | None = None, query_seq_lengths=None,
                    key_value_seq_lengths=None, block_sizes: BlockSizes = LOCAL_BLOCK_SIZES) -> Array:
    """Sliding-window softmax attention (the ``"blockwise"`` path with a window).

    Args:
        query: ``[B, T, N, H]``; key, value: ``[B, S, K, H]`` (same dtype), ``N % K == 0``.
        bias: added to the logits, broadcastable to ``[B, N, T, S]``.
        mask: boolean, ``True`` = attend, broadcastable to ``[B, N, T, S]``.
        local_window_size: ``w`` or ``(left, right)``: query ``i`` sees keys ``i - left .. i + right``.
        is_causal: additionally hide keys ``j > i``.
        scale: logit multiplier, default ``1 / sqrt(H)``.
        query_seq_lengths, key_value_seq_lengths: ``[B]`` padding lengths, as in
            :func:`attnjax.dot_product_attention`.
        block_sizes: tiles of the blockwise kernel (default 64 x 64).

    Returns:
        ``[B, T, N, H]`` in the query dtype; rows with no visible key are zeros.

    Raises:
        ValueError/TypeError: malformed shapes, dtypes, window, scale or block sizes.
    """
    _require_window(local_window_size)
    return dot_product_attention(query, key, value, bias, mask, scale=scale, is_causal=is_causal,
                                 query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                                 local_window_size=local_window_size, implementation="blockwise",
                                 block_sizes=block_sizes)


def local_weights(query, key, bias=None, mask=None, *, local_window_size: int | tuple[int, int] = 64,
                  is_causal: bool = False, scale=None, query_seq_lengths=None,
                  key_value_seq_lengths=None) -> Array:
    """``[B, N, T, S]`` float32 probabilities of :func:`local_attention` (materialized, for diagnostics)."""
    _require_window(local_window_size)
    return attention_weights(query, key, bias, mask, scale=scale, is_causal=is_causal,
                             query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                             local_window_size=local_window_size)
