"""Softmax attention with other score functions: cosine, negative squared L2, additive, multiplicative.

Every variant here is ``softmax(score(Q, K) + bias) V`` and differs from
:func:`attnjax.dot_product_attention` only in ``score``. They share its layout (queries
``[B, T, N, H]``, keys/values ``[B, S, K, H]``, ``N % K == 0`` for grouped-query attention), its
mask/causal/padding/window keywords and its numerics (float32 softmax, finite mask value, fully
masked rows return zeros with zero gradient). Parameters (temperatures, projection matrices) are
passed in explicitly: ops hold no state, a Flax module owns them.

Each ``*_attention`` function has a ``*_weights`` twin returning the ``[B, N, T, S]`` float32
probabilities, for diagnostics.

Args common to every variant ("see the module docstring" below):
    query: ``[B, T, N, H]`` floating; key: ``[B, S, K, H]``; value: ``[B, S, K, H]``, same dtype.
    bias: added to the scores, broadcastable to ``[B, N, T, S]``.
    mask: boolean, ``True`` = attend, broadcastable to ``[B, N, T, S]``.
    is_causal, query_seq_lengths, key_value_seq_lengths, local_window_size: as in
        :func:`attnjax.dot_product_attention`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops import checks
from attnjax.ops.dot_product import masked_softmax, scaled_logits, weighted_values
from attnjax.ops.masks import attention_mask

Array = jnp.ndarray


# --------------------------------------------------------------------------- shared machinery

def is_traced(x: Any) -> bool:
    """True for values only known at run time (inside jit/grad), whose contents cannot be checked."""
    return isinstance(x, jax.core.Tracer)


def check_per_head_scalar(name: str, x: Any, num_heads: int, *, positive: bool = True) -> None:
    """Checks a scalar or ``[N]`` floating parameter (a temperature or scale that may be learned).

    Concrete values must be finite (and ``> 0`` with ``positive``); traced values are only
    shape-checked because their contents are unknown until run time.
    """
    if x is None:
        raise ValueError(f"{name} must be a number or an array of shape () or [N] = ({num_heads},), got None")
    shape = tuple(np.shape(x))
    if shape not in ((), (num_heads,)):
        raise ValueError(f"{name} must have shape () or [N] = ({num_heads},), got shape {shape}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating) and not jnp.issubdtype(
            jnp.result_type(x), jnp.integer):
        raise TypeError(f"{name} must be a real number or floating array, got dtype {jnp.result_type(x)}")
    if is_traced(x):
        return
    values = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(values)) or (positive and np.any(values <= 0)):
        raise ValueError(f"{name} must be finite{' and > 0' if positive else ''}, got {x!r}")


def per_head(x: Any, num_heads: int) -> Array:
    """A scalar or ``[N]`` value as float32 broadcastable to ``[B, N, T, S]``."""
    x = jnp.asarray(x, jnp.float32)
    return x if x.ndim == 0 else x.reshape(1, num_heads, 1, 1)


def run_attention(logits_fn: Callable[..., Array], query, key, value, bias, mask, *, is_causal,
                  query_seq_lengths, key_value_seq_lengths, local_window_size, weights_only: bool,
                  normalize: Callable[[Array, Array | None], Array] = masked_softmax):
    """The pipeline every score function here shares: check, score, bias, mask, normalize, weight values.

    Args:
        logits_fn: ``(query, key, (B, T, S, N, K, H)) -> [B, N, T, S]`` float32 scores; it may check
            its own parameters (it sees the checked dimensions).
        value: ``[B, S, K, Hv]``; pass ``key`` again when ``weights_only``.
        normalize: ``(logits, mask_or_None) -> weights``; masked entries must come out exactly 0.
        other arguments: as in :func:`attnjax.dot_product_attention`.

    Returns:
        ``[B, N, T, S]`` float32 weights if ``weights_only``, else ``[B, T, N, Hv]`` in the query dtype.
    """
    query, key, value, bias, mask = (None if x is None else jnp.asarray(x) for x in (query, key, value, bias, mask))
    dims = checks.check_inputs(query, key, value, bias=bias, mask=mask, query_seq_lengths=query_seq_lengths,
                               key_value_seq_lengths=key_value_seq_lengths)
    window = checks.normalize_window(local_window_size)
    logits = logits_fn(query, key, dims)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    full_mask = attention_mask(dims[1], dims[2], mask=mask, is_causal=is_causal,
                               query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                               window=window)
    weights = normalize(logits, full_mask)
    if weights_only:
        return weights
    return weighted_values(weights, value).astype(query.dtype)


def _repeat_kv_heads(x: Array, num_heads: int) -> Array:
    """``[B, K, ...]`` -> ``[B, N, ...]``: each key/value head serves ``N // K`` query heads."""
    return jnp.repeat(x, num_heads // x.shape[1], axis=1)


# --------------------------------------------------------------------------- score functions

def cosine_logits(query: Array, key: Array, temperature: Any = 0.1, *, eps: float = 1e-6) -> Array:
    """``cos(q_i, k_j) / temperature``, ``[B, N, T, S]`` float32.

    Args:
        query: ``[B, T, N, H]``.
        key: ``[B, S, K, H]``.
        temperature: scalar or ``[N]``; may be a learned (traced) array.
        eps: added to the norms so that an all-zero vector has cosine 0, not NaN.
    """
    N = query.shape[2]
    qn = query.astype(jnp.float32)
    kn = key.astype(jnp.float32)
    # sqrt(sum x^2 + eps^2) instead of ||x|| + eps keeps the gradient finite at x = 0.
    qn = qn / jnp.sqrt(jnp.sum(qn * qn, axis=-1, keepdims=True) + eps * eps)
    kn = kn / jnp.sqrt(jnp.sum(kn * kn, axis=-1, keepdims=True) + eps * eps)
    return scaled_logits(qn, kn, scale=1.0) / per_head(temperature, N)


def l2_logits(query: Array, key: Array, scale: float | None = None) -> Array:
    """``-scale * ||q_i - k_j||^2``, ``[B, N, T, S]`` float32 (default ``scale = 1 / sqrt(H)``).

    Expanded as ``2 q.k - |q|^2 - |k|^2`` so that no ``[B, N, T, S, H]`` difference tensor is built;
    the result is clamped at distance ``>= 0`` against rounding.
    """
    B, T, N, H = query.shape
    scale = checks.default_scale(scale, H)
    q32, k32 = query.astype(jnp.float32), key.astype(jnp.float32)
    qk = scaled_logits(q32, k32, scale=1.0)
    q_sq = jnp.einsum("BTNH,BTNH->BNT", q32, q32)[..., None]
    k_sq = _repeat_kv_heads(jnp.einsum("BSKH,BSKH->BKS", k32, k32), N)[:, :, None, :]
    sq_dist = jnp.maximum(q_sq + k_sq - 2.0 * qk, 0.0)
    return -jnp.float32(scale) * sq_dist


def additive_logits(query: Array, key: Array, w_query: Array, w_key: Array, v_score: Array) -> Array:
    """Bahdanau scores ``v^T tanh(W_q q_i + W_k k_j)``, ``[B, N, T, S]`` float32.

    Builds a ``[B, T, S, N, A]`` tensor: additive attention costs ``A`` times the memory of the
    dot-product logits, which is inherent to the formula.

    Args:
        query: ``[B, T, N, H]``; key: ``[B, S, K, H]``.
        w_query: ``[H, A]``, w_key: ``[H, A]``, v_score: ``[A]`` (shared by all heads).
    """
    B, T, N, H = query.shape
    S, K = key.shape[1], key.shape[2]
    qa = jnp.einsum("BTNH,HA->BTNA", query.astype(jnp.float32), jnp.asarray(w_query, jnp.float32))
    ka = jnp.einsum("BSKH,HA->BSKA", key.astype(jnp.float32), jnp.asarray(w_key, jnp.float32))
    qa = qa.reshape(B, T, K, N // K, -1)
    hidden = jnp.tanh(qa[:, :, None] + ka[:, None, :, :, None, :])  # [B, T, S, K, G, A]
    scores = jnp.einsum("BTSKGA,A->BKGTS", hidden, jnp.asarray(v_score, jnp.float32))
    return scores.reshape(B, N, T, S)


def multiplicative_logits(query: Array, key: Array, weight: Array, scale: float | None = None) -> Array:
    """Luong "general" scores ``scale * q_i W k_j^T``, ``[B, N, T, S]`` float32.

    Args:
        query: ``[B, T, N, H]``; key: ``[B, S, K, H]``.
        weight: ``[H, H]`` shared by all heads.
        scale: default ``1 / sqrt(H)``; Luong et al. use ``1.0``.
    """
    qw = jnp.einsum("BTNH,HI->BTNI", query.astype(jnp.float32), jnp.asarray(weight, jnp.float32))
    return scaled_logits(qw, key.astype(jnp.float32), scale=scale)


# --------------------------------------------------------------------------- parameter checks

def _check_matrix(name: str, x: Any, shape: tuple[int | None, ...], letters: str) -> tuple[int, ...]:
    if x is None:
        raise ValueError(f"{name} is required, expected an array of shape [{letters}]")
    actual = tuple(np.shape(x))
    if len(actual) != len(shape) or any(s is not None and s != a for s, a in zip(shape, actual)):
        want = tuple("?" if s is None else s for s in shape)
        raise ValueError(f"{name} must have shape [{letters}] = {want}, got {actual}")
    checks.check_floating(name, x)
    return actual


# --------------------------------------------------------------------------- public variants



def _cosine_scores(temperature, eps):
    def scores(q, k, dims):
        # Checked here, once the number of query heads N = dims[3] is known to be valid.
        check_per_head_scalar("temperature", temperature, dims[3])
        return cosine_logits(q, k, temperature, eps=eps)

    return scores


def cosine_attention(query, key, value, bias=None, mask=None, *, temperature: Any = 0.1, is_causal=False,
                     query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None,
                     eps: float = 1e-6):
    """Cosine-similarity attention: ``softmax(cos(q_i, k_j) / temperature + bias) V``.

    Scores are bounded in ``[-1/temperature, 1/temperature]``, so no logit can blow up (the point of
    QK-normalization). A fixed temperature is a Python float; a learned one is a scalar or ``[N]``
    array owned by the caller (keep it positive, e.g. ``exp`` of a free parameter).

    Args: see the module docstring; ``temperature`` scalar or ``[N]`` > 0; ``eps`` norm floor.

    Returns:
        ``[B, T, N, H]`` in the query dtype; rows with no visible key are zeros.

    Raises:
        ValueError/TypeError: malformed shapes, dtypes or temperature.
    """
    checks.check_positive("eps", eps)
    return run_attention(_cosine_scores(temperature, eps), query, key, value, bias, mask,
                         is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                         key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size,
                         weights_only=False)


def cosine_weights(query, key, bias=None, mask=None, *, temperature: Any = 0.1, is_causal=False,
                   query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None, eps=1e-6):
    """``[B, N, T, S]`` float32 probabilities of :func:`cosine_attention` (same arguments, no value)."""
    checks.check_positive("eps", eps)
    return run_attention(_cosine_scores(temperature, eps), query, key, key, bias, mask,
                         is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                         key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size,
                         weights_only=True)


def l2_attention(query, key, value, bias=None, mask=None, *, scale: float | None = None, is_causal=False,
                 query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    """L2 attention (Kim et al. 2021): ``softmax(-scale * ||q_i - k_j||^2 + bias) V``.

    Kim et al. show that with tied query/key projections this map is Lipschitz while dot-product
    attention is not; tying is the calling module's choice (pass the same projection for both).

    Args: see the module docstring; ``scale`` > 0, default ``1 / sqrt(H)``.

    Returns:
        ``[B, T, N, H]`` in the query dtype; rows with no visible key are zeros.
    """
    checks.check_positive("scale", scale)
    return run_attention(lambda q, k, dims: l2_logits(q, k, scale), query, key, value, bias, mask,
                         is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                         key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size,
                         weights_only=False)


def l2_weights(query, key, bias=None, mask=None, *, scale=None, is_causal=False, query_seq_lengths=None,
               key_value_seq_lengths=None, local_window_size=None):
    """``[B, N, T, S]`` float32 probabilities of :func:`l2_attention`."""
    checks.check_positive("scale", scale)
    return run_attention(lambda q, k, dims: l2_logits(q, k, scale), query, key, key, bias, mask,
                         is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                         key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size,
                         weights_only=True)


def _check_additive(query, w_query, w_key, v_score):
    H = np.shape(query)[-1]
    _, A = _check_matrix("w_query", w_query, (H, None), "H, A")
    _check_matrix("w_key", w_key, (H, A), "H, A")
    _check_matrix("v_score", v_score, (A,), "A")


def additive_attention(query, key, value, bias=None, mask=None, *, w_query=None, w_key=None, v_score=None,
                       is_causal=False, query_seq_lengths=None, key_value_seq_lengths=None,
                       local_window_size=None):
    """Additive (Bahdanau) attention: ``softmax(v^T tanh(W_q q_i + W_k k_j) + bias) V``.

    Args: see the module docstring, plus the parameters (required keywords, shared by all heads):
        w_query: ``[H, A]``; w_key: ``[H, A]``; v_score: ``[A]``.

    Returns:
        ``[B, T, N, H]`` in the query dtype; rows with no visible key are zeros.
    """
    _check_additive(query, w_query, w_key, v_score)
    return run_attention(lambda q, k, dims: additive_logits(q, k, w_query, w_key, v_score), query, key, value, bias,
                         mask, is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                         key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size,
                         weights_only=False)


def additive_weights(query, key, bias=None, mask=None, *, w_query=None, w_key=None, v_score=None,
                     is_causal=False, query_seq_lengths=None, key_value_seq_lengths=None,
                     local_window_size=None):
    """``[B, N, T, S]`` float32 probabilities of :func:`additive_attention`."""
    _check_additive(query, w_query, w_key, v_score)
    return run_attention(lambda q, k, dims: additive_logits(q, k, w_query, w_key, v_score), query, key, key, bias,
                         mask, is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                         key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size,
                         weights_only=True)


def _check_multiplicative(query, weight, scale):
    H = np.shape(query)[-1]
    _check_matrix("weight", weight, (H, H), "H, H")
    checks.check_positive("scale", scale)


def multiplicative_attention(query, key, value, bias=None, mask=None, *, weight=None, scale=None,
                             is_causal=False, query_seq_lengths=None, key_value_seq_lengths=None,
                             local_window_size=None):
    """Multiplicative ("general", Luong et al. 2015) attention: ``softmax(scale * q_i W k_j^T + bias) V``.

    Args: see the module docstring, plus
        weight: ``[H, H]`` (required keyword), shared by all heads.
        scale: > 0, default ``1 / sqrt(H)``; ``1.0`` is Luong's original form.

    Returns:
        ``[B, T, N, H]`` in the query dtype; rows with no visible key are zeros.
    """
    _check_multiplicative(query, weight, scale)
    return run_attention(lambda q, k, dims: multiplicative_logits(q, k, weight, scale), query, key, value, bias, mask,
                         is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                         key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size,
                         weights_only=False)


def multiplicative_weights(query, key, bias=None, mask=None, *, weight=None, scale=None, is_causal=False,
                           query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    """``[B, N, T, S]`` float32 probabilities of :func:`multiplicative_attention`."""
    _check_multiplicative(query, weight, scale)
    return run_attention(lambda q, k, dims: multiplicative_logits(q, k, weight, scale), query, key, key, bias, mask,
                         is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                         key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size,
                         weights_only=True)
