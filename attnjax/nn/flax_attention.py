"""``flax_attention_fn``: attnjax attention behind Flax's ``attention_fn`` calling convention.

``flax.linen.MultiHeadDotProductAttention(attention_fn=...)`` calls its attention function the way it
calls ``flax.linen.dot_product_attention``: ``[batch..., L, heads, depth]`` arrays, a float or boolean
``mask``, dropout keywords driven by ``deterministic``, ``dtype``/``precision``, and ``module=self``
when asked to sow the weights. ``attnjax.dot_product_attention`` takes ``jax.nn``'s convention instead
(no ``deterministic``, boolean masks only, one batch dim), so it cannot be passed there directly. This
module adapts the one to the other::

    nn.MultiHeadDotProductAttention(num_heads=8, dropout_rate=0.1, attention_fn=flax_attention_fn)
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype

from attnjax.ops import attention_weights, dot_product_attention

_PRESETS = jax.lax.DotAlgorithmPreset


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def _check_qkv(query, key, value) -> None:
    """Flax's asserts on the layout, as ValueErrors naming the arguments and their shapes."""
    shapes = f"query {_shape(query)}, key {_shape(key)}, value {_shape(value)}"
    if not (query.ndim == key.ndim == value.ndim):
        raise ValueError(f"query, key and value must have the same rank [batch..., length, num_heads, depth], "
                         f"got {shapes}")
    if query.ndim < 3:
        raise ValueError(f"query, key and value must have rank >= 3 [batch..., length, num_heads, depth], "
                         f"got {shapes}")
    if not (query.shape[:-3] == key.shape[:-3] == value.shape[:-3]):
        raise ValueError(f"query, key and value batch dims (all but the last 3) must match, got {shapes}")
    if not (query.shape[-2] == key.shape[-2] == value.shape[-2]):
        raise ValueError(f"query, key and value num_heads (axis -2) must match, got {shapes}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key depths (axis -1) must match, got {shapes}")
    if key.shape[-3] != value.shape[-3]:
        raise ValueError(f"key and value lengths (axis -3) must match, got {shapes}")


def _fold(name: str, x: Any, batch_shape: tuple[int, ...], tail: tuple[int, int, int]) -> jnp.ndarray:
    """``x``, numpy-broadcastable to ``batch_shape + tail`` (``tail = (N, T, S)``), as rank 4 ``[B|1, ...]``.

    The batch dims are folded into one: kept as 1 when ``x`` is 1 along all of them, else broadcast
    and flattened to ``B = prod(batch_shape)``. The ``N, T, S`` dims stay as given (1 or full).
    """
    full = tuple(batch_shape) + tuple(tail)
    shape = _shape(x)
    if len(shape) > len(full) or any(d not in (1, f) for d, f in zip(shape[::-1], full[::-1])):
        raise ValueError(f"{name} must be broadcastable to [batch..., num_heads, q_len, kv_len] = {full} "
                         f"(rank <= {len(full)}, each trailing dim 1 or equal), got shape {shape}")
    x = jnp.reshape(jnp.asarray(x), (1,) * (len(full) - len(shape)) + shape)
    nb = len(batch_shape)
    if all(d == 1 for d in x.shape[:nb]):
        return x.reshape((1,) + x.shape[nb:])
    x = jnp.broadcast_to(x, tuple(batch_shape) + x.shape[nb:])
    return x.reshape((math.prod(batch_shape),) + x.shape[nb:])


def _precision_name(precision: Any) -> str | None:
    """One ``lax.Precision``, its name, a ``lax.DotAlgorithmPreset`` or a preset's name, as a
    ``jax.default_matmul_precision`` value (None: not one of these)."""
    if isinstance(precision, str):
        if precision in _PRESETS.__members__:
            precision = _PRESETS[precision]
        else:
            try:
                precision = jax.lax.Precision(precision)
            except ValueError:
                return None
    if isinstance(precision, jax.lax.Precision):
        return precision.name.lower()
    if isinstance(precision, _PRESETS):
        return "default" if precision == _PRESETS.DEFAULT else precision.name
    return None


def _matmul_precision_name(precision: Any) -> str:
    """The ``jax.default_matmul_precision`` value equal to ``precision`` for attnjax's Q K^T product."""
    if (isinstance(precision, (tuple, list)) and len(precision) == 2
            and all(isinstance(p, (str, jax.lax.Precision)) for p in precision)):
        names = {_precision_name(p) for p in precision}
        name = names.pop() if len(names) == 1 else None
    else:
        name = _precision_name(precision)
    if name is None:
        raise ValueError(f"precision must be None, a lax.Precision or its name (a pair only if both are equal), or a "
                         f"lax.DotAlgorithmPreset or its name; per-operand pairs and custom lax.DotAlgorithm values "
                         f"cannot be applied to attnjax's Q K^T product, got {precision!r}")
    return name


