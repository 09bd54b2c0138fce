"""The seed formula: ``softmax(Q K^T / sqrt(d_k) + bias) V`` as a drop-in for ``jax.nn.dot_product_attention``.

Numerics (the same for every implementation):

* logits, the softmax and its statistics are float32 whatever the input dtype; the output keeps the
  query dtype;
* masked logits get a large *finite* negative value, never ``-inf``;
* a query row whose keys are all masked returns **zeros** (``jax.nn`` returns the mean of the values
  instead), and its gradient is zero and finite, never NaN.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops import checks
from attnjax.ops.masks import attention_mask, combine_masks, segment_mask

# Large enough to vanish under exp() next to any real logit, small enough that adding a bias or
# subtracting a row max stays finite in float32.
MASK_VALUE = float(-0.7 * np.finfo(np.float32).max)


def scaled_logits(query: jnp.ndarray, key: jnp.ndarray, *, scale: float | None,
                  logit_softcap: float | None = None) -> jnp.ndarray:
    """``scale * Q K^T`` in float32, with keys shared across each group of query heads.

    Args:
        query: ``[B, T, N, H]``.
        key: ``[B, S, K, H]`` with ``N % K == 0``.
        scale: multiplier, default ``1 / sqrt(H)``.
        logit_softcap: if set, logits become ``cap * tanh(logits / cap)`` (Gemma-2 style).

    Returns:
        ``[B, N, T, S]`` float32 logits.
    """
    B, T, N, H = query.shape
    K = key.shape[2]
    scale = checks.default_scale(scale, H)
    # float32 queries are scaled before the matmul ([B, T, N, H] multiplies instead of [B, N, T, S]);
    # low-precision ones after it, in float32, so the scale adds no rounding.
    prescale = query.dtype == jnp.float32
    if prescale:
        query = query * jnp.float32(scale)
    if K == N:  # no grouping: the 4-D contraction is ~20% faster on CPU than the grouped 5-D one
        logits = jnp.einsum("BTNH,BSNH->BNTS", query, key, preferred_element_type=jnp.float32)
    else:
        grouped = query.reshape(B, T, K, N // K, H)
        logits = jnp.einsum("BTKGH,BSKH->BKGTS", grouped, key, preferred_element_type=jnp.float32)
    logits = logits.reshape(B, N, T, key.shape[1])
    if not prescale:
        logits = logits * jnp.float32(scale)
    if logit_softcap is not None:
        logits = logit_softcap * jnp.tanh(logits / logit_softcap)
    return logits


def masked_softmax(logits: jnp.ndarray, mask: jnp.ndarray | None) -> jnp.ndarray:
    """Float32 softmax over the last axis; rows whose every entry is masked become zeros.

    Args:
        logits: ``[..., S]`` float32.
        mask: boolean, broadcastable to ``logits``, or None.
    """
    if mask is None:
        return jax.nn.softmax(logits, axis=-1)
    probs = jax.nn.softmax(jnp.where(mask, logits, MASK_VALUE), axis=-1)
    row_has_key = jnp.any(mask, axis=-1, keepdims=True)
    return jnp.where(row_has_key, probs, 0.0)


def weighted_values(probs: jnp.ndarray, value: jnp.ndarray) -> jnp.ndarray:
    """``probs [B, N, T, S]`` times ``value [B, S, K, H]`` -> ``[B, T, N, H]`` float32 (GQA aware)."""
    B, N, T, S = probs.shape
    K, H = value.shape[2], value.shape[3]
    if K == N:
        return jnp.einsum("BNTS,BSNH->BTNH", probs.astype(value.dtype), value, preferred_element_type=jnp.float32)
    grouped = probs.astype(value.dtype).reshape(B, K, N // K, T, S)
    out = jnp.einsum("BKGTS,BSKH->BTKGH", grouped, value, preferred_element_type=jnp.float32)
    return out.reshape(B, T, N, H)


def _dropout(probs: jnp.ndarray, rate: float, rng: Any) -> jnp.ndarray:
    if rate == 0.0:
        return probs
    keep = jax.random.bernoulli(rng, 1.0 - rate, probs.shape)
    return jnp.where(keep, probs / (1.0 - rate), 0.0)


def _check_arguments(query, key, value, bias, mask, *, scale, query_seq_lengths, key_value_seq_lengths,
                     local_window_size, logit_softcap, query_segment_ids=None, key_segment_ids=None):
    checks.check_inputs(query, key, value, bias=bias, mask=mask, query_seq_lengths=query_seq_lengths,
                        key_value_seq_lengths=key_value_seq_lengths)
    checks.check_segment_ids(query_segment_ids, key_segment_ids, query, key)
    checks.check_positive("scale", scale)
    checks.check_positive("logit_softcap", logit_softcap)
    return checks.normalize_window(local_window_size)


def _with_segment_mask(mask, query_segment_ids, key_segment_ids):
    """``mask`` and-ed with the ``[B, 1, T, S]`` mask of equal segment ids (None ids: ``mask`` as is)."""
    if query_segment_ids is None:
        return mask
    key_ids = None if key_segment_ids is None else jnp.asarray(key_segment_ids)
    return combine_masks(None if mask is None else jnp.asarray(mask),
                         segment_mask(jnp.asarray(query_segment_ids), key_ids))


def _dense_probs(query, key, bias, mask, *, scale, is_causal, query_seq_lengths, key_value_seq_lengths,
                 window, logit_softcap):
    logits = scaled_logits(query, key, scale=scale, logit_softcap=logit_softcap)
    if bias is not None:
        logits = logits + jnp.asarray(bias).astype(jnp.float32)
    full_mask = attention_mask(query.shape[1], key.shape[1], mask=mask, is_causal=is_causal,
                               query_seq_lengths=query_seq_lengths,
                               key_value_seq_lengths=key_value_seq_lengths, window=window)
    return masked_softmax(logits, full_mask)


def dense_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                    query_seq_lengths=None, key_value_seq_lengths=None, window=None, logit_softcap=None,
                    dropout_rate=0.0, dropout_rng=None):
    """The plain reference: materializes ``[B, N, T, S]`` weights. Arguments are already checked."""
    probs = _dense_probs(query, key, bias, mask, scale=scale, is_causal=is_causal,
                         query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                         window=window, logit_softcap=logit_softcap)
    probs = _dropout(probs, dropout_rate, dropout_rng)
    return weighted_values(probs, value).astype(query.dtype)


# name -> implementation taking checked arguments. Other modules add their paths here.
IMPLEMENTATIONS: dict[str, Callable[..., jnp.ndarray]] = {"dense": dense_attention}


# jax.nn.dot_product_attention's name for its plain XLA path, accepted so calls written for jax.nn run.
IMPLEMENTATION_ALIASES = {"xla": "dense"}


def _pick_implementation(implementation: str | None) -> Callable[..., jnp.ndarray] | None:
    """The named implementation, or None for ``implementation=None`` (chosen after the checks)."""
    if implementation is None:
        return None
    implementation = IMPLEMENTATION_ALIASES.get(implementation, implementation)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {sorted({*IMPLEMENTATIONS, *IMPLEMENTATION_ALIASES})} "
                         f"or None, got {implementation!r}")
    return IMPLEMENTATIONS[implementation]


def _select_implementation(query, key, value, bias, *, has_mask, is_causal, query_seq_lengths, key_value_seq_lengths,
                           window, logit_softcap, dropout_rate) -> str:
    # Imported here because backends registers its paths into IMPLEMENTATIONS, so it imports this module.
    from attnjax.ops.backends import select_implementation
    return select_implementation(
        jax.default_backend(), query.shape, key.shape, value.shape, query.dtype, has_bias=bias is not None,
        has_mask=has_mask, has_seq_lengths=query_seq_lengths is not None or key_value_seq_lengths is not None,
        is_causal=is_causal, window=window, logit_softcap=logit_softcap, dropout_rate=dropout_rate)


def dot_product_attention(
    query: jnp.ndarray,
    key: jnp.ndarray,
    value: jnp.ndarray,
    bias: jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jnp.ndarray | None = None,
    key_value_seq_lengths: jnp.ndarray | None = None,
    query_segment_ids: jnp.ndarray | None = None,
    key_segment_ids: jnp.ndarray | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    logit_softcap: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    implementation: str | None = None,
    block_sizes: Any = None,
) -> jnp.ndarray:
    """Scaled dot-product attention, ``softmax(scale * Q K^T + bias) V``, per head.

    Same layout and keywords as ``jax.nn.dot_product_attention``; ``K < N`` key/value heads give
    grouped-query attention (``K == 1``: multi-query).

    Args:
        query: ``[B, T, N, H]`` (or ``[T, N, H]``), floating.
        key: ``[B, S, K, H]`` (or ``[S, K, H]``), same dtype as ``query``, ``N % K == 0``.
        value: ``[B, S, K, H]``, same shape and dtype as ``key``.
        bias: added to the logits, broadcastable to ``[B, N, T, S]`` (rank 4).
        mask: boolean, ``True`` = attend, broadcastable to ``[B, N, T, S]`` (rank 4).
        scale: logit multiplier, default ``1 / sqrt(H)``.
        is_causal: query ``i`` sees keys ``j <= i`` (top-left aligned, as ``jax.nn``).
        query_seq_lengths: ``[B]`` int; queries past the length output zeros.
        key_value_seq_lengths: ``[B]`` int; keys past the length are ignored.
        query_segment_ids: ``[B, T]`` int segment ids (packed sequences): a query sees only keys of
            its own segment, like ``mask=attnjax.ops.segment_mask(...)``. ``"blockwise"`` compares
            them per block and never builds the ``[B, 1, T, S]`` mask; the other paths build it.
        key_segment_ids: ``[B, S]`` int; default ``query_segment_ids`` (self-attention).
        local_window_size: ``w`` or ``(left, right)``: query ``i`` sees keys ``i-left..i+right``.
        logit_softcap: if set, logits are squashed to ``cap * tanh(logits / cap)`` before bias and masks.
        dropout_rate: dropout on the attention weights (inverted scaling); needs ``dropout_rng``.
        dropout_rng: PRNG key for dropout.
        implementation: ``None`` (best for the platform and shapes, see
            ``attnjax.ops.backends.select_implementation``) or one of ``IMPLEMENTATIONS``. The
            blocked paths it may choose for long sequences are reverse-mode only (``jax.grad``, not
            ``jax.jvp``/``jax.hessian``); pass ``"dense"`` for forward-mode or higher derivatives.
        block_sizes: ``attnjax.ops.BlockSizes`` for the blocked paths (``"blockwise"``, ``"pallas"``);
            with ``implementation=None`` it is used only if a blocked path is chosen.

    Returns:
        ``[B, T, N, H]`` in the query dtype. A query row with no visible key is zeros.

    Raises:
        ValueError: malformed shapes, window, scale, softcap, dropout or implementation name.
        TypeError: non-floating inputs, mismatched dtypes, non-boolean mask, non-integer lengths or
            segment ids.
    """
    impl = _pick_implementation(implementation)
    implementation = IMPLEMENTATION_ALIASES.get(implementation, implementation)
    # Like jax.nn, [T, N, H] inputs (all three unbatched) are accepted and returned unbatched.
    unbatched = all(np.ndim(x) == 3 for x in (query, key, value))
    if unbatched:
        query, key, value = (jnp.asarray(x)[None] for x in (query, key, value))
        query_segment_ids, key_segment_ids = (ids if ids is None or np.ndim(ids) != 1 else jnp.asarray(ids)[None]
                                              for ids in (query_segment_ids, key_segment_ids))
    query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)
    window = _check_arguments(query, key, value, bias, mask, scale=scale, query_seq_lengths=query_seq_lengths,
                              key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size,
                              logit_softcap=logit_softcap, query_segment_ids=query_segment_ids,
                              key_segment_ids=key_segment_ids)
    checks.check_dropout(dropout_rate, dropout_rng)
    name = implementation
    if impl is None:
        # Segment ids count as a mask: every path but "blockwise" receives them as one.
        name = _select_implementation(query, key, value, bias,
                                      has_mask=mask is not None or query_segment_ids is not None, is_causal=is_causal,
                                      query_seq_lengths=query_seq_lengths,
                                      key_value_seq_lengths=key_value_seq_lengths, window=window,
                                      logit_softcap=logit_softcap, dropout_rate=float(dropout_rate))
        impl = IMPLEMENTATIONS[name]
    from attnjax.ops.backends import TAKES_BLOCK_SIZES, TAKES_SEGMENT_IDS  # local for the same reason as above
    extra = {}
    if name in TAKES_SEGMENT_IDS:
        extra.update(query_segment_ids=query_segment_ids, key_segment_ids=key_segment_ids)
    else:
        mask = _with_segment_mask(mask, query_segment_ids, key_segment_ids)
    if block_sizes is not None:
        if name in TAKES_BLOCK_SIZES:
            extra["block_sizes"] = block_sizes
        elif implementation is not None:
            raise ValueError(f"block_sizes is used only by {sorted(TAKES_BLOCK_SIZES)}, "
                             f"got implementation={implementation!r}")
    out = impl(query, key, value, bias, mask, scale=scale, is_causal=is_causal,
               query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
               window=window, logit_softcap=logit_softcap, dropout_rate=float(dropout_rate),
               dropout_rng=dropout_rng, **extra)
    return out[0] if unbatched else out


def attention_weights(
    query: jnp.ndarray,
    key: jnp.ndarray,
    bias: jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jnp.ndarray | None = None,
    key_value_seq_lengths: jnp.ndarray | None = None,
    query_segment_ids: jnp.ndarray | None = None,
    key_segment_ids: jnp.ndarray | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    logit_softcap: float | None = None,
) -> jnp.ndarray:
    """The ``[B, N, T, S]`` float32 attention probabilities of :func:`dot_product_attention`.

    Takes the same arguments (no value, dropout or implementation). Rows sum to 1, except rows with
    no visible key, which are all zeros. Unbatched ``[T, N, H]``/``[S, K, H]`` inputs give ``[N, T, S]``.
    """
    unbatched = np.ndim(query) == 3 and np.ndim(key) == 3
    query, key = (jnp.asarray(x)[None] if unbatched else jnp.asarray(x) for x in (query, key))
    window = _check_arguments(query, key, key, bias, mask, scale=scale, query_seq_lengths=query_seq_lengths,
                              key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size,
                              logit_softcap=logit_softcap, query_segment_ids=query_segment_ids,
                              key_segment_ids=key_segment_ids)
    mask = _with_segment_mask(mask, query_segment_ids, key_segment_ids)
    probs = _dense_probs(query, key, bias, mask, scale=scale, is_causal=is_causal,
                         query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                         window=window, logit_softcap=logit_softcap)
    return probs[0] if unbatched else probs
