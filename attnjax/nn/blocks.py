"""The one Transformer block every attention model in :mod:`attnjax.nn` is built from.

:class:`TransformerBlock` is self-attention (+ cross-attention in a decoder) + feed-forward with pre- or
post-LayerNorm residuals; :class:`TransformerStack` adds positions, embedding dropout, the blocks and
(pre-LN) a final LayerNorm; :class:`Embedding`, :func:`pool` and :func:`readout` are the shared ends. The
models (:mod:`~attnjax.nn.transformer`, :mod:`~attnjax.nn.transformer_lm`,
:mod:`~attnjax.nn.transformer_seq2seq`, :mod:`~attnjax.nn.vit1d`) only embed, stack and read out.
"""

from __future__ import annotations

import inspect
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.nn.attention import MultiHeadAttention
from attnjax.nn.execution import Execution, check_sequence_parallel
from attnjax.nn.positional import PositionalEncoding, PositionalInputs
from attnjax.nn.tokens import embed_tokens
from attnjax.nn.transformer_config import ACTIVATIONS, KERNEL_INITS, TransformerConfig
from attnjax.ops import positional as P
from attnjax.ops.backends import select_implementation
from attnjax.ops.checks import normalize_window
from attnjax.ops.dot_product import IMPLEMENTATION_ALIASES, TAKES_MODS
from attnjax.parallel.sequence import RingAttentionFn, axis_is_bound, local_positions


def _layer_norm(cfg: TransformerConfig, run: Execution, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=cfg.norm_epsilon, dtype=run.dtype, name=name)


def _dense(cfg: TransformerConfig, run: Execution, features: int, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=run.dtype, kernel_init=KERNEL_INITS[cfg.kernel_init], name=name)


def _sequence_sharded(module: nn.Module, run: Execution) -> bool:
    """True when ``module`` sees one shard of a sequence split over ``run.sequence_parallel_axis``.

    ``init`` may run outside ``shard_map`` (the parameters do not depend on the split): it then sees the
    whole sequence. ``apply`` must run inside; ring attention raises otherwise.
    """
    if run.sequence_parallel_axis is None:
        return False
    return not (module.is_initializing() and not axis_is_bound(run.sequence_parallel_axis))


def bias_as_score_mod(cfg: TransformerConfig, run: Execution, *, batch: int, length: int, causal: bool,
                      has_lengths: bool, train: bool) -> bool:
    """Whether a logit-bias encoding (alibi, t5) reaches the attention as a ``score_mod`` (computed per tile,
    never an ``[N, L, L]`` array) rather than as ``bias``: when the variant takes the hook and the path its
    call runs evaluates it. With ``implementation=None`` that is the path ``dot_product_attention`` would pick
    for the materialized bias (:func:`attnjax.ops.select_implementation`), so the hook never moves a call off
    a faster kernel (cuDNN takes the materialized bias on GPU). Both forms give the same outputs and
    gradients from the same parameters."""
    attention = cfg.attention
    if P.get_positional(cfg.positional).kind != "bias" or run.sequence_parallel_axis is not None:
        return False
    if not {"score_mod", "score_mod_params"} <= set(inspect.signature(attention.spec.fn).parameters):
        return False
    implementation = attention.implementation
    if implementation is None:
        options = dict(attention.options)
        q_shape = (batch, length, cfg.num_heads, cfg.head_dim)
        kv_shape = (batch, length, cfg.num_kv_heads or cfg.num_heads, cfg.head_dim)
        implementation = select_implementation(
            jax.default_backend(), q_shape, kv_shape, kv_shape, run.dtype, has_bias=True, has_seq_lengths=has_lengths,
            is_causal=causal, window=normalize_window(options.get("local_window_size")),
            logit_softcap=options.get("logit_softcap"),
            dropout_rate=cfg.attention_dropout_rate if train else 0.0)
    return IMPLEMENTATION_ALIASES.get(implementation, implementation) in TAKES_MODS