def flax_attention_fn(
    query: jnp.ndarray,
    key: jnp.ndarray,
    value: jnp.ndarray,
    bias: jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    deterministic: bool = False,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    force_fp32_for_softmax: bool = False,
    einsum_dot_general: Callable[..., jnp.ndarray] | None = None,
    qk_attn_weights_einsum: Callable[..., jnp.ndarray] | None = None,
    attn_weights_value_einsum: Callable[..., jnp.ndarray] | None = None,
) -> jnp.ndarray:
    """``flax.linen.dot_product_attention``'s signature and semantics, computed by attnjax.

    Pass it as ``attention_fn`` to ``flax.linen.MultiHeadDotProductAttention`` (or call it directly).

    With nothing to do but attend (no dropout applied, no ``module``, ``precision=None``) it calls
    :func:`attnjax.dot_product_attention` (fused/blocked kernels where the platform has them).
    Otherwise it takes the float32 weights of :func:`attnjax.attention_weights`, sows and drops
    them out exactly as Flax does, and contracts them with ``value`` by ``jnp.einsum``.

    Args:
        query: ``[batch..., q_len, num_heads, depth]``; any number of batch dims, none included.
        key: ``[batch..., kv_len, num_heads, depth]``.
        value: ``[batch..., kv_len, num_heads, v_depth]``.
        bias: added to the logits, numpy-broadcastable to ``[batch..., num_heads, q_len, kv_len]``.
        mask: attend where nonzero (bool, or float 0/1 as ``flax.linen.make_attention_mask`` gives),
            numpy-broadcastable to ``[batch..., num_heads, q_len, kv_len]``.
        broadcast_dropout: one keep mask ``[1..., 1, q_len, kv_len]`` shared by the batch and head
            dims (Flax's default), else one per weight.
        dropout_rng: PRNG key, used only when dropout is applied. The keep mask is drawn with the
            same ``jax.random.bernoulli`` call as Flax's, so a given key drops the same weights.
        dropout_rate: dropout on the weights (inverted scaling), applied only when
            ``deterministic`` is False and the rate is positive.
        deterministic: True (how Flax modules signal evaluation) disables dropout.
        dtype: computation dtype: ``query``/``key``/``value`` are cast to it as Flax's
            ``promote_dtype`` does (None: their promoted dtype).
        precision: ``lax.Precision`` for both products (for Q K^T through
            ``jax.default_matmul_precision`` around attnjax's op, for the weights-times-values einsum
            directly).
        module: a Flax module (``MultiHeadDotProductAttention`` passes ``module=self`` when
            ``sow_weights=True``): the weights ``[batch..., num_heads, q_len, kv_len]``, before
            dropout, are sown as ``module.sow("intermediates", "attention_weights", weights)``.
        force_fp32_for_softmax: honoured, and then as in Flax the weights (and so the output) stay
            float32 for a lower-precision ``dtype``. Logits and softmax are float32 either way.
        einsum_dot_general, qk_attn_weights_einsum, attn_weights_value_einsum: accepted only as
            ``None`` (their default): attnjax computes Q K^T inside its own op, so a custom (e.g.
            quantized) einsum cannot be honoured; use ``flax.linen.dot_product_attention`` for that.

    Returns:
        ``[batch..., q_len, num_heads, v_depth]`` in ``dtype`` (float32 when
        ``force_fp32_for_softmax`` and ``dtype`` is lower precision), like Flax's.

    Numerics differ from Flax's function in one intended way: **a query row whose keys are all
    masked gives zeros** (and zero weights), where Flax, masking with ``finfo.min``, gives the mean of
    the values (uniform weights). Otherwise they agree to float32 rounding in float32.

    **In bfloat16 (or float16) they differ by up to about 1e-2 on rows with visible keys** (a few
    bfloat16 steps of an output of size ~1): attnjax keeps the logits and the softmax in float32 and
    rounds only the result, where Flax rounds the logits and the weights to ``dtype`` too. attnjax's
    output is the closer of the two to float32 attention on the same (rounded) inputs; compare
    low-precision results with a tolerance of that size, not float32's.

    Raises:
        ValueError: mismatched ``query``/``key``/``value`` shapes, a ``mask`` or ``bias`` not
            broadcastable to the weights, a ``dropout_rate`` outside ``[0, 1)`` when applied or a
            missing ``dropout_rng``, an unsupported ``precision``, or a non-None
            ``einsum_dot_general``/``qk_attn_weights_einsum``/``attn_weights_value_einsum``.
    """
    for name, fn in (("einsum_dot_general", einsum_dot_general), ("qk_attn_weights_einsum", qk_attn_weights_einsum),
                     ("attn_weights_value_einsum", attn_weights_value_einsum)):
        if fn is not None:
            raise ValueError(f"{name} must be None for attnjax.nn.flax_attention_fn (attnjax computes Q K^T "
                             f"inside its own op, so a custom einsum cannot be honoured), got {fn!r}; use "
                             f"flax.linen.dot_product_attention for custom or quantized einsums")
    apply_dropout = check_dropout(dropout_rate, dropout_rng, deterministic)
    query, key, value = promote_dtype(query, key, value, dtype=dtype)
    dtype = query.dtype
    _check_qkv(query, key, value)
    # Flax keeps force-fp32 weights in float32, so they (and the output) are float32 for bf16 inputs.
    weights_dtype = jnp.float32 if force_fp32_for_softmax and dtype != jnp.float32 else dtype
    sow = None if module is None else (lambda w: module.sow("intermediates", "attention_weights", w))
    return attend(query, key, value, bias=bias, mask=mask, is_causal=False, apply_dropout=apply_dropout,
                  broadcast_dropout=broadcast_dropout, dropout_rng=dropout_rng, dropout_rate=dropout_rate,
                  precision=precision, weights_dtype=weights_dtype, sow=sow)


