"""Numerics shared by every softmax-attention path (a leaf module: it imports nothing of attnjax).

* Logits, the softmax and its statistics are computed in :func:`stat_dtype` of the inputs: float32
  for float32 and lower precisions, float64 for float64 inputs (``jax.enable_x64``). Outputs keep
  the query dtype.
* Masked logits get the large *finite* :data:`MASK_VALUE`, never ``-inf``.
* A query row whose keys are all masked returns **zeros** (``jax.nn`` returns the mean of the
  values instead), with zero, finite gradients. Its log-sum-exp (the residual) is ``-inf``, the log
  of an empty sum, consistent with the zero output: see :func:`lse_for_recompute`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Large enough to vanish under exp() next to any real logit, small enough that adding a bias or
# subtracting a row max stays finite in float32.
MASK_VALUE = float(-0.7 * np.finfo(np.float32).max)


def stat_dtype(dtype: Any) -> jnp.dtype:
    """The dtype of logits, softmax statistics and accumulators for inputs of ``dtype``."""
    return jnp.dtype(jnp.float64) if jnp.dtype(dtype) == jnp.float64 else jnp.dtype(jnp.float32)


def prescaled(query: jnp.ndarray) -> bool:
    """Whether the scale is applied to the queries before the ``Q K^T`` matmul: for full-precision
    queries it multiplies ``[.., T, H]`` instead of every ``[T, S]`` logit; lower precisions keep the
    exact multiply in :func:`stat_dtype` after the matmul, so the scale adds no rounding."""
    return query.dtype == stat_dtype(query.dtype)


def lse_for_recompute(lse: jnp.ndarray) -> jnp.ndarray:
    """The log-sum-exp a backward pass subtracts to recompute ``P = exp(S - lse)``: empty rows
    (``-inf``) become ``+inf``, so their recomputed probabilities are exactly 0 without a mask."""
    return jnp.where(lse == -jnp.inf, jnp.inf, lse)


def softcap(logits: Any, cap: float) -> Any:
    """Gemma-2's logit softcap ``cap * tanh(logits / cap)``, elementwise (the rule of ``logit_softcap`` and of
    :func:`attnjax.ops.flex.softcap_score_mod`)."""
    return cap * jnp.tanh(logits / cap)


def scaled_logits(query: jnp.ndarray, key: jnp.ndarray, *, scale: float | None,
                  logit_softcap: float | None = None) -> jnp.ndarray:
    """``scale * Q K^T`` in :func:`stat_dtype`, with keys shared across each group of query heads.

    Args:
        query: ``[B, T, N, H]``.
        key: ``[B, S, K, H]`` with ``N % K == 0``.
        scale: multiplier, default ``1 / sqrt(H)``.
        logit_softcap: if set, logits become ``cap * tanh(logits / cap)`` (Gemma-2 style).

    Returns:
        ``[B, N, T, S]`` logits.
    """
    B, T, N, H = query.shape
    K = key.shape[2]
    acc = stat_dtype(query.dtype)
    scale = 1.0 / np.sqrt(H) if scale is None else scale
    if prescaled(query):
        query = query * jnp.asarray(scale, acc)
    if K == N:  # no grouping: the 4-D contraction is ~20% faster on CPU than the grouped 5-D one
        logits = jnp.einsum("BTNH,BSNH->BNTS", query, key, preferred_element_type=acc)
    else:
        grouped = query.reshape(B, T, K, N // K, H)
        logits = jnp.einsum("BTKGH,BSKH->BKGTS", grouped, key, preferred_element_type=acc)
    logits = logits.reshape(B, N, T, key.shape[1])
    if not prescaled(query):
        logits = logits * jnp.asarray(scale, acc)
    if logit_softcap is not None:
        logits = softcap(logits, logit_softcap)
    return logits


def masked_softmax(logits: jnp.ndarray, mask: jnp.ndarray | None) -> jnp.ndarray:
    """Softmax over the last axis (in the logits' dtype); rows whose every entry is masked become zeros.

    Args:
        logits: ``[..., S]`` float32 or float64.
        mask: boolean, broadcastable to ``logits``, or None.
    """
    if mask is None:
        return jax.nn.softmax(logits, axis=-1)
    probs = jax.nn.softmax(jnp.where(mask, logits, MASK_VALUE), axis=-1)
    row_has_key = jnp.any(mask, axis=-1, keepdims=True)
    return jnp.where(row_has_key, probs, 0.0)


def masked_logsumexp(logits: jnp.ndarray, mask: jnp.ndarray | None) -> jnp.ndarray:
    """Log-sum-exp over the last axis of the visible logits; ``-inf`` for rows with no visible entry.

    Args:
        logits: ``[..., S]``; mask: boolean broadcastable to ``logits``, or None.

    Returns:
        ``[...]`` in the logits' dtype.
    """
    if mask is None:
        return jax.nn.logsumexp(logits, axis=-1)
    lse = jax.nn.logsumexp(jnp.where(mask, logits, MASK_VALUE), axis=-1)
    return jnp.where(jnp.any(mask, axis=-1), lse, -jnp.inf)


def weighted_values(probs: jnp.ndarray, value: jnp.ndarray) -> jnp.ndarray:
    """``probs [B, N, T, S]`` times ``value [B, S, K, H]`` -> ``[B, T, N, H]`` in :func:`stat_dtype` (GQA aware)."""
    B, N, T, S = probs.shape
    K, H = value.shape[2], value.shape[3]
    acc = stat_dtype(value.dtype)
    if K == N:
        return jnp.einsum("BNTS,BSNH->BTNH", probs.astype(value.dtype), value, preferred_element_type=acc)
    grouped = probs.astype(value.dtype).reshape(B, K, N // K, T, S)
    out = jnp.einsum("BKGTS,BSKH->BTKGH", grouped, value, preferred_element_type=acc)
    return out.reshape(B, T, N, H)


def dropout(probs: jnp.ndarray, rate: float, rng: Any) -> jnp.ndarray:
    """Inverted dropout on attention weights (``rate == 0``: ``probs`` unchanged)."""
    if rate == 0.0:
        return probs
    keep = jax.random.bernoulli(rng, 1.0 - rate, probs.shape)
    return jnp.where(keep, probs / (1.0 - rate), 0.0)


def repeat_kv_heads(x: jnp.ndarray, num_heads: int, axis: int = 2) -> jnp.ndarray:
    """Repeats the ``K`` key/value heads on ``axis`` to ``num_heads`` (for code with no grouped-query mode)."""
    K = x.shape[axis]
    return x if K == num_heads else jnp.repeat(x, num_heads // K, axis=axis)
