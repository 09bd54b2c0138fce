"""Pure attention functions (jnp/lax only; this package never imports Flax).

Axis letters are defined in :mod:`attnjax.ops.axes`.
"""

from attnjax.ops.dot_product import IMPLEMENTATIONS, attention_weights, dot_product_attention
from attnjax.ops.blockwise import BlockSizes, blockwise_attention
from attnjax.ops.backends import select_implementation
from attnjax.ops.visibility import Visibility
from attnjax.ops.masks import (attention_mask, causal_mask, combine_masks, padding_mask, segment_mask,
                               sliding_window_mask)
from attnjax.ops.similarity import (additive_attention, additive_weights, cosine_attention, cosine_weights,
                                    l2_attention, l2_weights, multiplicative_attention, multiplicative_weights)
from attnjax.ops.normalizers import (sigmoid_attention, sigmoid_weights, softmax_temperature_attention,
                                     softmax_temperature_weights)
from attnjax.ops.linear import (linear_attention, linear_weights, orthogonal_random_features,
                                performer_attention, performer_weights)
from attnjax.ops.local import local_attention, local_weights
from attnjax.ops.positional import (POSITIONAL, alibi_bias, alibi_slopes, consecutive_positions, get_positional,
                                    learned_encoding, learned_table_init, randomized_positions, rope,
                                    sinusoidal_encoding, t5_relative_bias, t5_relative_bucket, t5_table_init)
from attnjax.ops.registry import ATTENTION, AttentionSpec, get_attention, get_spec, init_attention_params
from attnjax.ops.diagnostics import (attention_weights_of, head_entropy, mean_attended_distance,
                                     row_attended_distance, row_entropy)

__all__ = [
    "ATTENTION", "AttentionSpec", "BlockSizes", "IMPLEMENTATIONS", "POSITIONAL", "Visibility", "additive_attention",
    "additive_weights", "alibi_bias", "alibi_slopes", "attention_mask", "attention_weights", "attention_weights_of",
    "blockwise_attention", "causal_mask", "combine_masks", "consecutive_positions", "cosine_attention",
    "cosine_weights", "dot_product_attention", "get_attention", "get_positional", "get_spec", "head_entropy",
    "init_attention_params", "l2_attention", "l2_weights", "learned_encoding", "learned_table_init",
    "linear_attention", "linear_weights", "local_attention", "local_weights", "mean_attended_distance",
    "multiplicative_attention", "multiplicative_weights", "orthogonal_random_features", "padding_mask",
    "performer_attention", "performer_weights", "randomized_positions", "rope", "row_attended_distance",
    "row_entropy", "segment_mask", "select_implementation", "sigmoid_attention", "sigmoid_weights",
    "sinusoidal_encoding", "sliding_window_mask", "softmax_temperature_attention", "softmax_temperature_weights",
    "t5_relative_bias", "t5_relative_bucket", "t5_table_init",
]
