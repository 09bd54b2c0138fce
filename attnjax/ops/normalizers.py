"""Dot-product scores with another normalizer: sigmoid attention, softmax with a temperature.

Same layout, keywords and masking conventions as :func:`attnjax.dot_product_attention`
(queries ``[B, T, N, H]``, keys/values ``[B, S, K, H]``, weights ``[B, N, T, S]`` float32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops import checks
from attnjax.ops.primitives import scaled_logits
from attnjax.ops.similarity import check_per_head_scalar, make_variant, per_head

Array = jnp.ndarray


# --------------------------------------------------------------------------- softmax with temperature

def _check_scale(query, *, scale, **_):
    checks.check_positive("scale", scale)


def _temperature_scores(query, key, dims, *, temperature, scale):
    N = dims[3]
    check_per_head_scalar("temperature", temperature, N)
    return scaled_logits(query, key, scale=scale) / per_head(temperature, N)


softmax_temperature_attention, softmax_temperature_weights = make_variant(
    "softmax_temperature", _temperature_scores, {"temperature": 1.0, "scale": None}, check=_check_scale,
    doc="""``softmax(scale * Q K^T / temperature + bias) V``.

    ``temperature < 1`` sharpens the weights toward the arg-max key, ``> 1`` flattens them toward
    the mean. The bias is added after the division (it is not tempered).

    Args:
        query: ``[B, T, N, H]``; key, value: ``[B, S, K, H]`` (same dtype).
        bias, mask, is_causal, query_seq_lengths, key_value_seq_lengths, local_window_size: as in
            :func:`attnjax.dot_product_attention`.
        temperature: scalar or ``[N]`` > 0; a learned (traced) array is allowed.
        scale: default ``1 / sqrt(H)``.

    Returns:
        ``[B, T, N, H]`` in the query dtype; rows with no visible key are zeros.
    """)


# --------------------------------------------------------------------------- sigmoid attention

def _masked_sigmoid(logits: Array, mask: Array | None) -> Array:
    """Independent sigmoid weights; masked entries exactly 0 (no row normalization)."""
    weights = jax.nn.sigmoid(logits)
    return weights if mask is None else jnp.where(mask, weights, 0.0)


def _sigmoid_scores(query, key, dims, *, sigmoid_bias, scale):
    S, N = dims[2], dims[3]
    if sigmoid_bias is None:
        # Ramapuram et al. (2024): b = -log(n) keeps the summed weights of n keys O(1) at init, like softmax.
        b = -float(np.log(S))
    else:
        check_per_head_scalar("sigmoid_bias", sigmoid_bias, N, positive=False)
        b = sigmoid_bias
    return scaled_logits(query, key, scale=scale) + per_head(b, N)


sigmoid_attention, sigmoid_weights = make_variant(
    "sigmoid", _sigmoid_scores, {"sigmoid_bias": None, "scale": None}, check=_check_scale,
    normalize=_masked_sigmoid,
    weights_doc="``[B, N, T, S]`` float32 sigmoid weights of :func:`sigmoid_attention` (rows need not sum to 1).",
    doc="""Sigmoid attention (Ramapuram et al. 2024): ``sigmoid(scale * Q K^T + b + bias) V``.

    Each weight is an independent sigmoid, so rows do not sum to 1 and there is no competition
    between keys; ``b`` (default ``-log(S)``, ``S`` the number of keys) keeps the total weight of a
    row near that of softmax at initialization. Masked keys get weight exactly 0, so a row with no
    visible key is zeros.

    Args:
        query: ``[B, T, N, H]``; key, value: ``[B, S, K, H]`` (same dtype).
        bias, mask, is_causal, query_seq_lengths, key_value_seq_lengths, local_window_size: as in
            :func:`attnjax.dot_product_attention`.
        sigmoid_bias: scalar or ``[N]`` (learnable allowed); default ``-log(S)``.
        scale: default ``1 / sqrt(H)``.

    Returns:
        ``[B, T, N, H]`` in the query dtype.
    """)


__all__ = ["sigmoid_attention", "sigmoid_weights", "softmax_temperature_attention",
           "softmax_temperature_weights"]
