"""Pre-LayerNorm Transformer encoder mapping ``[B, L, V]`` inputs to per-position logits ``[B, L, C]``."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from attnjax.nn.attention import MultiHeadAttention
from attnjax.nn.positional import PositionalEncoding, PositionalInputs
from attnjax.ops.positional import get_positional
from attnjax.ops.registry import get_spec


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of :class:`TransformerEncoder` (frozen: hashable, a valid jit static arg).

    Attributes:
        num_layers: pre-LN blocks.
        d_model: ``D``.
        num_heads: ``N``; ``d_model`` must be divisible by it (head dim ``H = D // N``).
        num_kv_heads: ``K`` (None: ``N``).
        mlp_dim: hidden size of the feed-forward block.
        dropout_rate: dropout on the residual branches (train mode only).
        attention: a variant name in :data:`attnjax.ops.registry.ATTENTION`.
        positional: an encoding name in :data:`attnjax.ops.positional.POSITIONAL`.
        max_len: learned-table size and the range of randomized training positions.
        rope_fraction: share of each head that RoPE rotates (``positional="rope"``).
        causal: causal self-attention (a decoder-style encoder); default bidirectional.
        dtype: computation dtype.
    """

    num_layers: int = 2
    d_model: int = 64
    num_heads: int = 4
    num_kv_heads: int | None = None
    mlp_dim: int = 128
    dropout_rate: float = 0.0
    attention: str = "dot_product"
    positional: str = "sinusoidal"
    max_len: int = 2048
    rope_fraction: float = 1.0
    causal: bool = False
    dtype: Any = jnp.float32

    def __post_init__(self):
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by num_heads={self.num_heads}")
        spec, positional = get_spec(self.attention), get_positional(self.positional)
        if positional.kind == "bias" and not spec.supports_bias:
            raise ValueError(f"positional={self.positional!r} adds a logit bias, which attention="
                             f"{self.attention!r} cannot take (it forms no logits); pick another pair")


class EncoderBlock(nn.Module):
    """``x + Attn(LN(x))`` then ``x + MLP(LN(x))``."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: jnp.ndarray, seq_lengths: jnp.ndarray | None, train: bool,
                 positions: PositionalInputs = PositionalInputs()) -> jnp.ndarray:
        cfg = self.config
        h = nn.LayerNorm(dtype=cfg.dtype)(x)
        h = MultiHeadAttention(num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads,
                               head_dim=cfg.d_model // cfg.num_heads, attention=cfg.attention,
                               rope_fraction=cfg.rope_fraction, dtype=cfg.dtype)(
            h, bias=positions.bias, is_causal=cfg.causal, key_value_seq_lengths=seq_lengths,
            rotary_positions=positions.rotary_positions)
        x = x + nn.Dropout(cfg.dropout_rate, deterministic=not train)(h)
        h = nn.LayerNorm(dtype=cfg.dtype)(x)
        h = nn.Dense(cfg.mlp_dim, dtype=cfg.dtype)(h)
        h = nn.Dense(cfg.d_model, dtype=cfg.dtype)(nn.gelu(h))
        return x + nn.Dropout(cfg.dropout_rate, deterministic=not train)(h)


class TransformerEncoder(nn.Module):
    """Embeds ``[B, L, V]`` (one-hot or soft) tokens, adds positions, runs pre-LN blocks, reads logits.

    Attributes:
        config: :class:`TransformerConfig`.
        output_size: ``C`` classes per position.
    """

    config: TransformerConfig
    output_size: int

    @nn.compact
    def __call__(self, inputs: jnp.ndarray, seq_lengths: jnp.ndarray | None = None, train: bool = False) -> jnp.ndarray:
        """Per-position logits.

        Args:
            inputs: ``[B, L, V]`` float.
            seq_lengths: ``[B]`` real lengths; keys beyond are masked out, so padding never changes the
                outputs at real positions. None: every position is real.
            train: enables dropout (needs a ``'dropout'`` rng) and randomized positions (a ``'positions'`` rng).

        Returns:
            ``[B, L, C]`` float32 logits.
        """
        if inputs.ndim != 3:
            raise ValueError(f"inputs must have rank 3 [B, L, V], got shape {inputs.shape}")
        cfg = self.config
        x = nn.Dense(cfg.d_model, dtype=cfg.dtype, name="embed")(inputs)
        positions = PositionalEncoding(cfg.positional, cfg.d_model, cfg.num_heads, max_len=cfg.max_len,
                                       causal=cfg.causal, name="positional")(inputs.shape[0], inputs.shape[1], train)
        if positions.embedding is not None:
            x = x + positions.embedding.astype(x.dtype)
        for i in range(cfg.num_layers):
            x = EncoderBlock(cfg, name=f"block_{i}")(x, seq_lengths, train, positions)
        x = nn.LayerNorm(dtype=cfg.dtype, name="final_norm")(x)
        return nn.Dense(self.output_size, dtype=cfg.dtype, name="logits")(x).astype(jnp.float32)
