"""Pre-LayerNorm Transformer encoder mapping ``[B, L, V]`` inputs to per-position logits ``[B, L, C]``."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from attnjax.nn.attention import MultiHeadAttention
from attnjax.nn.positional import get_positional
from attnjax.ops import dot_product_attention

# name -> attention function with the jax.nn.dot_product_attention signature. attnjax.ops.registry
# will take this role once it exists; the Transformer only ever sees the name.
ATTENTION: dict[str, Callable[..., jnp.ndarray]] = {"dot_product": dot_product_attention}


def get_attention(name: str) -> Callable[..., jnp.ndarray]:
    """Looks an attention function up by name; ValueError lists the known names."""
    if name not in ATTENTION:
        raise ValueError(f"attention must be one of {sorted(ATTENTION)}, got {name!r}")
    return ATTENTION[name]


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
        attention: name in ``ATTENTION``.
        positional: name in ``attnjax.nn.positional.POSITIONAL``.
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
    causal: bool = False
    dtype: Any = jnp.float32

    def __post_init__(self):
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by num_heads={self.num_heads}")
        get_attention(self.attention)
        get_positional(self.positional)


class EncoderBlock(nn.Module):
    """``x + Attn(LN(x))`` then ``x + MLP(LN(x))``."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: jnp.ndarray, seq_lengths: jnp.ndarray | None, train: bool) -> jnp.ndarray:
        cfg = self.config
        h = nn.LayerNorm(dtype=cfg.dtype)(x)
        h = MultiHeadAttention(num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads,
                               head_dim=cfg.d_model // cfg.num_heads, attention_fn=get_attention(cfg.attention),
                               dtype=cfg.dtype)(h, is_causal=cfg.causal, key_value_seq_lengths=seq_lengths)
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
            train: enables dropout (needs a ``'dropout'`` rng).

        Returns:
            ``[B, L, C]`` float32 logits.
        """
        if inputs.ndim != 3:
            raise ValueError(f"inputs must have rank 3 [B, L, V], got shape {inputs.shape}")
        cfg = self.config
        x = nn.Dense(cfg.d_model, dtype=cfg.dtype, name="embed")(inputs)
        x = x + get_positional(cfg.positional)(inputs.shape[1], cfg.d_model).astype(x.dtype)
        for i in range(cfg.num_layers):
            x = EncoderBlock(cfg, name=f"block_{i}")(x, seq_lengths, train)
        x = nn.LayerNorm(dtype=cfg.dtype, name="final_norm")(x)
        return nn.Dense(self.output_size, dtype=cfg.dtype, name="logits")(x).astype(jnp.float32)
