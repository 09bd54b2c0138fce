"""Boolean attention masks. ``True`` means *may attend*, as in ``jax.nn.dot_product_attention``.

Causal, window and length masks come from the one rule in :mod:`attnjax.ops.visibility`, which the
blocked paths apply one block of positions at a time.
Shapes broadcast to ``[B, N, T, S]``.
"""

from __future__ import annotations

import jax.numpy as jnp

from attnjax.ops.checks import Window, normalize_window
from attnjax.ops.visibility import Visibility


def position_mask(q_pos: jnp.ndarray, k_pos: jnp.ndarray, *, is_causal: bool = False,
                  window: Window | None = None) -> jnp.ndarray | None:
    """``[T, S]`` causal and sliding-window mask of queries at ``q_pos [T]`` and keys at ``k_pos [S]``
    (the :class:`~attnjax.ops.visibility.Visibility` rule), or None if neither constraint is asked for."""
    visible = Visibility(is_causal, window).mask(q_pos, k_pos)
    return None if visible is None else visible[0]


def causal_mask(T: int, S: int) -> jnp.ndarray:
    """``[1, 1, T, S]`` lower-triangular mask, aligned at the top-left as in ``jax.nn``."""
    return position_mask(jnp.arange(T), jnp.arange(S), is_causal=True)[None, None]


def sliding_window_mask(T: int, S: int, local_window_size: int | tuple[int, int]) -> jnp.ndarray:
    """``[1, 1, T, S]`` mask keeping keys ``i - left <= j <= i + right`` (``local_window_size = (left, right)``)."""
    return position_mask(jnp.arange(T), jnp.arange(S), window=normalize_window(local_window_size))[None, None]


def padding_mask(T: int, S: int, query_seq_lengths: jnp.ndarray | None = None,
                 key_value_seq_lengths: jnp.ndarray | None = None) -> jnp.ndarray:
    """``[B, 1, T, S]`` mask hiding queries ``>= query_seq_lengths`` and keys ``>= key_value_seq_lengths``.

    Args:
        T, S: query and key lengths.
        query_seq_lengths: ``[B]`` valid query counts, or None (all valid).
        key_value_seq_lengths: ``[B]`` valid key counts, or None (all valid).
    """
    visible = Visibility().mask(jnp.arange(T), jnp.arange(S), query_seq_lengths=query_seq_lengths,
                                key_value_seq_lengths=key_value_seq_lengths)
    return (jnp.ones((1, T, S), bool) if visible is None else jnp.broadcast_to(
        visible, (visible.shape[0], T, S)))[:, None]


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
    """Combines a user mask with the causal, window and length rule of :mod:`attnjax.ops.visibility`.

    Returns:
        A boolean array broadcastable to ``[B, N, T, S]`` (rank 4), or None when nothing is masked.
    """
    visible = Visibility(is_causal, window).mask(jnp.arange(T), jnp.arange(S), query_seq_lengths=query_seq_lengths,
                                                 key_value_seq_lengths=key_value_seq_lengths)
    return combine_masks(mask, None if visible is None else visible[:, None])
