"""The plain reference path, ``implementation="dense"``: materializes the ``[B, N, T, S]`` weights.

Every faster path is tested against this one, values and gradients. It takes arguments already
checked by :func:`attnjax.ops.dot_product.dot_product_attention` (masks and biases of rank 4).
"""

from __future__ import annotations

import jax.numpy as jnp

from attnjax.ops.masks import attention_mask
from attnjax.ops.primitives import dropout, masked_logsumexp, masked_softmax, scaled_logits, weighted_values


def dense_logits(query, key, bias, mask, *, scale, is_causal, query_seq_lengths, key_value_seq_lengths, window,
                 logit_softcap):
    """``(logits [B, N, T, S], visible mask or None)``: scaled, capped and biased logits and the full mask."""
    logits = scaled_logits(query, key, scale=scale, logit_softcap=logit_softcap)
    if bias is not None:
        logits = logits + jnp.asarray(bias).astype(logits.dtype)
    visible = attention_mask(query.shape[1], key.shape[1], mask=mask, is_causal=is_causal,
                             query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                             window=window)
    return logits, visible


def dense_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                    query_seq_lengths=None, key_value_seq_lengths=None, window=None, logit_softcap=None,
                    dropout_rate=0.0, dropout_rng=None, return_residual=False):
    """``[B, T, N, Hv]`` in the query dtype; with ``return_residual`` also the ``[B, T, N]`` log-sum-exp."""
    logits, visible = dense_logits(query, key, bias, mask, scale=scale, is_causal=is_causal,
                                   query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                                   window=window, logit_softcap=logit_softcap)
    probs = dropout(masked_softmax(logits, visible), dropout_rate, dropout_rng)
    out = weighted_values(probs, value).astype(query.dtype)
    if not return_residual:
        return out
    return out, jnp.swapaxes(masked_logsumexp(logits, visible), 1, 2)