def readout(cfg: TransformerConfig, run: Execution, output_size: int, h: jnp.ndarray) -> jnp.ndarray:
    """``[..., D]`` -> ``[..., C]`` float32 logits (a biased linear layer named ``logits``)."""
    return _dense(cfg, run, output_size, "logits")(h).astype(jnp.float32)


class Embedding(nn.Module):
    """Linear embedding ``[..., F] -> [..., D]`` (a table lookup for one-hot ``F = V``), times
    ``sqrt(D)`` if ``config.embed_scale``; :meth:`attend` is the transposed (tied) read-out.

    With ``vocab_size = V`` set, integer token ids ``[...]`` are looked up in the same ``[V, D]`` kernel
    (:func:`attnjax.nn.tokens.embed_tokens`): equal, values and gradients, to embedding their one-hot
    vectors ``[..., V]``, which are still accepted (and must then have ``F = V``).

    Attributes:
        config: :class:`TransformerConfig`.
        vocab_size: ``V`` for integer ids; None: float inputs only, ``F`` read from their last axis.
        execution: :class:`Execution` (its ``dtype``).
    """

    config: TransformerConfig
    vocab_size: int | None = None
    execution: Execution = Execution()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        cfg, dtype = self.config, self.execution.dtype
        init = (KERNEL_INITS[cfg.kernel_init] if cfg.embed_init_std is None
                else nn.initializers.truncated_normal(cfg.embed_init_std))
        ids = jnp.issubdtype(x.dtype, jnp.integer)
        if ids and self.vocab_size is None:
            raise ValueError(f"integer token ids {tuple(x.shape)} need Embedding.vocab_size (the config's "
                             f"vocab_size), got None")
        if not ids and self.vocab_size is not None and x.shape[-1] != self.vocab_size:
            raise ValueError(f"float inputs [..., F] must have F == vocab_size={self.vocab_size}, got shape {x.shape}")
        kernel = self.param("kernel", init, (self.vocab_size if ids else x.shape[-1], cfg.d_model))
        y = embed_tokens(x, kernel, dtype)
        if cfg.embed_bias:
            y = y + self.param("bias", nn.initializers.zeros, (cfg.d_model,)).astype(dtype)
        return y * jnp.asarray(math.sqrt(cfg.d_model), dtype) if cfg.embed_scale else y

    def attend(self, h: jnp.ndarray) -> jnp.ndarray:
        """``h [..., D] @ kernel^T -> [..., F]`` float32 (weight tying; no bias, no scale)."""
        kernel = self.get_variable("params", "kernel")
        return jnp.einsum("...D,FD->...F", h, kernel.astype(h.dtype)).astype(jnp.float32)


