"""Dot-product scores with another normalizer: sigmoid attention, softmax with a temperature.

Same layout, keywords and masking conventions as :func:`attnjax.dot_product_attention`
(queries ``[B, T, N, H]``, keys/values ``[B, S, K, H]``, weights ``[B, N, T, S]`` float32).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops import checks
from attnjax.ops.dot_product import scaled_logits
from attnjax.ops.similarity import check_per_head_scalar, per_head, run_attention

Array = jnp.ndarray


# --------------------------------------------------------------------------- softmax with temperature

def _temperature_attention(query, key, value, bias, mask, *, temperature, scale, weights_only, **masking):
    checks.check_positive("scale", scale)

    def logits_fn(q, k, dims):
        N = dims[3]
        check_per_head_scalar("temperature", temperature, N)
        return scaled_logits(q, k, scale=scale) / per_head(temperature, N)

    return run_attention(logits_fn, query, key, value, bias, mask, weights_only=weights_only, **masking)


def softmax_temperature_attention(query, key, value, bias=None, mask=None, *, temperature: Any = 1.0,
                                  scale: float | None = None, is_causal=False, query_seq_lengths=None,
                                  key_value_seq_lengths=None, local_window_size=None):
    """``softmax(scale * Q K^T / temperature + bias) V``.

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
    """
    return _temperature_attention(query, key, value, bias, mask, temperature=temperature, scale=scale,
                              weights_only=False, is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                              key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size)


def softmax_temperature_weights(query, key, bias=None, mask=None, *, temperature: Any = 1.0, scale=None,
                                is_causal=False, query_seq_lengths=None, key_value_seq_lengths=None,
                                local_window_size=None):
    """``[B, N, T, S]`` float32 probabilities of :func:`softmax_temperature_attention`."""
    return _temperature_attention(query, key, key, bias, mask, temperature=temperature, scale=scale,
                              weights_only=True, is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                              key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size)


# --------------------------------------------------------------------------- sigmoid attention

def _masked_sigmoid(logits: Array, mask: Array | None) -> Array:
    """Independent sigmoid weights; masked entries exactly 0 (no row normalization)."""
    weights = jax.nn.sigmoid(logits)
    return weights if mask is None else jnp.where(mask, weights, 0.0)


def _sigmoid_attention(query, key, value, bias, mask, *, scale, sigmoid_bias, weights_only, **masking):
    checks.check_positive("scale", scale)

    def logits_fn(q, k, dims):
        S, N = dims[2], dims[3]
        if sigmoid_bias is None:
            # Ramapuram et al. (2024): b = -log(n) keeps the summed weights of n keys O(1) at init, like softmax.
            b = -float(np.log(S))
        else:
            check_per_head_scalar("sigmoid_bias", sigmoid_bias, N, positive=False)
            b = sigmoid_bias
        return scaled_logits(q, k, scale=scale) + per_head(b, N)

    return run_attention(logits_fn, query, key, value, bias, mask, weights_only=weights_only,
                         normalize=_masked_sigmoid, **masking)


def sigmoid_attention(query, key, value, bias=None, mask=None, *, sigmoid_bias: Any = None,
                      scale: float | None = None, is_causal=False, query_seq_lengths=None,
                      key_value_seq_lengths=None, local_window_size=None):
    """Sigmoid attention (Ramapuram et al. 2024): ``sigmoid(scale * Q K^T + b + bias) V``.

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
    """
    return _sigmoid_attention(query, key, value, bias, mask, scale=scale, sigmoid_bias=sigmoid_bias,
                            weights_only=False, is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                            key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size)


def sigmoid_weights(query, key, bias=None, mask=None, *, sigmoid_bias=None, scale=None, is_causal=False,
                    query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    """``[B, N, T, S]`` float32 sigmoid weights of :func:`sigmoid_attention` (rows need not sum to 1)."""
    return _sigmoid_attention(query, key, key, bias, mask, scale=scale, sigmoid_bias=sigmoid_bias,
                            weights_only=True, is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                            key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size)


__all__ = ["sigmoid_attention", "sigmoid_weights", "softmax_temperature_attention",
           "softmax_temperature_weights"]