def check_dropout(dropout_rate: float, dropout_rng: Any, deterministic: bool) -> bool:
    """Whether Flax's dropout keywords ask for dropout; raises ValueError on a bad rate or a missing key."""
    if dropout_rate < 0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
    apply_dropout = not deterministic and dropout_rate > 0.0
    if apply_dropout:
        if dropout_rate >= 1:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
        if dropout_rng is None:
            raise ValueError(f"dropout_rate={dropout_rate} with deterministic=False needs a dropout_rng key, got None "
                             f"(pass deterministic=True to evaluate without dropout)")
    return apply_dropout


def attend(query: jnp.ndarray, key: jnp.ndarray, value: jnp.ndarray, *, bias: Any, mask: Any, is_causal: bool,
           apply_dropout: bool, broadcast_dropout: bool, dropout_rng: jax.Array | None, dropout_rate: float,
           precision: Any, weights_dtype: Any, sow: Callable[[jnp.ndarray], Any] | None) -> jnp.ndarray:
    """The computation both Flax adapters share, on checked ``[batch..., L, heads, depth]`` arrays of one dtype.

    ``key``/``value`` may have ``K`` heads dividing the query's ``N`` (grouped-query attention; query head
    ``n`` reads key/value head ``n // (N // K)``, as ``jax.nn`` and ``flax.nnx`` group them). With nothing to
    do but attend (no dropout applied, no ``sow``, ``precision=None``) it calls
    :func:`attnjax.dot_product_attention`; otherwise it takes the float32 weights of
    :func:`attnjax.attention_weights`, casts them to ``weights_dtype``, passes them to ``sow``, drops them out
    as Flax does and contracts them with ``value``. Returns ``[batch..., q_len, N, v_depth]`` in the result
    type of ``weights_dtype`` and the inputs' dtype.
    """
    dtype = query.dtype
    qk_precision = None if precision is None else _matmul_precision_name(precision)
    out_dtype = jnp.result_type(weights_dtype, dtype)
    batch_shape = query.shape[:-3]
    T, N = query.shape[-3:-1]
    S, K = key.shape[-3:-1]
    B = math.prod(batch_shape)
    q4, k4, v4 = (x.reshape((B,) + x.shape[-3:]) for x in (query, key, value))
    if mask is not None:
        mask = _fold("mask", mask, batch_shape, (N, T, S))
        if mask.dtype != jnp.bool_:
            mask = mask != 0  # Flax's jnp.where(mask, ...) attends where the mask is nonzero
    if bias is not None:
        bias = _fold("bias", bias, batch_shape, (N, T, S))
        if not jnp.issubdtype(bias.dtype, jnp.floating):
            bias = bias.astype(jnp.float32)

    if not apply_dropout and sow is None and precision is None:
        out = dot_product_attention(q4, k4, v4, bias=bias, mask=mask, is_causal=is_causal)  # [B, T, N, Hv]
        return out.reshape(tuple(batch_shape) + out.shape[1:]).astype(out_dtype)

    if qk_precision is None:
        probs = attention_weights(q4, k4, bias=bias, mask=mask, is_causal=is_causal)  # [B, N, T, S] float32
    else:
        with jax.default_matmul_precision(qk_precision):
            probs = attention_weights(q4, k4, bias=bias, mask=mask, is_causal=is_causal)
    weights = probs.reshape(tuple(batch_shape) + (N, T, S)).astype(weights_dtype)
    if sow is not None:
        sow(weights)
    if apply_dropout:
        # The same draw as flax's dot_product_attention_weights (linen and nnx), on the unfolded shape.
        keep_prob = 1.0 - dropout_rate
        if broadcast_dropout:
            keep = jax.random.bernoulli(dropout_rng, keep_prob, (1,) * (key.ndim - 2) + weights.shape[-2:])
        else:
            keep = jax.random.bernoulli(dropout_rng, keep_prob, weights.shape)
        weights = weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype=dtype))
    accumulate = jnp.promote_types(jnp.result_type(weights, value), jnp.float32)
    G = N // K
    grouped = weights.reshape(weights.shape[:-3] + (K, G, T, S))  # query head n = k * G + g
    out = jnp.einsum("...kgqs,...skd->...qkgd", grouped, value, precision=precision,
                     preferred_element_type=accumulate)
    return out.reshape(out.shape[:-3] + (N, out.shape[-1])).astype(out_dtype)
