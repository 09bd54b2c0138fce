"""Pure attention functions (jnp/lax only; this package never imports Flax).

Axis letters are defined in :mod:`attnjax.ops.axes`.
"""

from attnjax.ops.dot_product import IMPLEMENTATIONS, attention_weights, dot_product_attention
# Imported for their side effect too: each registers its implementations in IMPLEMENTATIONS.
from attnjax.ops.blockwise import BlockSizes, blockwise_attention
from attnjax.ops.backends import select_implementation
from attnjax.ops.masks import (attention_mask, causal_mask, combine_masks, padding_mask, segment_mask,
                               sliding_window_mask)

__all__ = [
    "BlockSizes", "IMPLEMENTATIONS", "attention_mask", "attention_weights", "blockwise_attention", "causal_mask",
    "combine_masks", "dot_product_attention", "padding_mask", "segment_mask", "select_implementation",
    "sliding_window_mask",
]