class TransformerBlock(nn.Module):
    """Self-attention, optional cross-attention to ``memory``, feed-forward; each a residual branch.

    ``norm="pre"``: ``x + Dropout(f(LN(x)))``; ``norm="post"``: ``LN(x + Dropout(f(x)))``.

    Attributes:
        config: :class:`TransformerConfig`.
        causal: causal self-attention.
        cross_attention: add a cross-attention branch (a decoder block).
        execution: :class:`Execution`.
    """

    config: TransformerConfig
    causal: bool = False
    cross_attention: bool = False
    execution: Execution = Execution()

    def _attention(self, name: str) -> MultiHeadAttention:
        cfg, run = self.config, self.execution
        # Sequence parallelism: attention over the split sequence goes round the ring (same parameters).
        ring = (RingAttentionFn(run.sequence_parallel_axis, run.sequence_parallel_layout)
                if _sequence_sharded(self, run) else None)
        return MultiHeadAttention(
            num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, attention=cfg.attention,
            attention_fn=ring, dropout_rate=cfg.attention_dropout_rate, sow_weights=run.sow_attention_weights,
            rope_fraction=cfg.rope_fraction, use_bias=cfg.attention_bias, dtype=run.dtype,
            kernel_init=KERNEL_INITS[cfg.kernel_init], name=name)

    def _residual(self, x, branch, name: str, train: bool):
        cfg, run = self.config, self.execution
        h = branch(_layer_norm(cfg, run, f"{name}_norm")(x) if cfg.norm == "pre" else x)
        x = x + nn.Dropout(cfg.dropout_rate, deterministic=not train)(h)
        return _layer_norm(cfg, run, f"{name}_norm")(x) if cfg.norm == "post" else x

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, seq_lengths: jnp.ndarray | None = None, train: bool = False,
                 positions: PositionalInputs = PositionalInputs(), memory: jnp.ndarray | None = None,
                 memory_lengths: jnp.ndarray | None = None, decode: bool = False) -> jnp.ndarray:
        """``x [B, T, D]`` (keys past ``seq_lengths [B]`` ignored), ``memory [B, S, D]`` (keys past
        ``memory_lengths [B]`` ignored; cross-attention only) -> ``[B, T, D]``; ``decode``: self-attention to the
        cache too (:mod:`attnjax.nn.kv_cache`)."""
        cfg = self.config
        hooks = {} if positions.score_mod is None else positions.score_mod.keywords()
        x = self._residual(x, lambda h: self._attention("attention")(
            h, bias=positions.bias, is_causal=self.causal, key_value_seq_lengths=seq_lengths,
            rotary_positions=positions.rotary_positions, deterministic=not train, **hooks,
            decode=decode), "attention", train)
        if self.cross_attention:
            if memory is None:
                raise ValueError("a cross-attention block needs memory [B, S, D], got None")
            # No positional bias or rotation across sequences: target and source positions are unrelated.
            x = self._residual(x, lambda h: self._attention("cross_attention")(
                h, memory, key_value_seq_lengths=memory_lengths, deterministic=not train), "cross_attention", train)

        def mlp(h):
            h = ACTIVATIONS[cfg.activation](_dense(cfg, self.execution, cfg.mlp_dim, "mlp_in")(h))
            return _dense(cfg, self.execution, cfg.d_model, "mlp_out")(h)

        return self._residual(x, mlp, "mlp", train)


