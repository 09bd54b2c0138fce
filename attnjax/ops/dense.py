"""The plain reference path, ``implementation="dense"``: materializes the ``[B, N, T, S]`` weights.

Every faster path is tested against this one, values and gradients. It takes arguments already
checked by :func:`attnjax.ops.dot_product.dot_product_attention` (masks and biases of rank 4).
"""

from __future__ import annotations

import jax.numpy as jnp

from attnjax.ops.masks import attention_mask, combine_masks
from attnjax.ops.primitives import dropout, masked_logsumexp, masked_softmax, scaled_logits, weighted_values


def dense_logits(query, key, bias, mask, *, scale, is_causal, query_seq_lengths, key_value_seq_lengths, window,
                 logit_softcap, mods=None, score_mod_params=None):
    """``(logits [B, N, T, S], visible mask or None)``: scaled, capped and biased logits, then ``score_mod``
    (:mod:`attnjax.ops.flex`, on every entry, masked ones included), and the full mask (``mask_mod`` and-ed in)."""
    logits = scaled_logits(query, key, scale=scale, logit_softcap=logit_softcap)
    if bias is not None:
        logits = logits + jnp.asarray(bias).astype(logits.dtype)
    B, N, T, S = logits.shape
    indices = tuple(jnp.arange(n, dtype=jnp.int32) for n in (B, N, T, S))
    if mods is not None and mods.score_mod is not None:
        logits = mods.scores(logits, score_mod_params, indices)
    visible = attention_mask(T, S, mask=mask, is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                             key_value_seq_lengths=key_value_seq_lengths, window=window)
    if mods is not None and mods.mask_mod is not None:
        visible = combine_masks(visible, mods.mask(indices))
    return logits, visible


def dense_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                    query_seq_lengths=None, key_value_seq_lengths=None, window=None, logit_softcap=None,
                    dropout_rate=0.0, dropout_rng=None, return_residual=False, mods=None, score_mod_params=None):
    """``[B, T, N, Hv]`` in the query dtype; with ``return_residual`` also the ``[B, T, N]`` log-sum-exp
    (float32, or float64 for float64 inputs). ``mods`` (:class:`attnjax.ops.flex.Mods`) are applied to the
    materialized ``[B, N, T, S]`` logits: this is the reference for the blockwise kernel's hooks."""
    logits, visible = dense_logits(query, key, bias, mask, scale=scale, is_causal=is_causal,
                                   query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                                   window=window, logit_softcap=logit_softcap, mods=mods,
                                   score_mod_params=score_mod_params)
    probs = dropout(masked_softmax(logits, visible), dropout_rate, dropout_rng)
    out = weighted_values(probs, value).astype(query.dtype)
    if not return_residual:
        return out
    return out, jnp.swapaxes(masked_logsumexp(logits, visible), 1, 2)
