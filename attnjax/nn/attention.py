"""Multi-head attention layer: parameters and projections here, the attention formula in ``attnjax.ops``."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.nn.kv_cache import cached_attention
from attnjax.ops.attention_config import AttentionConfig
from attnjax.ops.positional import rope

# Keywords that change how an attention output is computed (or perturb it in training) but not the
# attention weights themselves: they are not passed to a variant's ``weights_fn``.
EXECUTION_ONLY_KEYWORDS = frozenset({"dropout_rate", "dropout_rng", "implementation", "block_sizes", "chunk_size",
                                     "block_size"})


class MultiHeadAttention(nn.Module):
    """Projects to ``N`` query heads and ``K`` key/value heads, attends, projects back to ``D``.

    Parameter names and shapes match ``flax.linen.MultiHeadDotProductAttention`` (``query``/``key``/
    ``value`` kernels ``[D, heads, H]``, ``out`` kernel ``[N, H, D]``), so weights move between the two.

    Attributes:
        num_heads: ``N`` query heads.
        num_kv_heads: ``K`` key/value heads, dividing ``N`` (``K < N``: grouped-query, ``K == 1``:
            multi-query); ``None`` means ``N``.
        head_dim: ``H``.
        out_features: output size; ``None`` keeps the query input's ``D``.
        attention: the attention: an :class:`attnjax.ops.AttentionConfig` (variant, its fixed options,
            implementation, block sizes) or a variant name of :data:`attnjax.ops.registry.ATTENTION`. The
            variant's own parameters (a temperature, score projections, random features) become the
            ``attention_params`` entry of this layer's params; fixed ones (Performer features) are read
            through ``stop_gradient``. A variant with ``spec.input_params`` (``"forgetting"``) also gets
            ``attention_input_params``, which map ``inputs_q`` to keywords of the variant (its forget gates) at
            every call. Call-time ``**attention_kwargs`` win over its options.
        attention_fn: a custom ``(query [B,T,N,H], key [B,S,K,H], value, bias, mask, **kwargs) ->
            [B,T,N,H]`` with the keywords of ``jax.nn.dot_product_attention``; overrides ``attention``.
        dropout_rate: dropout on the attention weights, passed to the op as ``dropout_rate`` with
            ``dropout_rng = make_rng("dropout")`` when called with ``deterministic=False``.
        sow_weights: sow the ``[B, N, T, S]`` float32 attention weights (from the variant's registered
            ``weights_fn``) into the ``"intermediates"`` collection as ``attention_weights``. Off: the
            weights are never computed.
        rope_fraction: share of each head rotated when ``rotary_positions`` are given (partial RoPE).
        rope_base: RoPE frequency base.
        use_bias: biases on the projections.
        dtype: computation dtype (``None``: inferred from inputs and params).
        param_dtype: parameter dtype.
        kernel_init: initializer of every projection kernel.
    """

    num_heads: int
    head_dim: int
    num_kv_heads: int | None = None
    out_features: int | None = None
    attention: AttentionConfig | str = AttentionConfig()
    attention_fn: Callable[..., jnp.ndarray] | None = None
    dropout_rate: float = 0.0
    sow_weights: bool = False
    rope_fraction: float = 1.0
    rope_base: float = 10_000.0
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, inputs_q: jnp.ndarray, inputs_kv: jnp.ndarray | None = None, *,
                 mask: jnp.ndarray | None = None, bias: jnp.ndarray | None = None, is_causal: bool = False,
                 query_seq_lengths: jnp.ndarray | None = None,
                 key_value_seq_lengths: jnp.ndarray | None = None,
                 rotary_positions: jnp.ndarray | None = None, deterministic: bool = True, decode: bool = False,
                 **attention_kwargs: Any) -> jnp.ndarray:
        """Attends from ``inputs_q [B, T, D]`` to ``inputs_kv [B, S, D]`` (self-attention if None).

        Args:
            inputs_q: ``[B, T, D]``.
            inputs_kv: ``[B, S, Dkv]`` or None.
            mask: boolean ``True`` = attend, broadcastable to ``[B, N, T, S]``.
            bias: added to the logits, broadcastable to ``[B, N, T, S]``.
            is_causal: query ``i`` sees keys ``j <= i``.
            query_seq_lengths: ``[B]``; padded queries output zeros before the out projection.
            key_value_seq_lengths: ``[B]``; keys past the length are ignored (key padding).
            rotary_positions: ``[T]`` or ``[B, T]`` positions; if given, queries and keys are rotated (RoPE,
                self-attention only).
            deterministic: no attention dropout (evaluation); False needs a ``'dropout'`` rng when
                ``dropout_rate > 0``.
            decode: causal self-attention of new tokens to every token read before, kept in the ``"cache"``
                collection (:mod:`attnjax.nn.kv_cache`; under ``init`` the cache is created for the input's
                length); ``rotary_positions`` and ``bias`` must then be those of the new tokens at their
                absolute positions (``bias`` over the cache slots), and the other masks None.
            **attention_kwargs: passed to ``attention_fn`` (e.g. ``local_window_size``).

        Returns:
            ``[B, T, out_features or D]``.

        Raises:
            ValueError: non rank-3 inputs, ``num_heads`` not divisible by ``num_kv_heads``, or
                ``sow_weights`` with a custom ``attention_fn`` (no registered ``weights_fn``); with ``decode``,
                anything but causal self-attention without masks, lengths, dropout or sown weights, an attention
                that cannot decode from a cache, or a missing or full cache (:mod:`attnjax.nn.kv_cache`).
        """
        kv_heads = self.num_heads if self.num_kv_heads is None else self.num_kv_heads
        if kv_heads < 1 or self.num_heads % kv_heads != 0:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={kv_heads}")
        inputs_kv = inputs_q if inputs_kv is None else inputs_kv
        for name, x in (("inputs_q", inputs_q), ("inputs_kv", inputs_kv)):
            if x.ndim != 3:
                raise ValueError(f"{name} must have rank 3 [B, L, D], got shape {x.shape}")
        proj = lambda name, heads: nn.DenseGeneral(  # noqa: E731 - four identical projections
            (heads, self.head_dim), use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=self.kernel_init, name=name)
        query = proj("query", self.num_heads)(inputs_q)  # [B, T, N, H]
        key = proj("key", kv_heads)(inputs_kv)  # [B, S, K, H]
        value = proj("value", kv_heads)(inputs_kv)  # [B, S, K, H]
        if rotary_positions is not None:
            query = rope(query, rotary_positions, base=self.rope_base, fraction=self.rope_fraction)
            key = rope(key, rotary_positions, base=self.rope_base, fraction=self.rope_fraction)
        attention_fn, spec = self.attention_fn, None
        if attention_fn is None:
            attention = AttentionConfig.of(self.attention)
            spec = attention.spec
            attention_fn = spec.fn
            attention_kwargs = {**attention.keywords(), **attention_kwargs}
            if spec.init_params is not None:
                params = self.param("attention_params", lambda rng: spec.init_params(
                    rng, head_dim=self.head_dim, num_heads=self.num_heads, **attention.init_options()))
                if not spec.trainable_params:
                    params = jax.lax.stop_gradient(params)
                attention_kwargs = {**params, **attention_kwargs}
            if spec.input_params is not None:  # keywords computed from the input (FoX's forget gates)
                input_params = self.param("attention_input_params", lambda rng: spec.input_params.init(
                    rng, input_dim=inputs_q.shape[-1], num_heads=self.num_heads))
                attention_kwargs = {**spec.input_params.keywords(input_params, inputs_q), **attention_kwargs}
        project = nn.DenseGeneral(self.out_features or inputs_q.shape[-1], axis=(-2, -1), use_bias=self.use_bias,
                                  dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=self.kernel_init,
                                  name="out")
        if decode:
            self._check_decode(inputs_q is not inputs_kv, mask, is_causal, query_seq_lengths, key_value_seq_lengths,
                               deterministic)
            out = cached_attention(self, AttentionConfig.of(self.attention), query, key, value, bias, attention_kwargs)
            if out is not None:  # None under init: the cache was just created, attend as a normal call does
                return project(out)
        masks = dict(is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                     key_value_seq_lengths=key_value_seq_lengths)
        if self.sow_weights and (spec is None or spec.weights_fn is None):
            raise ValueError(f"sow_weights needs a registered attention with a weights_fn, got attention_fn="
                             f"{self.attention_fn!r} / attention={self.attention!r}")
        if self.sow_weights and self.is_mutable_collection("intermediates"):
            # The weights function takes the variant's math options only, not how the output is computed.
            math_kwargs = {k: v for k, v in attention_kwargs.items() if k not in EXECUTION_ONLY_KEYWORDS}
            self.sow("intermediates", "attention_weights", spec.weights_fn(query, key, bias, mask, **masks,
                                                                           **math_kwargs))
        run_kwargs = {}
        if self.dropout_rate > 0.0 and not deterministic:
            run_kwargs.update(dropout_rate=self.dropout_rate, dropout_rng=self.make_rng("dropout"))
        out = attention_fn(query, key, value, bias, mask, **masks, **{**run_kwargs, **attention_kwargs})
        return project(out)

    def _check_decode(self, cross: bool, mask, is_causal: bool, query_seq_lengths, key_value_seq_lengths,
                      deterministic: bool) -> None:
        """What ``decode=True`` cannot do, each named (the attention itself is checked by the cache)."""
        unsupported = {"inputs_kv": cross, "is_causal=False": not is_causal, "mask": mask is not None,
                       "query_seq_lengths": query_seq_lengths is not None,
                       "key_value_seq_lengths": key_value_seq_lengths is not None,
                       "attention_fn": self.attention_fn is not None, "sow_weights": self.sow_weights,
                       "dropout (deterministic=False)": self.dropout_rate > 0 and not deterministic}
        bad = [name for name, is_bad in unsupported.items() if is_bad]
        if bad:
            raise ValueError(f"decode=True is causal self-attention of new tokens to the cache, with no mask, lengths, "
                             f"custom attention_fn, sown weights or dropout; got {', '.join(bad)}")
