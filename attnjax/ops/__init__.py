"""Pure attention functions (jnp/lax only; this package never imports Flax).

Axis letters are defined in :mod:`attnjax.ops.axes`.
"""

from attnjax.ops.dot_product import IMPLEMENTATIONS, attention_weights, dot_product_attention
from attnjax.ops.masks import (attention_mask, causal_mask, combine_masks, padding_mask, segment_mask,
                               sliding_window_mask)

__all__ = [
    "IMPLEMENTATIONS", "attention_mask", "attention_weights", "causal_mask", "combine_masks",
    "dot_product_attention", "padding_mask", "segment_mask", "sliding_window_mask",
]
