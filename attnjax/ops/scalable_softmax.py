"""Scalable softmax, SSMax (Nakanishi 2025, "Scalable-Softmax Is Superior for Attention"), inside the kernel.

Softmax over ``n`` logits flattens as ``n`` grows (its largest output goes to 0: *attention fading*). SSMax
replaces it, for the logits ``z`` of query ``i`` over the ``n_i`` keys it sees, by::

    SSMax(z)_j = n_i^(s z_j) / sum_k n_i^(s z_k) = softmax((s log n_i) z)_j

with ``s`` learned, one per head (per layer: each layer holds its own). Here ``z = scale * q.k + bias``
(after ``logit_softcap``), so ``A = softmax(s_h log(n_i) * (scale * Q K^T + bias)) V``. It runs as a
``score_mod`` of :func:`attnjax.dot_product_attention` that multiplies each logit by the factor
``s_h log n_i`` of its row, precomputed as ``[B, N, T]`` (``O(B N T)``, no ``[N, T, S]`` array), with
gradients to ``s`` on the dense and blockwise paths.

Choices the paper leaves open, and what this module does:

* **n, the number of keys query i sees**, counted by the same rule that masks them
  (:meth:`attnjax.ops.Visibility.key_bounds`): causal, ``min(i + 1, key length)``; bidirectional, the key
  length (``key_value_seq_lengths[b]``, else ``S``); a ``local_window_size`` clips both. A ``mask``
  argument is respected too: a key mask (``mask`` of size 1 along ``T``, e.g. ``[B, 1, 1, S]``) by prefix
  sums over the keys, ``O(B N (T + S))``; a mask with a ``T`` axis by summing it with the rule, which
  builds the combined ``[B|1, N|1, T, S]`` boolean mask the caller's mask already is. A row with
  ``n_i <= 1`` gets the factor ``s log 1 = 0`` (one key or none: its weights do not depend on it).
* **The bias is scaled too**: the paper's ``z`` is the whole softmax input, and ``bias`` is part of it.
  (Multiplying the query by ``s log n``, the paper's implementation, is the same without a bias.)
* **Initialization of s**: 0.43, the value of the paper's Figure 1 (it is also the default of the unofficial
  PyTorch package); ``s log n = 1`` at ``n = e^(1/0.43) ~ 10`` keys, so at initialization longer rows are
  sharpened and shorter ones flattened relative to softmax. :func:`ssmax_init` takes another value, e.g.
  ``1 / log(n_train)``, which makes SSMax equal softmax at the training length.
* **The optional bias of the paper's variant** ``(s log n + b) z`` is ``ssmax_bias`` (``[N]``, default
  None: absent, the form the paper proposes; not a learned parameter of :func:`ssmax_init`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from attnjax.ops import checks
from attnjax.ops.dot_product import attention_weights, dot_product_attention
from attnjax.ops.flex_params import check_learned
from attnjax.ops.masks import attention_mask
from attnjax.ops.visibility import Visibility

Array = jnp.ndarray

SSMAX_INIT = 0.43  # initial s (the paper's Figure 1)


def ssmax_init(rng: jax.Array, *, head_dim: int, num_heads: int, s: float = SSMAX_INIT) -> dict[str, jax.Array]:
    """SSMax's learned parameter: ``{"ssmax_scale": [N] float32}``, every head at ``s``.

    Args:
        rng: unused (a constant initialization; the registry's convention).
        head_dim: ``H`` (unused).
        num_heads: ``N``.
        s: initial value (module docstring).
    """
    num_heads = checks.check_positive_int("num_heads", num_heads)
    return {"ssmax_scale": jnp.full((num_heads,), s, jnp.float32)}


def visible_key_counts(T: int, S: int, *, mask: Array | None = None, is_causal: bool = False,
                       key_value_seq_lengths: Array | None = None,
                       window: tuple[int, int] | None = None) -> Array:
    """``n``: how many keys each query sees, int32 ``[B|1, N|1, T]``.

    Args:
        T, S: query and key lengths.
        mask: None or a boolean rank-4 mask broadcastable to ``[B, N, T, S]``.
        is_causal, key_value_seq_lengths, window: the rule of :class:`attnjax.ops.Visibility`.
    """
    lo, hi = Visibility(is_causal, window).key_bounds(T, S, key_value_seq_lengths=key_value_seq_lengths)
    if mask is None:
        return jnp.maximum(hi - lo, 0)[:, None, :]
    if mask.shape[2] == 1:  # a key mask: count its True entries in [lo, hi) by prefix sums
        prefix = jnp.cumsum(mask[:, :, 0, :].astype(jnp.int32), axis=-1)
        prefix = jnp.concatenate([jnp.zeros(prefix.shape[:2] + (1,), jnp.int32), prefix], axis=-1)  # [B|1, N|1, S+1]
        shape = (max(prefix.shape[0], lo.shape[0]), prefix.shape[1])
        prefix = jnp.broadcast_to(prefix, shape + prefix.shape[2:])
        lo, hi = (jnp.broadcast_to(jnp.clip(x, 0, S)[:, None, :], shape + (T,)) for x in (lo, hi))
        count = jnp.take_along_axis(prefix, hi, axis=-1) - jnp.take_along_axis(prefix, lo, axis=-1)
        return jnp.where(hi > lo, count, 0)
    visible = attention_mask(T, S, mask=mask, is_causal=is_causal, key_value_seq_lengths=key_value_seq_lengths,
                             window=window)
    return jnp.sum(visible, axis=-1, dtype=jnp.int32)


def ssmax_score_mod(score, batch, head, q_idx, kv_idx, factor):
    """``score * factor[batch, head, q_idx]`` (the ``score_mod`` of :func:`ssmax_attention`; ``factor
    [B, N, T]`` is ``s_h log n_i``)."""
    return score * factor[batch, head, q_idx].astype(score.dtype)


def _ssmax_factor(fn_name, query, key, value, bias, mask, is_causal, query_seq_lengths, key_value_seq_lengths,
                  local_window_size, ssmax_scale, ssmax_bias) -> Array:
    """Checks everything SSMax adds; returns ``s_h log n_i (+ b_h)`` as float32 ``[B, N, T]``."""
    B, T, S, N, _, _ = checks.check_inputs(query, key, value, bias=bias, mask=mask,
                                           query_seq_lengths=query_seq_lengths,
                                           key_value_seq_lengths=key_value_seq_lengths)
    check_learned(fn_name, "ssmax", {"ssmax_scale": ssmax_scale}, {"ssmax_scale": ((N,), "[N]")})
    if ssmax_bias is not None:
        check_learned(fn_name, "ssmax", {"ssmax_bias": ssmax_bias}, {"ssmax_bias": ((N,), "[N]")})
    counts = visible_key_counts(T, S, mask=checks.pad_to_rank4(mask), is_causal=is_causal,
                                key_value_seq_lengths=key_value_seq_lengths,
                                window=checks.normalize_window(local_window_size))
    log_n = jnp.log(jnp.maximum(counts, 1).astype(jnp.float32))  # n <= 1: factor 0, the row needs none
    factor = jnp.asarray(ssmax_scale, jnp.float32)[None, :, None] * log_n
    if ssmax_bias is not None:
        factor = factor + jnp.asarray(ssmax_bias, jnp.float32)[None, :, None]
    return jnp.broadcast_to(factor, (B, N, T))


def ssmax_attention(query: Array, key: Array, value: Array, bias: Array | None = None, mask: Array | None = None, *,
                    is_causal: bool = False, query_seq_lengths: Array | None = None,
                    key_value_seq_lengths: Array | None = None, ssmax_scale: Array | None = None,
                    ssmax_bias: Array | None = None, scale: float | None = None,
                    local_window_size: int | tuple[int, int] | None = None, dropout_rate: float = 0.0,
                    dropout_rng: jax.Array | None = None, implementation: str | None = None,
                    block_sizes: Any = None) -> Array:
    """``softmax(s_h log(n_i) (scale * Q K^T + bias)) V``, scalable softmax (module docstring).

    Args:
        query: ``[B, T, N, H]``; key, value: ``[B, S, K, H]`` (same dtype; ``K < N``: grouped-query).
        bias, mask, is_causal, query_seq_lengths, key_value_seq_lengths, scale, local_window_size,
            dropout_rate, dropout_rng, block_sizes: as in :func:`attnjax.dot_product_attention`.
        ssmax_scale: ``[N]``, the learned ``s`` per query head, with no default: :func:`ssmax_init` (or
            ``attnjax.ops.registry.init_attention_params("ssmax", ...)``) builds it.
        ssmax_bias: ``[N]`` or None, the paper's optional additive term ``(s log n + b)``.
        implementation: None, ``"dense"``/``"xla"`` or ``"blockwise"`` (the paths that evaluate a
            ``score_mod``); any other raises ValueError.

    Returns:
        ``[B, T, N, H]`` in the query dtype; a query row with no visible key is zeros.

    Raises:
        ValueError: ``ssmax_scale`` missing (with how to build it) or of the wrong shape, and everything
            :func:`attnjax.dot_product_attention` refuses.
    """
    factor = _ssmax_factor("ssmax_attention", query, key, value, bias, mask, is_causal, query_seq_lengths,
                           key_value_seq_lengths, local_window_size, ssmax_scale, ssmax_bias)
    return dot_product_attention(query, key, value, bias, mask, scale=scale, is_causal=is_causal,
                                 query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                                 local_window_size=local_window_size, dropout_rate=dropout_rate,
                                 dropout_rng=dropout_rng, implementation=implementation, block_sizes=block_sizes,
                                 score_mod=ssmax_score_mod, score_mod_params=factor)


def ssmax_weights(query: Array, key: Array, bias: Array | None = None, mask: Array | None = None, *,
                  is_causal: bool = False, query_seq_lengths: Array | None = None,
                  key_value_seq_lengths: Array | None = None, ssmax_scale: Array | None = None,
                  ssmax_bias: Array | None = None, scale: float | None = None,
                  local_window_size: int | tuple[int, int] | None = None) -> Array:
    """The ``[B, N, T, S]`` float32 attention weights of :func:`ssmax_attention` (same keywords, no value,
    dropout or implementation); rows with no visible key are zeros."""
    factor = _ssmax_factor("ssmax_weights", query, key, key, bias, mask, is_causal, query_seq_lengths,
                           key_value_seq_lengths, local_window_size, ssmax_scale, ssmax_bias)
    return attention_weights(query, key, bias, mask, scale=scale, is_causal=is_causal,
                             query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                             local_window_size=local_window_size, score_mod=ssmax_score_mod, score_mod_params=factor)


__all__ = ["SSMAX_INIT", "ssmax_attention", "ssmax_init", "ssmax_score_mod", "ssmax_weights", "visible_key_counts"]
