"""Boolean attention masks. ``True`` means *may attend*, as in ``jax.nn.dot_product_attention``.

Every mask is built from query and key *positions*, so the dense path (all positions at once) and
the blockwise path (one block of positions at a time) share one definition.
Shapes broadcast to ``[B, N, T, S]``.
"""

from __future__ import annotations

import jax.numpy as jnp

from attnjax.ops.checks import Window, normalize_window


def position_mask(q_pos: jnp.ndarray, k_pos: jnp.ndarray, *, is_causal: bool = False,
                  window: Window | None = None) -> jnp.ndarray | None:
    """Causal and sliding-window mask from positions.

    Args:
        q_pos: ``[T]`` integer query positions.
        k_pos: ``[S]`` integer key positions.
        is_causal: key ``j`` is visible to query ``i`` only if ``j <= i``.
        window: ``(left, right)``: key ``j`` is visible only if ``i - left <= j <= i + right``.

    Returns:
        ``[T, S]`` boolean mask, or None if neither constraint is asked for.
    """
    if not is_causal and window is None:
        return None
    q = q_pos[:, None]
    k = k_pos[None, :]
    allowed = jnp.ones((q_pos.shape[0], k_pos.shape[0]), dtype=bool)
    if is_causal:
        allowed &= k <= q
    if window is not None:
        left, right = window
        allowed &= (k >= q - left) & (k <= q + right)
    return allowed


def causal_mask(T: int, S: int) -> jnp.ndarray:
    """``[1, 1, T, S]`` lower-triangular mask, aligned at the top-left as in ``jax.nn``."""
    return position_mask(jnp.arange(T), jnp.arange(S), is_causal=True)[None, None]


def sliding_window_mask(T: int, S: int, window: int | tuple[int, int]) -> jnp.ndarray:
    """``[1, 1, T, S]`` mask keeping keys ``i - left <= j <= i + right``."""
    return position_mask(jnp.arange(T), jnp.arange(S), window=normalize_window(window))[None, None]


def padding_mask(T: int, S: int, query_seq_lengths: jnp.ndarray | None = None,
                 key_value_seq_lengths: jnp.ndarray | None = None) -> jnp.ndarray:
    """``[B, 1, T, S]`` mask hiding queries ``>= query_seq_lengths`` and keys ``>= key_value_seq_lengths``.

    Args:
        T, S: query and key lengths.
        query_seq_lengths: ``[B]`` valid query counts, or None (all valid).
        key_value_seq_lengths: ``[B]`` valid key counts, or None (all valid).
    """
    q_ok = jnp.ones((1, T), bool) if query_seq_lengths is None else (
        jnp.arange(T)[None, :] < jnp.asarray(query_seq_lengths)[:, None])
    k_ok = jnp.ones((1, S), bool) if key_value_seq_lengths is None else (
        jnp.arange(S)[None, :] < jnp.asarray(key_value_seq_lengths)[:, None])
    return (q_ok[:, :, None] & k_ok[:, None, :])[:, None]


def segment_mask(query_segment_ids: jnp.ndarray, key_segment_ids: jnp.ndarray | None = None) -> jnp.ndarray:
    """``[B, 1, T, S]`` mask allowing attention only within equal segment ids (packed sequences).

    Args:
        query_segment_ids: ``[B, T]`` integer ids.
        key_segment_ids: ``[B, S]`` integer ids; defaults to ``query_segment_ids`` (self-attention).
    """
    if key_segment_ids is None:
        key_segment_ids = query_segment_ids
    return (query_segment_ids[:, :, None] == key_segment_ids[:, None, :])[:, None]


def combine_masks(*masks: jnp.ndarray | None) -> jnp.ndarray | None:
    """Logical AND of the given masks (None entries are skipped); None if all are None."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = jnp.logical_and(out, m)
    return out


def attention_mask(T: int, S: int, *, mask: jnp.ndarray | None = None, is_causal: bool = False,
                   query_seq_lengths: jnp.ndarray | None = None,
                   key_value_seq_lengths: jnp.ndarray | None = None,
                   window: Window | None = None) -> jnp.ndarray | None:
    """Combines a user mask with causal, window and padding constraints.

    Returns:
        A boolean array broadcastable to ``[B, N, T, S]`` (rank 4), or None when nothing is masked.
    """
    structural = position_mask(jnp.arange(T), jnp.arange(S), is_causal=is_causal, window=window)
    padding = None
    if query_seq_lengths is not None or key_value_seq_lengths is not None:
        padding = padding_mask(T, S, query_seq_lengths, key_value_seq_lengths)
    return combine_masks(mask, None if structural is None else structural[None, None], padding)
