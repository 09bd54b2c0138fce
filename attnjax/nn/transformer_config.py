"""Hyper-parameters shared by every attention model, and named presets of them.

:class:`TransformerConfig` is one frozen dataclass for :class:`~attnjax.nn.transformer.TransformerEncoder`,
:class:`~attnjax.nn.transformer_lm.TransformerLM`, :class:`~attnjax.nn.transformer_seq2seq.TransformerSeq2Seq`
and :class:`~attnjax.nn.vit1d.ViT1D`. It describes the architecture only: the attention is one
:class:`~attnjax.ops.AttentionConfig` value, and how a model runs (compute dtype, sown weights, sequence
parallelism) is its :class:`~attnjax.nn.execution.Execution`. It is validated when built.
:data:`TRANSFORMER_PRESETS` and :func:`transformer_config` name published setups.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import flax.linen as nn
import jax

from attnjax.ops import positional as P
from attnjax.ops.attention_config import AttentionConfig

ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu}
# Haiku's default Linear init is a normal truncated at +-2 std with stddev 1/sqrt(fan_in) and no variance
# correction; Flax's truncated variance_scaling divides the stddev by this factor, so scaling the variance
# by its square gives Haiku's distribution exactly.
_TRUNCATION_STD = 0.87962566103423978
KERNEL_INITS = {"lecun_normal": nn.initializers.lecun_normal(),
                "haiku": nn.initializers.variance_scaling(_TRUNCATION_STD ** 2, "fan_in", "truncated_normal")}


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of every attention model (frozen: hashable, a valid jit static argument).

    Attributes:
        num_layers: blocks per stack (the seq2seq encoder and decoder each have this many).
        d_model: ``D``.
        num_heads: ``N``; ``d_model`` must be divisible by it (head dim ``H = D // N``).
        num_kv_heads: ``K`` key/value heads (grouped-query attention), dividing ``N``; None: ``N``.
        mlp_dim: hidden size of the feed-forward block.
        norm: ``"pre"`` (``x + f(LN(x))``, and a final LayerNorm after the last block) or ``"post"``
            (``LN(x + f(x))``, no final LayerNorm: the last block's output is already normalized).
        norm_epsilon: LayerNorm epsilon (Flax's default 1e-6; Haiku's is 1e-5).
        activation: feed-forward nonlinearity, ``"relu"`` or ``"gelu"`` (tanh approximation).
        attention_bias: biases on the query/key/value/output projections.
        embed_bias: a bias on the (linear) input embedding.
        embed_scale: multiply the token embeddings by ``sqrt(d_model)`` (Vaswani et al.).
        embed_init_std: stddev of a +-2-std truncated-normal embedding init; None: ``kernel_init``.
        kernel_init: every other kernel: ``"lecun_normal"`` (Flax) or ``"haiku"`` (Haiku's Linear default).
        pooling: None (per-position logits), ``"cls"`` (a learned token prepended at position 0, whose
            output is classified) or ``"mean"`` (mean over the real positions): the latter two make a
            Classifier (``[B, C]`` logits).
        attention: the attention, one :class:`attnjax.ops.AttentionConfig` (variant, options, implementation,
            block sizes); a variant name or a mapping of its fields is accepted and converted.
        causal: causal self-attention in :class:`TransformerEncoder`, :class:`ViT1D` and the seq2seq
            encoder (the LM and the seq2seq decoder are causal whatever this says).
        positional: an encoding name in :data:`attnjax.ops.positional.POSITIONAL`.
        randomized_positions: Ruoss et al. (2023) randomized positions (a sorted random subset of
            ``[0, max_len)``), passed to :class:`PositionalEncoding` as ``randomized``.
        randomized_eval: what randomized positions do in evaluation, passed as ``randomized_eval``.
        positions_from_end: sinusoidal positions count down from the sequence end (token ``t`` of a
            length-``n`` sequence is at position ``n - t``), as Delétang et al.'s code builds its sin/cos
            table; ``positional="sinusoidal"`` only.
        max_len: learned-table size and the range of randomized positions.
        rope_fraction: share of each head that RoPE rotates (``positional="rope"``).
        dropout_rate: dropout on the residual branches and on the embeddings (train mode only).
        attention_dropout_rate: dropout on the attention weights (train mode only; the variant's
            function must take ``dropout_rate``).
        vocab_size: ``V``, the number of token ids a per-position model (``pooling=None``) may read as
            integer ``[B, L]`` inputs (an embedding-table lookup equal to the one-hot product); float
            ``[B, L, V]`` inputs must then have this ``V``. None: float inputs only. The seq2seq model
            does not read it (its source is float; its decoder embeds its own ids).
    """

    num_layers: int = 2
    d_model: int = 64
    num_heads: int = 4
    num_kv_heads: int | None = None
    mlp_dim: int = 128
    norm: str = "pre"
    norm_epsilon: float = 1e-6
    activation: str = "gelu"
    attention_bias: bool = True
    embed_bias: bool = True
    embed_scale: bool = False
    embed_init_std: float | None = None
    kernel_init: str = "lecun_normal"
    pooling: str | None = None
    attention: AttentionConfig = AttentionConfig()
    causal: bool = False
    positional: str = "sinusoidal"
    randomized_positions: bool = False
    randomized_eval: str = "random"
    positions_from_end: bool = False
    max_len: int = 2048
    rope_fraction: float = 1.0
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    vocab_size: int | None = None

    def __post_init__(self):
        for name in ("num_layers", "d_model", "num_heads", "mlp_dim", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by num_heads={self.num_heads}")
        kv = self.num_heads if self.num_kv_heads is None else self.num_kv_heads
        if not isinstance(kv, int) or kv < 1 or self.num_heads % kv:
            raise ValueError(f"num_kv_heads must divide num_heads={self.num_heads}, got {self.num_kv_heads!r}")
        _choice("norm", self.norm, ("pre", "post"))
        _choice("activation", self.activation, tuple(ACTIVATIONS))
        _choice("kernel_init", self.kernel_init, tuple(KERNEL_INITS))
        _choice("pooling", self.pooling, (None, "cls", "mean"))
        if self.vocab_size is not None:
            if not isinstance(self.vocab_size, int) or isinstance(self.vocab_size, bool) or self.vocab_size < 1:
                raise ValueError(f"vocab_size must be None or an int >= 1, got {self.vocab_size!r}")
            if self.pooling is not None:
                raise ValueError(f"vocab_size (integer token ids) is for per-position models: pooling must be None, "
                                 f"got pooling={self.pooling!r} (a classifier reads [B, L] as one feature per "
                                 "position)")
        for name in ("dropout_rate", "attention_dropout_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.embed_init_std is not None and not self.embed_init_std > 0:
            raise ValueError(f"embed_init_std must be > 0 or None, got {self.embed_init_std!r}")
        if self.pooling == "cls" and self.causal:
            raise ValueError("pooling='cls' needs causal=False: the CLS token is prepended, so under causal "
                             "attention it would see only itself")
        object.__setattr__(self, "attention", AttentionConfig.of(self.attention))
        spec = self.attention.spec
        positional = P.check_randomized(self.positional, self.randomized_positions, self.randomized_eval)
        if positional.kind == "bias" and not spec.supports_bias:
            raise ValueError(f"positional={self.positional!r} adds a logit bias, which attention "
                             f"{spec.name!r} cannot take (it forms no logits); pick another pair")
        if self.positions_from_end and (self.positional != "sinusoidal" or self.randomized_positions):
            raise ValueError(f"positions_from_end needs positional='sinusoidal' and randomized_positions=False, "
                             f"got positional={self.positional!r}, randomized_positions={self.randomized_positions}")
        self._check_attention_fits_the_layer(spec)

    def _check_attention_fits_the_layer(self, spec) -> None:
        """What the attention value cannot check alone: options against the layer's learned parameters and
        attention dropout against the variant's signature."""
        if spec.init_params is not None:
            learned = set(jax.eval_shape(lambda: spec.init_params(jax.random.key(0), head_dim=self.head_dim,
                                                                  num_heads=self.num_heads)))
            shadowed = sorted(learned & {name for name, _ in self.attention.options})
            if shadowed:
                raise ValueError(f"attention options {shadowed} of {spec.name!r} are learned parameters of the "
                                 "layer; an option may not set them")
        if self.attention_dropout_rate > 0 and "dropout_rate" not in inspect.signature(spec.fn).parameters:
            raise ValueError(f"attention_dropout_rate={self.attention_dropout_rate} needs an attention function "
                             f"taking dropout_rate; attention {spec.name!r} does not (use 0.0)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


# Named setups from papers, as TransformerConfig fields (a preset is the starting point; overrides win).
TRANSFORMER_PRESETS: dict[str, dict[str, Any]] = {
    # Delétang et al. (2022), "Neural Networks and the Chomsky Hierarchy", as their code builds it
    # (google-deepmind/neural_networks_chomsky_hierarchy, models/transformer.py, make_transformer_encoder with
    # return_all_outputs=True): a bidirectional encoder; one-hot tokens through a bias-free linear embedding
    # (truncated normal, stddev 0.02) times sqrt(64); a sin/cos table (sines then cosines, max timescale 1e4)
    # whose positions run from L down to 1, added before a dropout; per block, bias-free q/k/v/out
    # projections, LN(x + Dropout(Attn(x))) then LN(x + Dropout(W2 relu(W1 x + b1) + b2)) with Haiku's
    # LayerNorm (eps 1e-5, scale and offset); no final LayerNorm; a biased linear read-out at every position.
    "deletang2022": dict(
        num_layers=5, d_model=64, num_heads=8, mlp_dim=256, norm="post", norm_epsilon=1e-5, activation="relu",
        attention_bias=False, embed_bias=False, embed_scale=True, embed_init_std=0.02, kernel_init="haiku",
        pooling=None, attention=AttentionConfig("dot_product"), causal=False, positional="sinusoidal",
        positions_from_end=True, dropout_rate=0.1, attention_dropout_rate=0.0),
}


def transformer_config(preset: str | None = None, **overrides: Any) -> TransformerConfig:
    """A :class:`TransformerConfig` from a named preset (None: the defaults) with ``overrides`` on top.

    Example::

        cfg = transformer_config("deletang2022", positional="rope", positions_from_end=False)

    Raises:
        ValueError: unknown preset (the message lists the valid ones), or an invalid field value.
        TypeError: an unknown field.
    """
    if preset is not None and preset not in TRANSFORMER_PRESETS:
        raise ValueError(f"preset must be one of {sorted(TRANSFORMER_PRESETS)} or None, got {preset!r}")
    return TransformerConfig(**{**(TRANSFORMER_PRESETS[preset] if preset else {}), **overrides})
