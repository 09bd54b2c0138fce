"""Boolean attention masks. ``True`` means *may attend*, as in ``jax.nn.dot_product_attention``.

Causal, window and length masks come from the one rule in :mod:`attnjax.ops.visibility`, which the
blocked paths apply one block of positions at a time.
Shapes broadcast to ``[B, N, T, S]``.

The same masks as ``mask_mod`` hooks (:mod:`attnjax.ops.flex`), evaluated per tile and never materialized:
:func:`causal_mask_mod`, :func:`window_mask_mod` and :func:`segment_mask_mod`, each from the rule its
materialized form uses. A ``mask_mod`` lets the blockwise kernel skip the tiles it hides entirely (block
sparsity: a document mask runs its diagonal tiles only) and composes with other hooks; the keywords
``is_causal``/``local_window_size`` are still the cheaper way to ask for causality or a window (their tile
ranges come from the rule in closed form, with no per-tile evaluation).
"""

from __future__ import annotations

import dataclasses
from typing import Any

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
    return same_segment(query_segment_ids[:, :, None], key_segment_ids[:, None, :])[:, None]


def same_segment(query_segment_id, key_segment_id) -> Any:
    """The segment rule, elementwise: a query may see a key of its own segment (packed sequences)."""
    return query_segment_id == key_segment_id


@dataclasses.dataclass(frozen=True)
class VisibilityMaskMod:
    """A ``mask_mod`` of :meth:`Visibility.pair_visible <attnjax.ops.visibility.Visibility.pair_visible>`:
    causality and a window from the rule every path uses (hashable: equal rules share jit caches)."""

    visibility: Visibility

    def __call__(self, batch, head, q_idx, kv_idx):
        visible = self.visibility.pair_visible(q_idx, kv_idx)
        return jnp.ones(jnp.shape(q_idx), bool) if visible is None else visible


def causal_mask_mod() -> VisibilityMaskMod:
    """``is_causal=True`` as a ``mask_mod`` (query ``i`` sees keys ``j <= i``); the blockwise kernel visits the
    same tiles with it as with ``is_causal``."""
    return VisibilityMaskMod(Visibility(True))


def window_mask_mod(local_window_size: int | tuple[int, int], *, is_causal: bool = False) -> VisibilityMaskMod:
    """``local_window_size`` (and ``is_causal``) as a ``mask_mod``: query ``i`` sees keys
    ``i - left .. i + right`` (the rule of :func:`sliding_window_mask`).

    Raises:
        ValueError: a malformed window (as ``local_window_size`` of ``dot_product_attention``).
    """
    return VisibilityMaskMod(Visibility(bool(is_causal), normalize_window(local_window_size)))


def segment_mask_mod(query_segment_ids, key_segment_ids=None):
    """``query_segment_ids``/``key_segment_ids`` as a ``mask_mod``: a query sees only keys of its own segment
    (the rule of :func:`segment_mask`, read per logit from the closed-over ids).

    As a ``mask_mod`` the blockwise kernel skips every tile whose queries and keys share no segment (packed
    documents run only their diagonal tiles); the ``query_segment_ids`` keyword compares ids per tile too but
    visits every tile.

    Args:
        query_segment_ids: ``[B, T]`` integer ids.
        key_segment_ids: ``[B, S]`` integer ids; default ``query_segment_ids`` (self-attention).

    Returns:
        ``mask_mod(batch, head, q_idx, kv_idx) -> bool``.

    Raises:
        ValueError, TypeError: ids that are not integer ``[B, L]`` arrays with one ``B``.
    """
    q_ids = jnp.asarray(query_segment_ids)
    k_ids = q_ids if key_segment_ids is None else jnp.asarray(key_segment_ids)
    for name, ids in (("query_segment_ids", q_ids), ("key_segment_ids", k_ids)):
        if ids.ndim != 2:
            raise ValueError(f"{name} must have shape [B, L], got {tuple(ids.shape)}")
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise TypeError(f"{name} must be an integer array, got dtype {ids.dtype}")
    if q_ids.shape[0] != k_ids.shape[0]:
        raise ValueError(f"query_segment_ids and key_segment_ids must have one batch size B, got "
                         f"{tuple(q_ids.shape)} and {tuple(k_ids.shape)}")

    def mask_mod(batch, head, q_idx, kv_idx):
        return same_segment(q_ids[batch, q_idx], k_ids[batch, kv_idx])

    return mask_mod


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
