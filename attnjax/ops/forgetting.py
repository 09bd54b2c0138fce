"""Forgetting attention, the attention of the Forgetting Transformer (FoX; Lin et al., ICLR 2025), in the kernel.

Each head has a scalar forget gate per position, computed from the layer's input ``x_t``, and the logit
of query ``i`` and key ``j <= i`` is down-weighted by the product of the gates between them::

    f_t = sigmoid(w_h . x_t + b_h),    c_t = sum_{l <= t} log f_l,
    D_ij = sum_{j < l <= i} log f_l = c_i - c_j,
    A = softmax(scale * Q K^T + bias + D) V          (causal)

``D`` is data-dependent, so the op takes the gates as an argument: ``log_forget [B, L, N]``, ``log f_t`` per
position and query head (:func:`log_forget_gates` computes it from ``x`` with the layer's ``w``, ``b``).
Their cumulative sums ``c`` (float32, ``O(B N L)``) are the ``score_mod_params`` of a ``score_mod`` of
:func:`attnjax.dot_product_attention` that adds ``c_i - c_j`` per tile, so no ``[N, T, S]`` array is
built on the blockwise path and gradients reach ``log_forget`` (and through it ``w``, ``b`` and ``x``) on
the dense and blockwise paths. FoX uses no positional encoding: the gates carry position.

Choices, and what this module does (facts from the reference code, zhixuan-lin/forgetting-transformer,
``ops/forgetting_attention.py`` and ``model/forgetting_transformer/modeling_forgetting_transformer.py``):

* **Positions.** Queries and keys share one position axis, aligned at the start like ``is_causal``
  (query ``i`` and key ``j`` are at positions ``i`` and ``j``): ``log_forget`` covers ``L >= max(T, S)``
  positions (self-attention: ``T = S = L``). The cumulative sum starts at position 0 (``c_0 = log f_0``;
  only differences matter).
* **The gate** (the reference's default, data-dependent ``"full"`` gate): a linear map of ``x_t`` with a
  bias to one logit per head, ``log f = log_sigmoid(logit)`` in float32; ``w ~ N(0, 0.02^2)`` and
  ``b = 0`` at initialization (the reference's ``initializer_range`` and zero biases), so ``f ~ 1/2``.
* **Grouped-query attention.** One gate per *query* head (``N``); the reference supports ``K = N`` only.
* **Bidirectional use** (not in the paper, whose attention is causal): without ``is_causal`` a key after
  the query is down-weighted by the gates between them the same way, ``D_ij = c_j - c_i`` for ``j > i``
  (the gates ``i < l <= j``), i.e. ``D_ij = -|c_i - c_j|`` for gates in ``(0, 1]``: forgetting with
  distance in both directions. Causal attention never sees those entries, so it is exactly FoX.
* ``log_forget=None`` means every gate is 1 (no forgetting): plain softmax attention, the reference's
  ``fgate_type="none"``.
* **Decoding with a key/value cache.** The keys are the cached tokens and the queries the new ones, so they
  no longer share one position axis from 0. The caller then passes the cumulative sums themselves,
  ``forget_cumsums = (c at the queries [B, T, N], c at the keys [B, S, N])`` (a cache keeps those of past
  keys), and ``c_query_i - c_key_j`` is added to every logit (:func:`forgetting_split_score_mod`): ``D_ij``
  for keys at or before the query, which is all a causal mask lets through.
* The bias ``D`` is added after ``scale * q.k`` and any ``bias`` argument (the ``score_mod`` order).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops import checks
from attnjax.ops.dot_product import attention_weights, dot_product_attention

Array = jnp.ndarray

FORGET_INIT_STD = 0.02  # std of the gate's weights at initialization (the reference's initializer_range)


def forget_gate_init(rng: jax.Array, *, input_dim: int, num_heads: int,
                     std: float = FORGET_INIT_STD) -> dict[str, jax.Array]:
    """The forget gate's parameters: ``{"forget_kernel": [D, N], "forget_bias": [N]}`` float32.

    Args:
        rng: PRNG key.
        input_dim: ``D``, the layer input's features.
        num_heads: ``N``, one gate per query head.
        std: normal std of ``forget_kernel`` (``forget_bias`` starts at 0).
    """
    input_dim = checks.check_positive_int("input_dim", input_dim)
    num_heads = checks.check_positive_int("num_heads", num_heads)
    return {"forget_kernel": std * jax.random.normal(rng, (input_dim, num_heads), jnp.float32),
            "forget_bias": jnp.zeros((num_heads,), jnp.float32)}


def log_forget_gates(x: Array, forget_kernel: Array, forget_bias: Array) -> Array:
    """``log f = log_sigmoid(x W + b)``: float32 ``[B, L, N]`` from ``x [B, L, D]``, ``W [D, N]``, ``b [N]``.

    Raises:
        ValueError: shapes that do not fit.
    """
    if np.ndim(x) != 3:
        raise ValueError(f"x must have rank 3 [B, L, D], got shape {tuple(np.shape(x))}")
    D = np.shape(x)[-1]
    if np.ndim(forget_kernel) != 2 or np.shape(forget_kernel)[0] != D:
        raise ValueError(f"forget_kernel must have shape [D, N] with D = {D} (x's features), got "
                         f"{tuple(np.shape(forget_kernel))}")
    N = np.shape(forget_kernel)[1]
    if tuple(np.shape(forget_bias)) != (N,):
        raise ValueError(f"forget_bias must have shape [N] = ({N},), got {tuple(np.shape(forget_bias))}")
    logits = jnp.einsum("BLD,DN->BLN", jnp.asarray(x, jnp.float32), jnp.asarray(forget_kernel, jnp.float32))
    return jax.nn.log_sigmoid(logits + jnp.asarray(forget_bias, jnp.float32))


def forgetting_input_keywords(params: dict[str, Array], x: Array) -> dict[str, Array]:
    """``{"log_forget": log_forget_gates(x, **params)}``: the keywords a layer with input ``x [B, T, D]`` passes
    to :func:`forgetting_attention` (the registry's ``input_params`` hook)."""
    return {"log_forget": log_forget_gates(x, params["forget_kernel"], params["forget_bias"])}


def forgetting_score_mod(score, batch, head, q_idx, kv_idx, cumsum):
    """``score + D_ij`` with ``cumsum [B, N, L]`` the gates' cumulative sums (the ``score_mod`` of
    :func:`forgetting_attention`; keys after the query: ``c_j - c_i``, see the module docstring)."""
    d = cumsum[batch, head, q_idx] - cumsum[batch, head, kv_idx]
    return score + jnp.where(kv_idx <= q_idx, d, -d).astype(score.dtype)


def forgetting_split_score_mod(score, batch, head, q_idx, kv_idx, cumsums):
    """``score + c_query[q_idx] - c_key[kv_idx]`` with ``cumsums = (c_query [B, N, T], c_key [B, N, S])``: FoX's
    ``D_ij`` when queries and keys have their own cumulative sums (decoding with a cache; causal only)."""
    query_cumsum, key_cumsum = cumsums
    return score + (query_cumsum[batch, head, q_idx] - key_cumsum[batch, head, kv_idx]).astype(score.dtype)


def _check_cumsums(forget_cumsums, B: int, T: int, S: int, N: int) -> tuple[Array, Array]:
    """``forget_cumsums = (query [B, T, N], key [B, S, N])`` as float32 ``([B, N, T], [B, N, S])``."""
    if not isinstance(forget_cumsums, (tuple, list)) or len(forget_cumsums) != 2:
        raise ValueError(f"forget_cumsums must be a pair (query [B, T, N], key [B, S, N]) of cumulative sums, got "
                         f"{type(forget_cumsums).__name__}")
    out = []
    for name, x, length in (("query", forget_cumsums[0], T), ("key", forget_cumsums[1], S)):
        if tuple(np.shape(x)) != (B, length, N):
            raise ValueError(f"forget_cumsums {name} sums must have shape {(B, length, N)}, got {tuple(np.shape(x))}")
        checks.check_floating(f"forget_cumsums ({name})", x)
        out.append(jnp.asarray(x, jnp.float32).transpose(0, 2, 1))
    return out[0], out[1]


def _forget_mod(query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths, log_forget,
                forget_cumsums) -> dict[str, Any]:
    """The ``score_mod`` keywords of the gates (none without gates)."""
    if forget_cumsums is None:
        cumsum = _forget_cumsum(query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths, log_forget)
        return {} if cumsum is None else dict(score_mod=forgetting_score_mod, score_mod_params=cumsum)
    if log_forget is not None:
        raise ValueError("pass log_forget (queries and keys at one position axis) or forget_cumsums (their own "
                         "cumulative sums, decoding with a cache), not both")
    B, T, S, N, _, _ = checks.check_inputs(query, key, value, bias=bias, mask=mask,
                                           query_seq_lengths=query_seq_lengths,
                                           key_value_seq_lengths=key_value_seq_lengths)
    return dict(score_mod=forgetting_split_score_mod, score_mod_params=_check_cumsums(forget_cumsums, B, T, S, N))


def _forget_cumsum(query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths, log_forget) -> Any:
    """Checks ``log_forget``; returns its float32 cumulative sums ``[B, N, L]`` (None without gates)."""
    B, T, S, N, _, _ = checks.check_inputs(query, key, value, bias=bias, mask=mask,
                                           query_seq_lengths=query_seq_lengths,
                                           key_value_seq_lengths=key_value_seq_lengths)
    if log_forget is None:
        return None
    shape = tuple(np.shape(log_forget))
    if len(shape) != 3 or shape[0] != B or shape[2] != N or shape[1] < max(T, S):
        raise ValueError(f"log_forget must have shape [B, L, N] = ({B}, L, {N}) with L >= max(T, S) = {max(T, S)} "
                         f"(queries and keys share its positions), got {shape}")
    checks.check_floating("log_forget", log_forget)
    return jnp.cumsum(jnp.asarray(log_forget, jnp.float32), axis=1).transpose(0, 2, 1)


def forgetting_attention(query: Array, key: Array, value: Array, bias: Array | None = None,
                         mask: Array | None = None, *, is_causal: bool = False,
                         query_seq_lengths: Array | None = None, key_value_seq_lengths: Array | None = None,
                         log_forget: Array | None = None, scale: float | None = None,
                         local_window_size: int | tuple[int, int] | None = None, dropout_rate: float = 0.0,
                         dropout_rng: jax.Array | None = None, implementation: str | None = None,
                         block_sizes: Any = None, forget_cumsums: tuple[Array, Array] | None = None) -> Array:
    """``softmax(scale * Q K^T + bias + D) V``, forgetting attention (module docstring for ``D``).

    Args:
        query: ``[B, T, N, H]``; key, value: ``[B, S, K, H]`` (same dtype; ``K < N``: grouped-query).
        bias, mask, is_causal, query_seq_lengths, key_value_seq_lengths, scale, local_window_size,
            dropout_rate, dropout_rng, block_sizes: as in :func:`attnjax.dot_product_attention`. FoX is
            causal: pass ``is_causal=True`` (without it, see the module docstring).
        log_forget: ``[B, L, N]`` floating, ``log f_t <= 0`` per position and query head, ``L >= max(T, S)``
            (e.g. :func:`log_forget_gates`); gradients flow to it. None: no forgetting (plain attention).
        forget_cumsums: instead of ``log_forget``, the gates' cumulative sums at the queries ``[B, T, N]`` and
            at the keys ``[B, S, N]`` (decoding with a cache, module docstring); the caller's mask must hide
            keys after their query.
        implementation: None, ``"dense"``/``"xla"`` or ``"blockwise"`` (the paths that evaluate a
            ``score_mod``); any other raises ValueError.

    Returns:
        ``[B, T, N, H]`` in the query dtype; a query row with no visible key is zeros.

    Raises:
        ValueError: a ``log_forget`` of the wrong shape, and everything :func:`attnjax.dot_product_attention`
            refuses.
        TypeError: a non-floating ``log_forget``.
    """
    mod = _forget_mod(query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths, log_forget,
                      forget_cumsums)
    return dot_product_attention(query, key, value, bias, mask, scale=scale, is_causal=is_causal,
                                 query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                                 local_window_size=local_window_size, dropout_rate=dropout_rate,
                                 dropout_rng=dropout_rng, implementation=implementation, block_sizes=block_sizes,
                                 **mod)


def forgetting_weights(query: Array, key: Array, bias: Array | None = None, mask: Array | None = None, *,
                       is_causal: bool = False, query_seq_lengths: Array | None = None,
                       key_value_seq_lengths: Array | None = None, log_forget: Array | None = None,
                       scale: float | None = None, local_window_size: int | tuple[int, int] | None = None,
                       forget_cumsums: tuple[Array, Array] | None = None) -> Array:
    """The ``[B, N, T, S]`` float32 attention weights of :func:`forgetting_attention` (same keywords, no value,
    dropout or implementation); rows with no visible key are zeros."""
    mod = _forget_mod(query, key, key, bias, mask, query_seq_lengths, key_value_seq_lengths, log_forget,
                      forget_cumsums)
    return attention_weights(query, key, bias, mask, scale=scale, is_causal=is_causal,
                             query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                             local_window_size=local_window_size, **mod)


__all__ = ["forget_gate_init", "forgetting_attention", "forgetting_input_keywords", "forgetting_score_mod",
           "forgetting_split_score_mod", "forgetting_weights", "log_forget_gates"]
