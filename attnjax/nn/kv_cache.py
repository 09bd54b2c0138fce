"""Decoding with a cache: what a decoder-only model keeps between calls in Flax's ``"cache"`` collection, and how
each attention variant attends to its cached keys.

A model called with ``decode=True`` reads a few new tokens per call and attends to every token it has read
before, which its layers keep in the ``"cache"`` variable collection, as
``flax.linen.MultiHeadDotProductAttention(decode=True)`` does::

    cache = attnjax.train.decode.init_cache(model, batch_size=B, max_length=L, input_size=V)  # all zeros
    logits, mutated = model.apply({"params": params, "cache": cache}, prompt, decode=True, mutable=["cache"])
    logits, mutated = model.apply({"params": params, "cache": mutated["cache"]}, next_token, decode=True,
                                  mutable=["cache"])

* Every attention layer keeps ``cached_key``/``cached_value`` ``[B, L, K, H]`` (keys already rotated by RoPE at
  their own positions) and ``cache_index`` (how many tokens it holds); FoX's layers also keep the cumulative
  sums of their log forget gates, ``cached_forget_cumsum [B, L, N]``.
* The positional encoding keeps ``positions [1, L]`` (the position of every cached token) and its own
  ``cache_index``: new tokens are encoded at their absolute positions, never at ``0..T-1``.
* A recurrent LM keeps each layer's state (``carry_<i>``).

The cache starts at zeros (``model.init(..., decode=True)`` builds it from an input of length ``L``, and so
does :func:`attnjax.train.decode.init_cache` without running anything), and its length ``L`` bounds the tokens
one decode can read. The parameters are those of the normal call: one checkpoint serves both.

New queries sit at positions ``i = index .. index + T - 1`` of the ``L`` cache slots and see keys ``j <= i``
(later slots are empty or not yet read). How a variant is told so is :data:`DECODE_RULES`; a variant with no
rule raises :class:`ValueError` naming it, never a wrong output.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from attnjax.ops.attention_config import AttentionConfig

CACHE = "cache"

# How each attention variant attends from new queries at positions ``index + t`` to the cache slots:
#   "mask":      an explicit visibility mask ``j <= index + t`` with ``is_causal=False``. Right for variants whose
#                logits depend on (query, key) pairs only and whose normalization on the visible keys
#                (softmax; SSMax counts n_i from the mask);
#   "positions": the mask, and FIRE's ``positions``/``key_positions`` set to the absolute positions (its bias
#                and its progressive interpolation read ``i`` and ``j``);
#   "cumsums":   the mask, and FoX's gate sums: the layer caches the cumulative sums ``c_j`` of the log forget
#                gates of its past keys and continues them over the new tokens (``forget_cumsums``);
#   "offset":    ``is_causal=True`` with ``query_offset=index`` (stick-breaking walks back from the query's own
#                key; CoPE counts gates from the key to the query): the op places query ``t`` at key ``index + t``.
DECODE_RULES: dict[str, str] = {
    "dot_product": "mask", "softmax_temperature": "mask", "cosine": "mask", "l2": "mask", "additive": "mask",
    "multiplicative": "mask", "ssmax": "mask", "fire": "positions", "forgetting": "cumsums",
    "stick_breaking": "offset", "cope": "offset",
}
# Why the others cannot decode from this cache (a sigmoid_bias option makes "sigmoid" a "mask" variant).
NOT_DECODABLE = {
    "sigmoid": "its default bias -log(S) depends on the number of key slots S, not on the keys a query sees "
               "(set the sigmoid_bias option to decode it)",
    "local": "its window is measured between query and key indices, which differ in a cache",
    "linear": "causal linear attention decodes from a running state, not from cached keys",
    "performer": "causal linear attention decodes from a running state, not from cached keys",
}
# Options that read query/key *indices* (which in a cache are not positions): a variant with one cannot decode.
INDEX_OPTIONS = ("local_window_size", "mask_mod", "score_mod")

MISSING_CACHE = ("decode=True needs the 'cache' collection: build it with attnjax.train.decode.init_cache(model, "
                 "batch_size, max_length, input_size) (or model.init(rng, inputs [B, max_length, ...], "
                 "decode=True)['cache']) and pass it as apply({'params': ..., 'cache': cache}, ..., decode=True, "
                 "mutable=['cache'])")


def decode_rule(attention: AttentionConfig) -> str:
    """The :data:`DECODE_RULES` entry of ``attention``.

    Raises:
        ValueError: a variant that cannot decode from a cache (named, with why and the ones that can), or an
            option that reads indices (``local_window_size``, ``mask_mod``, ``score_mod``).
    """
    name, options = attention.name, dict(attention.options)
    rule = "mask" if name == "sigmoid" and options.get("sigmoid_bias") is not None else DECODE_RULES.get(name)
    if rule is None:
        why = NOT_DECODABLE.get(name, "no cached form of it is written")
        raise ValueError(f"attention {name!r} cannot decode with a key/value cache: {why}. Variants that can: "
                         f"{', '.join(sorted(DECODE_RULES))}")
    bad = sorted(k for k in INDEX_OPTIONS if options.get(k) is not None)
    if bad:
        raise ValueError(f"attention {name!r} with option(s) {bad} cannot decode with a key/value cache: they are "
                         f"evaluated on query/key indices, which in a cache are not the tokens' positions")
    return rule


def has_cache(module: nn.Module, name: str) -> bool:
    """Whether ``module`` decodes from its cache entry ``name`` (True), or is being initialized with
    ``decode=True`` and creates its cache (False: it then runs as in a normal call).

    Raises:
        ValueError: no cache outside ``init`` (:data:`MISSING_CACHE`), or a cache that is not mutable.
    """
    if module.has_variable(CACHE, name):
        if not module.is_mutable_collection(CACHE):
            raise ValueError(f"decode=True writes the new tokens into the 'cache' collection: pass mutable=['cache'] "
                             f"to apply (module {module.name!r})")
        return True
    if module.is_initializing():
        return False
    raise ValueError(MISSING_CACHE)


def check_room(index: jax.Array, length: int, slots: int) -> None:
    """Raises ValueError when ``length`` new tokens do not fit in the ``slots`` of a cache holding ``index``
    (checked here when ``index`` is concrete, i.e. outside ``jit``; under ``jit`` see :func:`poison_overflow`)."""
    if length > slots:
        raise ValueError(f"decode=True got {length} new tokens, more than the cache's max length {slots}; build the "
                         f"cache for a longer max_length")
    if not isinstance(index, jax.core.Tracer) and int(index) + length > slots:
        raise ValueError(f"decoding past the cache: it holds {int(index)} of max length {slots} tokens and got "
                         f"{length} more; build the cache for a longer max_length")


def poison_overflow(x: jax.Array, index: jax.Array, length: int, slots: int) -> jax.Array:
    """``x`` where the new tokens fit in the cache, NaN where they do not: under ``jit`` the index is traced, so
    decoding past the cache cannot raise, and a write past its end would silently overwrite its last slots."""
    return jnp.where(index + length <= slots, x, jnp.asarray(jnp.nan, x.dtype))


def write(cache: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
    """``new [B, T, ...]`` written into ``cache [B, L, ...]`` at slots ``index .. index + T - 1``."""
    return lax.dynamic_update_slice_in_dim(cache, new.astype(cache.dtype), index, axis=1)


def cached_attention(module: nn.Module, attention: AttentionConfig, query: jax.Array, key: jax.Array,
                     value: jax.Array, bias: jax.Array | None, kwargs: dict[str, Any]) -> jax.Array | None:
    """Self-attention of ``T`` new tokens to everything the layer ``module`` has cached, the new tokens included.

    Args:
        module: the attention layer (its ``"cache"`` variables are read and written).
        attention: the layer's attention.
        query: ``[B, T, N, H]`` (RoPE applied at the absolute positions); key, value: ``[B, T, K, H]``.
        bias: None or ``[1|B, N, T, L]`` over the ``L`` cache slots (a positional bias at absolute positions).
        kwargs: the variant's keywords (its params, ``log_forget`` of the new tokens, positional hooks).

    Returns:
        ``[B, T, N, H]``, or None while the model is initialized with ``decode=True`` (the cache is then
        created for ``L = T`` tokens and the caller attends as usual).

    Raises:
        ValueError: see :func:`decode_rule`, :func:`has_cache`, :func:`check_room`; a cache built for another
            batch size or head layout.
    """
    rule = decode_rule(attention)
    B, T, N, _ = query.shape
    exists = has_cache(module, "cached_key")
    keys = module.variable(CACHE, "cached_key", jnp.zeros, key.shape, key.dtype)
    values = module.variable(CACHE, "cached_value", jnp.zeros, value.shape, value.dtype)
    index_var = module.variable(CACHE, "cache_index", lambda: jnp.zeros((), jnp.int32))
    sums = (module.variable(CACHE, "cached_forget_cumsum", jnp.zeros, (B, T, N), jnp.float32)
            if rule == "cumsums" else None)
    if not exists:
        return None
    cached = keys.value.shape
    if cached[0] != B or cached[2:] != key.shape[2:]:
        raise ValueError(f"the cache holds keys [B, L, K, H] = {cached}, but the new tokens' keys are {key.shape}: "
                         f"build the cache for batch size {B}")
    L = cached[1]
    index = index_var.value
    check_room(index, T, L)
    keys.value, values.value = write(keys.value, key, index), write(values.value, value, index)
    index_var.value = index + T
    q_pos = index + jnp.arange(T, dtype=jnp.int32)
    k_pos = jnp.arange(L, dtype=jnp.int32)
    visible = (k_pos[None, :] <= q_pos[:, None])[None, None]  # [1, 1, T, L]
    call = dict(kwargs)
    if rule == "offset":
        mask, causal, call["query_offset"] = None, True, index
    else:
        mask, causal = visible, False
    if rule == "positions":
        if call.get("positions") is not None or call.get("key_positions") is not None:
            raise ValueError(f"attention {attention.name!r} was given positions of its own, which decoding from a "
                             f"cache does not know how to continue; it decodes at the tokens' indices only")
        call.update(positions=q_pos, key_positions=k_pos)
    elif rule == "cumsums":
        log_forget = call.pop("log_forget")  # [B, T, N] of the new tokens
        before = lax.dynamic_index_in_dim(sums.value, jnp.maximum(index - 1, 0), axis=1, keepdims=False)
        new = jnp.where(index > 0, before, 0.0)[:, None] + jnp.cumsum(log_forget.astype(jnp.float32), axis=1)
        sums.value = write(sums.value, new, index)
        call["forget_cumsums"] = (new, sums.value)
    out = attention.spec.fn(query, keys.value, values.value, bias, mask, is_causal=causal, **call)
    return poison_overflow(out, index, T, L)


__all__ = ["CACHE", "DECODE_RULES", "INDEX_OPTIONS", "MISSING_CACHE", "NOT_DECODABLE", "cached_attention",
           "check_room", "decode_rule", "has_cache", "poison_overflow", "write"]
