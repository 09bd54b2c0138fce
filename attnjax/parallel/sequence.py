"""Sequence parallelism for models: what a layer needs when its tokens are sharded over a mesh axis.

A sequence-parallel model runs inside ``jax.shard_map`` with the length dimension of every activation
split over one mesh axis (``axis_name``, size ``P``) and permuted into a ring layout
(:mod:`attnjax.parallel.layouts`) by the step, once, before the model. Position-wise layers (embedding,
MLP, LayerNorm, read-out, the loss) then need nothing; only two things depend on where a token sits in
the global sequence:

* self-attention, which becomes :func:`~attnjax.parallel.ring.ring_attention` (:class:`RingAttentionFn`
  wraps it in ``jax.nn.dot_product_attention``'s calling convention, the ``attention_fn`` contract of the
  attention layer);
* positional encodings, which read the *global* positions of the local tokens (:func:`local_positions`).

Only global quantities cross the ring: sequence lengths stay global ``[B]`` values, so padding masks
come out right on every shard.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from jax import lax

from attnjax.parallel.layouts import check_layout, layout_positions
from attnjax.parallel.ring import ring_attention

# ring_attention's own options, which an attention config may set (everything else is set per call).
RING_OPTIONS = ("local_window_size", "logit_softcap", "scale")
# The FlexAttention hooks, which a layer passes per call like jax.nn's keywords.
RING_HOOKS = ("mask_mod", "score_mod", "score_mod_params")


@dataclasses.dataclass(frozen=True)
class RingAttentionFn:
    """``ring_attention`` with the signature of ``jax.nn.dot_product_attention`` (a valid ``attention_fn``).

    Frozen and hashable, so equal configs give equal layers (and reuse compiled steps). Call it inside
    ``jax.shard_map`` with ``axis_name`` bound and the tokens in ``layout`` order.

    Attributes:
        axis_name: the mesh axis the sequence is sharded over.
        layout: one of :data:`~attnjax.parallel.layouts.LAYOUTS`.
        block_size: ``ring_attention``'s tile length inside a ring step.
    """

    axis_name: str
    layout: str = "zigzag"
    block_size: int = 512

    def __post_init__(self):
        check_layout(self.layout)

    def __call__(self, query: jnp.ndarray, key: jnp.ndarray, value: jnp.ndarray, bias: jnp.ndarray | None = None,
                 mask: jnp.ndarray | None = None, *, is_causal: bool = False,
                 query_seq_lengths: jnp.ndarray | None = None, key_value_seq_lengths: jnp.ndarray | None = None,
                 **options: Any) -> jnp.ndarray:
        """Local queries ``[B, T/P, N, H]``, keys/values ``[B, S/P, K, H]`` -> ``[B, T/P, N, H]``.

        Lengths are *global* ``[B]``. ``options`` may be any of :data:`RING_OPTIONS` and the hooks
        :data:`RING_HOOKS` (``score_mod``/``mask_mod`` see global positions).

        Raises:
            ValueError: a ``bias`` or ``mask`` (dense ``[.., T, S]`` arrays cannot be sharded over the
                ring: use lengths, causal or a window), or an option ring attention does not take.
        """
        for name, x in (("bias", bias), ("mask", mask)):
            if x is not None:
                raise ValueError(f"sequence-parallel attention takes no dense {name} (shape {jnp.shape(x)}): a "
                                 f"[.., T, S] array cannot be split over the ring; use lengths, is_causal or "
                                 f"local_window_size, and a positional encoding that is not a logit bias")
        unknown = sorted(set(options) - set(RING_OPTIONS) - set(RING_HOOKS))
        if unknown:
            raise ValueError(f"sequence-parallel attention does not take {unknown}; its options are {RING_OPTIONS} "
                             f"and the hooks {RING_HOOKS}")
        return ring_attention(query, key, value, axis_name=self.axis_name, is_causal=is_causal, layout=self.layout,
                              query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                              block_size=self.block_size, **options)


def axis_is_bound(axis_name: str) -> bool:
    """Whether ``axis_name`` is bound here, i.e. we are inside a ``shard_map``/``pmap`` over it."""
    try:
        lax.axis_size(axis_name)
    except NameError:
        return False
    return True


def local_positions(axis_name: str, layout: str, local_length: int) -> tuple[jnp.ndarray, int]:
    """Global positions of this shard's tokens, and the global length; call inside ``jax.shard_map``.

    Args:
        axis_name: the mesh axis the sequence is sharded over (must be bound).
        layout: the layout the tokens were permuted into.
        local_length: ``L = T / P`` tokens on this shard.

    Returns:
        ``(positions [L] int32, T)``: ``positions[j]`` is the index in the unpermuted sequence of local
        token ``j``.

    Raises:
        ValueError: ``axis_name`` not bound by an enclosing ``shard_map``.
    """
    try:
        size, index = lax.axis_size(axis_name), lax.axis_index(axis_name)
    except NameError as error:
        raise ValueError(f"a sequence-parallel model must run inside jax.shard_map with mesh axis "
                         f"{axis_name!r} bound (build the step with attnjax.train.make_train_step("
                         f"parallel='shard_map', seq_axis=...)): {error}") from None
    return layout_positions(layout, local_length, size, index), local_length * size