class TransformerStack(nn.Module):
    """Embedded tokens ``[B, L, D]`` -> ``[B, L', D]``: positions, embedding dropout, the blocks, and
    (``norm="pre"``) a final LayerNorm.

    With ``config.pooling == "cls"`` a learned ``[D]`` token is prepended at position 0 (``L' = L + 1``).

    Attributes:
        config: :class:`TransformerConfig`.
        causal: causal self-attention (also makes ALiBi/T5 biases causal).
        cross_attention: decoder blocks attending to ``memory``.
        execution: :class:`Execution`.
    """

    config: TransformerConfig
    causal: bool = False
    cross_attention: bool = False
    execution: Execution = Execution()

    @nn.compact
    def __call__(self, x: jnp.ndarray, seq_lengths: jnp.ndarray | None = None, train: bool = False,
                 memory: jnp.ndarray | None = None, memory_lengths: jnp.ndarray | None = None,
                 decode: bool = False) -> jnp.ndarray:
        """Args: ``x [B, L, D]``; ``seq_lengths [B]`` (positions past it are padding, never attended to);
        ``train`` (dropout, randomized positions); ``memory [B, S, D]`` and ``memory_lengths [B]`` for
        cross-attention; ``decode``: ``x`` are the next tokens after those in the ``"cache"`` collection
        (:mod:`attnjax.nn.kv_cache`; causal self-attention only). Returns ``[B, L', D]``."""
        cfg, run = self.config, self.execution
        check_sequence_parallel(cfg, run)
        if decode:
            self._check_decode(seq_lengths, train)
        if run.sequence_parallel_axis is not None and self.cross_attention:
            raise ValueError(f"sequence_parallel_axis={run.sequence_parallel_axis!r} shards self-attention only; "
                             f"a decoder with cross-attention (the seq2seq model) is not sequence-parallel")
        if cfg.pooling == "cls":
            cls = self.param("cls", nn.initializers.zeros, (cfg.d_model,))
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, cfg.d_model)), x], axis=1)
            seq_lengths = None if seq_lengths is None else seq_lengths + 1
        positions = self._positions(x.shape[0], x.shape[1], seq_lengths, train, bias_as_score_mod(
            cfg, run, batch=x.shape[0], length=x.shape[1], causal=self.causal, has_lengths=seq_lengths is not None,
            train=train), decode)
        if positions.embedding is not None:
            x = x + positions.embedding.astype(x.dtype)
        x = nn.Dropout(cfg.dropout_rate, deterministic=not train)(x)
        for i in range(cfg.num_layers):
            x = TransformerBlock(cfg, self.causal, self.cross_attention, run, name=f"block_{i}")(
                x, seq_lengths=seq_lengths, train=train, positions=positions, memory=memory,
                memory_lengths=memory_lengths, decode=decode)
        return _layer_norm(cfg, run, "final_norm")(x) if cfg.norm == "pre" else x

    def _check_decode(self, seq_lengths, train: bool) -> None:
        """What decoding from a cache cannot do, each named."""
        cfg, run = self.config, self.execution
        unsupported = {"causal=False": not self.causal, "cross_attention": self.cross_attention,
                       "seq_lengths": seq_lengths is not None, "train": train, "pooling": cfg.pooling is not None,
                       "positions_from_end": cfg.positions_from_end,
                       "sequence_parallel_axis": run.sequence_parallel_axis is not None}
        bad = [name for name, is_bad in unsupported.items() if is_bad]
        if bad:
            raise ValueError(f"decode=True runs a causal decoder-only stack in evaluation on real tokens (no "
                             f"seq_lengths, pooling, positions counted from the end, or sequence parallelism); "
                             f"got {', '.join(bad)}")

    def _positions(self, batch: int, length: int, seq_lengths, train: bool, as_score_mod: bool,
                   decode: bool = False) -> PositionalInputs:
        cfg, run = self.config, self.execution
        index = None  # [length] global positions of the local tokens when sequence-parallel
        if _sequence_sharded(self, run):
            index, length = local_positions(run.sequence_parallel_axis, run.sequence_parallel_layout, length)
        if cfg.positions_from_end:
            # Counted from each sequence's own end, so padding never moves a real token's position.
            ends = jnp.full((batch,), length, jnp.int32) if seq_lengths is None else jnp.asarray(seq_lengths, jnp.int32)
            tokens = jnp.arange(length, dtype=jnp.int32) if index is None else index
            counts = ends[:, None] - tokens[None]
            return PositionalInputs(embedding=P.sinusoidal_encoding(counts, cfg.d_model))
        return PositionalEncoding(cfg.positional, cfg.d_model, cfg.num_heads, max_len=cfg.max_len, causal=self.causal,
                                  randomized=cfg.randomized_positions, randomized_eval=cfg.randomized_eval,
                                  bias_as_score_mod=as_score_mod, name="positional")(
            batch, length, train, index, decode=decode)


def classifier_inputs(inputs: jnp.ndarray) -> jnp.ndarray:
    """Classifier inputs ``[B, L]`` (one feature per position) or ``[B, L, F]`` -> ``[B, L, F]``.

    Raises:
        ValueError: any other rank.
    """
    if inputs.ndim == 2:
        return inputs[..., None]
    if inputs.ndim != 3:
        raise ValueError(f"inputs must have rank 2 [B, L] or 3 [B, L, F], got shape {inputs.shape}")
    return inputs


def pool(h: jnp.ndarray, seq_lengths: jnp.ndarray | None, pooling: str) -> jnp.ndarray:
    """``[B, L', D]`` stack outputs -> ``[B, D]``: the CLS output (position 0) or the mean over real positions.

    Args:
        h: stack outputs (with the CLS token first for ``"cls"``).
        seq_lengths: ``[B]`` real lengths *without* the CLS token; None: all real.
        pooling: ``"cls"`` or ``"mean"``.
    """
    if pooling == "cls":
        return h[:, 0]
    if seq_lengths is None:
        return jnp.mean(h, axis=1)
    real = (jnp.arange(h.shape[1])[None, :] < seq_lengths[:, None]).astype(h.dtype)[..., None]
    return jnp.sum(h * real, axis=1) / jnp.maximum(jnp.sum(real, axis=1), 1.0)
