"""Pure attention functions (jnp/lax only; this package never imports Flax).

Axis letters are defined in :mod:`attnjax.ops.axes`. The attention variants are reached by name through
:data:`ATTENTION` (:func:`get_attention`) or from their own modules (:mod:`attnjax.ops.similarity`,
:mod:`attnjax.ops.normalizers`, :mod:`attnjax.ops.linear`, :mod:`attnjax.ops.local`, and the mechanisms built on
the ``score_mod`` hook: :mod:`attnjax.ops.fire`, :mod:`attnjax.ops.scalable_softmax`,
:mod:`attnjax.ops.forgetting`; and those with their own computation, query tile by query tile:
:mod:`attnjax.ops.stick_breaking`, :mod:`attnjax.ops.cope`); masks are in
:mod:`attnjax.ops.masks`, diagnostics in :mod:`attnjax.ops.diagnostics`. The causal depthwise convolutions of
the attention-free mixers (direct and FFT) are in :mod:`attnjax.ops.convolution`.
"""

from attnjax.ops import diagnostics  # noqa: F401 - loaded so attnjax.ops.diagnostics is there, as the README says
from attnjax.ops.dot_product import IMPLEMENTATIONS, attention_weights, dot_product_attention
from attnjax.ops.blockwise import BlockSizes
from attnjax.ops.backends import select_implementation
from attnjax.ops.visibility import Visibility
from attnjax.ops.flex import ScoreMod, softcap_score_mod
from attnjax.ops.masks import (causal_mask_mod, combine_masks, segment_mask, segment_mask_mod,
                               window_mask_mod)
from attnjax.ops.positional import (POSITIONAL, alibi_bias, alibi_score_mod, alibi_slopes, get_positional,
                                    learned_encoding, learned_table_init, randomized_positions, rope,
                                    sinusoidal_encoding, t5_relative_bias, t5_score_mod, t5_table_init)
from attnjax.ops.registry import ATTENTION, AttentionSpec, get_attention, get_spec
from attnjax.ops.attention_config import AttentionConfig

__all__ = [
    "ScoreMod", "alibi_score_mod", "causal_mask_mod", "segment_mask_mod", "softcap_score_mod", "t5_score_mod",
    "window_mask_mod",
    "ATTENTION", "AttentionConfig", "AttentionSpec", "BlockSizes", "IMPLEMENTATIONS", "POSITIONAL", "Visibility",
    "alibi_bias", "alibi_slopes", "attention_weights", "combine_masks", "dot_product_attention", "get_attention",
    "get_positional",
    "get_spec", "learned_encoding", "learned_table_init", "randomized_positions", "rope", "segment_mask",
    "select_implementation", "sinusoidal_encoding", "t5_relative_bias", "t5_table_init",
]
