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
from attnjax.ops.dot_product import scaled_logits, weighted_values
from attnjax.ops.masks import attention_mask
from attnjax.ops.similarity import (_as_arrays, check_common, check_per_head_scalar, per_head,
                                    probs_from_logits)

Array = jnp.ndarray


# --------------------------------------------------------------------------- softmax with temperature

def _temperature_probs(query, key, bias, mask, *, temperature, scale, is_causal, query_seq_lengths,
                       key_value_seq_lengths, local_window_size, value=None):
    query, key, bias, mask = _as_arrays(query, key, bias, mask)
    value = key if value is None else jnp.asarray(value)
    (B, T, S, N, K, H), window = check_common(
        query, key, value, bias, mask, query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size)
    check_per_head_scalar("temperature", temperature, N)
    checks.check_positive("scale", scale)
    logits = scaled_logits(query, key, scale=scale) / per_head(temperature, N)
    return probs_from_logits(logits, bias, mask, is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                             key_value_seq_lengths=key_value_seq_lengths, window=window)


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
    probs = _temperature_probs(query, key, bias, mask, temperature=temperature, scale=scale,
                               is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                               key_value_seq_lengths=key_value_seq_lengths,
                               local_window_size=local_window_size, value=value)
    return weighted_values(probs, jnp.asarray(value)).astype(jnp.result_type(query))


def softmax_temperature_weights(query, key, bias=None, mask=None, *, temperature: Any = 1.0, scale=None,
                                is_causal=False, query_seq_lengths=None, key_value_seq_lengths=None,
                                local_window_size=None):
    """``[B, N, T, S]`` float32 probabilities of :func:`softmax_temperature_attention`."""
    return _temperature_probs(query, key, bias, mask, temperature=temperature, scale=scale,
                              is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                              key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size)


# --------------------------------------------------------------------------- sigmoid attention

def _sigmoid_weights(query, key, bias, mask, *, scale, sigmoid_bias, is_causal, query_seq_lengths,
                     key_value_seq_lengths, local_window_size, value=None):
    query, key, bias, mask = _as_arrays(query, key, bias, mask)
    value = key if value is None else jnp.asarray(value)
    (B, T, S, N, K, H), window = check_common(
        query, key, value, bias, mask, query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size)
    checks.check_positive("scale", scale)
    if sigmoid_bias is None:
        # Ramapuram et al. (2024): b = -log(n) keeps the summed weights of n keys O(1) at init, like softmax.
        sigmoid_bias = -float(np.log(S))
    else:
        check_per_head_scalar("sigmoid_bias", sigmoid_bias, N, positive=False)
    logits = scaled_logits(query, key, scale=scale) + per_head(sigmoid_bias, N)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    weights = jax.nn.sigmoid(logits)
    full_mask = attention_mask(T, S, mask=mask, is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                               key_value_seq_lengths=key_value_seq_lengths, window=window)
    if full_mask is not None:
        weights = jnp.where(full_mask, weights, 0.0)
    return weights


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
    weights = _sigmoid_weights(query, key, bias, mask, scale=scale, sigmoid_bias=sigmoid_bias,
                               is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                               key_value_seq_lengths=key_value_seq_lengths,
                               local_window_size=local_window_size, value=value)
    return weighted_values(weights, jnp.asarray(value)).astype(jnp.result_type(query))


def sigmoid_weights(query, key, bias=None, mask=None, *, sigmoid_bias=None, scale=None, is_causal=False,
                    query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    """``[B, N, T, S]`` float32 sigmoid weights of :func:`sigmoid_attention` (rows need not sum to 1)."""
    return _sigmoid_weights(query, key, bias, mask, scale=scale, sigmoid_bias=sigmoid_bias,
                            is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                            key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size)


__all__ = ["sigmoid_attention", "sigmoid_weights", "softmax_temperature_attention",
           "softmax_temperature_weights"]
