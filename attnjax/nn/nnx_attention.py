"""``nnx_attention_fn``: attnjax attention behind Flax NNX's ``attention_fn`` calling convention.

``flax.nnx.MultiHeadAttention(attention_fn=...)`` calls its attention function the way it calls
``flax.nnx.dot_product_attention``: the keywords of the linen convention (:func:`~attnjax.nn.flax_attention_fn`)
less the custom einsums, plus ``is_causal``, a ``promote_dtype`` function that takes one tuple, and key/value
heads that may divide the query heads (grouped-query attention). Weights are sown into the ``nnx.Intermediate``
collection. Pass it as::

    nnx.MultiHeadAttention(num_heads=8, in_features=64, attention_fn=attnjax.nn.nnx_attention_fn, rngs=nnx.Rngs(0))

The zoo models are linen modules; NNX code uses them through ``flax.nnx.bridge``, parameters and all::

    encoder = nnx.bridge.ToNNX(attnjax.nn.build_model("transformer", 10, dict(d_model=64)), rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(encoder, x)            # x: [B, L, V], like linen's init
    logits = encoder(x, seq_lengths=lengths)    # equal to model.apply({"params": ...}, x, seq_lengths=lengths)

Flax NNX is imported only when this function needs it (to sow, or for its default ``promote_dtype``), so
``import attnjax.nn`` does not load it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from attnjax.nn.flax_attention import attend, check_dropout


def _check_qkv(query, key, value) -> None:
    """``flax.nnx.dot_product_attention``'s layout, as ValueErrors naming the arguments and their shapes."""
    shapes = f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
    if not (query.ndim == key.ndim == value.ndim):
        raise ValueError(f"query, key and value must have the same rank [batch..., length, num_heads, depth], "
                         f"got {shapes}")
    if query.ndim < 3:
        raise ValueError(f"query, key and value must have rank >= 3 [batch..., length, num_heads, depth], "
                         f"got {shapes}")
    if not (query.shape[:-3] == key.shape[:-3] == value.shape[:-3]):
        raise ValueError(f"query, key and value batch dims (all but the last 3) must match, got {shapes}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key depths (axis -1) must match, got {shapes}")
    if key.shape[-3:-1] != value.shape[-3:-1]:
        raise ValueError(f"key and value lengths and num_heads (axes -3, -2) must match, got {shapes}")
    n, k = query.shape[-2], key.shape[-2]
    if k == 0 or n % k != 0:
        raise ValueError(f"query num_heads ({n}) must be a multiple of key/value num_heads ({k}) for grouped-query "
                         f"attention, got {shapes}")


def nnx_attention_fn(
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
    promote_dtype: Callable[..., tuple] | None = None,
    is_causal: bool = False,
) -> jnp.ndarray:
    """``flax.nnx.dot_product_attention``'s signature and semantics, computed by attnjax.

    Pass it as ``attention_fn`` to ``flax.nnx.MultiHeadAttention`` (or call it directly). The computation is
    the one :func:`~attnjax.nn.flax_attention_fn` does for linen: with nothing to do but attend (no dropout
    applied, no ``module``, ``precision=None``) one call of :func:`attnjax.dot_product_attention`; otherwise the
    float32 weights of :func:`attnjax.attention_weights`, sown, dropped out as Flax does, times ``value``.

    Args:
        query: ``[batch..., q_len, num_heads, depth]``; any number of batch dims, none included.
        key: ``[batch..., kv_len, num_kv_heads, depth]``; ``num_kv_heads`` divides ``num_heads``
            (grouped-query attention: query head ``n`` reads key/value head ``n // (num_heads // num_kv_heads)``,
            as ``jax.nn`` and ``flax.nnx`` group them).
        value: ``[batch..., kv_len, num_kv_heads, v_depth]``.
        bias: added to the logits, numpy-broadcastable to ``[batch..., num_heads, q_len, kv_len]``.
        mask: attend where nonzero (bool, or float 0/1 as ``nnx.make_attention_mask`` gives),
            numpy-broadcastable to ``[batch..., num_heads, q_len, kv_len]``.
        broadcast_dropout: one keep mask ``[1..., 1, q_len, kv_len]`` shared by the batch and head dims
            (Flax's default), else one per weight.
        dropout_rng: PRNG key, used only when dropout is applied; the keep mask is Flax's draw for the key.
        dropout_rate: dropout on the weights (inverted scaling), applied only when ``deterministic`` is False
            and the rate is positive.
        deterministic: True disables dropout.
        dtype: computation dtype: ``query``/``key``/``value`` are cast to it by ``promote_dtype``.
        precision: ``lax.Precision`` (or its name, or a ``lax.DotAlgorithmPreset``) for both products.
        module: an NNX module (``MultiHeadAttention`` passes ``module=self`` when ``sow_weights=True``): the
            weights ``[batch..., num_heads, q_len, kv_len]``, before dropout, are sown as
            ``module.sow(nnx.Intermediate, "attention_weights", weights)``.
        promote_dtype: ``promote_dtype((query, key, value), dtype=dtype) -> (query, key, value)``, as NNX
            takes it; None: ``flax.nnx.nn.dtypes.promote_dtype``.
        is_causal: query ``i`` sees keys ``j <= i`` (top-left aligned, as ``jax.nn`` and ``flax.nnx``), and-ed
            with ``mask``.

    Returns:
        ``[batch..., q_len, num_heads, v_depth]`` in ``dtype`` (the promoted dtype of the inputs when None).

    Differences from ``flax.nnx.dot_product_attention``, all intended:

    * **A query row whose keys are all masked gives zeros** (and zero weights); Flax gives the mean of the
      values (uniform weights), on its fast path and on its weights path alike.
    * Logits and softmax are float32 for every ``dtype``: in bfloat16/float16 the two differ by up to about
      1e-2 on rows with visible keys, attnjax's being the closer to float32 attention (see
      :func:`~attnjax.nn.flax_attention_fn`).
    * ``precision`` is honoured on every path; Flax's path without dropout or ``module`` calls
      ``jax.nn.dot_product_attention``, which takes none, and drops it.
    * With ``dropout_rate > 0`` and ``deterministic=True`` there is nothing to drop, so the fused call runs;
      Flax takes its weights path there. The values agree either way.

    Raises:
        ValueError: mismatched ``query``/``key``/``value`` shapes (including ``num_heads`` not a multiple of
            the key/value heads), a ``mask`` or ``bias`` not broadcastable to the weights, a ``dropout_rate``
            outside ``[0, 1)`` when applied or a missing ``dropout_rng``, or an unsupported ``precision``.
    """
    apply_dropout = check_dropout(dropout_rate, dropout_rng, deterministic)
    if promote_dtype is None:
        from flax.nnx.nn.dtypes import promote_dtype
    query, key, value = promote_dtype((query, key, value), dtype=dtype)
    _check_qkv(query, key, value)
    sow = None
    if module is not None:
        from flax import nnx

        sow = lambda w: module.sow(nnx.Intermediate, "attention_weights", w)  # noqa: E731
    return attend(query, key, value, bias=bias, mask=mask, is_causal=bool(is_causal), apply_dropout=apply_dropout,
                  broadcast_dropout=broadcast_dropout, dropout_rng=dropout_rng, dropout_rate=dropout_rate,
                  precision=precision, weights_dtype=query.dtype, sow=sow)


__all__ = ["nnx_attention_fn"]
