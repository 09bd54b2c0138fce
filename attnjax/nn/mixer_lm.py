"""Causal language models built from Zoology's token mixers: BaseConv, Hyena and Based.

Every model is a SequenceModel (:mod:`attnjax.nn.contract`): ``[B, L, V]`` tokens (or ``[B, L]`` ids with
``vocab_size``) -> ``[B, L, C]`` logits, where position ``t`` depends on tokens ``0..t`` only. They share
Zoology's backbone (``zoology/model.py``): a token embedding (no positions: the convolutions carry them),
then per layer two pre-LayerNorm residual branches, ``x + mixer(LN(x))`` and ``x + state_mixer(LN(x))``,
then a final LayerNorm and the read-out. Zoology's MQAR runs have no feed-forward: their state mixer is
the identity, which still adds ``LN(x)`` (``mlp_dim=None`` here); ``mlp_dim`` makes it a GELU MLP.

The models differ only in the mixer of each layer (:mod:`attnjax.nn.mixers`):

* :class:`BaseConvLM` -- :class:`~attnjax.nn.mixers.BaseConv` with ``kernel_sizes[i]`` taps, ``-1`` meaning a
  long (FFT) convolution; Zoology's MQAR BaseConv alternates short (3) and long (``(3, -1)``).
* :class:`HyenaLM` -- :class:`~attnjax.nn.mixers.Hyena` in every layer.
* :class:`BasedLM` -- Based (Arora et al. 2024): gated short convolutions, Taylor linear attention and
  sliding-window softmax attention, layer ``i`` taking ``layer_mixers[i % len]``.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax.numpy as jnp

from attnjax.nn.mixers import BaseConv, Hyena, SlidingWindowAttention, TaylorLinearAttention
from attnjax.nn.recurrent import check_int
from attnjax.nn.tokens import embed_tokens, token_input_size
from attnjax.ops.convolution import CONV_METHODS

Array = jnp.ndarray

BASED_MIXERS = ("base_conv", "linear", "window")


def _check_rate(name: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def _check_emb_dim(value) -> None:
    check_int("filter_emb_dim", value, 3)
    if value % 2 == 0:
        raise ValueError(f"filter_emb_dim must be odd (time, then a cosine and a sine per band), got {value!r}")


def _check_method(value) -> None:
    if value not in CONV_METHODS:
        raise ValueError(f"long_conv_method must be one of {sorted(CONV_METHODS)}, got {value!r}")


def _check_heads(d_model: int, num_heads) -> None:
    check_int("num_heads", num_heads)
    if d_model % num_heads:
        raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")


@dataclasses.dataclass(frozen=True)
class MixerLMConfig:
    """Fields every mixer LM shares (Zoology's ``ModelConfig`` where it has them).

    Attributes:
        d_model: ``D``, the residual width.
        num_layers: blocks, each a mixer and a state mixer.
        max_len: the longest sequence: long filters have this many taps or lay their positions over it
            (Zoology's ``l_max``, which its MQAR configs set to the sequence length). Longer inputs are an error.
        vocab_size: None: float ``[B, L, V]`` inputs only; ``V``: also ``[B, L]`` integer ids (one table).
        tie_embeddings: read out with the transposed embedding (Zoology ties them), needs ``output_size == V``;
            False: a biased linear read-out.
        mlp_dim: None: the identity state mixer of Zoology's MQAR runs; an int: a GELU MLP of that width.
        embed_dropout: dropout on the embeddings (Zoology's default 0.1).
        resid_dropout: dropout on every branch output (Zoology's default 0).
        norm_epsilon: LayerNorm epsilon (PyTorch's 1e-5, as Zoology).
        init_std: stddev of the embedding and linear layers (Zoology's ``initializer_range``); output
            projections get ``init_std / sqrt(2 num_layers)``.
    """

    d_model: int = 128
    num_layers: int = 2
    max_len: int = 1024
    vocab_size: int | None = None
    tie_embeddings: bool = False
    mlp_dim: int | None = None
    embed_dropout: float = 0.1
    resid_dropout: float = 0.0
    norm_epsilon: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self):
        for name in ("d_model", "num_layers", "max_len"):
            check_int(name, getattr(self, name))
        for name in ("vocab_size", "mlp_dim"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"tie_embeddings must be a bool, got {self.tie_embeddings!r}")
        _check_rate("embed_dropout", self.embed_dropout)
        _check_rate("resid_dropout", self.resid_dropout)
        for name in ("norm_epsilon", "init_std"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")

    @property
    def out_std(self) -> float:
        """Zoology's rescaled init of the output projections: ``init_std / sqrt(2 num_layers)``."""
        return self.init_std / math.sqrt(2 * self.num_layers)


@dataclasses.dataclass(frozen=True)
class BaseConvConfig(MixerLMConfig):
    """:class:`MixerLMConfig` plus BaseConv's own fields.

    Attributes:
        kernel_sizes: layer ``i`` convolves with ``kernel_sizes[i % len]`` taps (``K >= 1``, at most
            ``max_len``), or ``-1``: a long convolution as long as the sequence, by FFT. Zoology's MQAR
            BaseConv: ``(3, -1)``.
        implicit_long_conv: long filters generated by a position MLP (Zoology's default); False: explicit
            ``[max_len, D]`` filters.
        filter_order: width of that MLP (Zoology: 16).
        filter_emb_dim: its positional features, odd and ``>= 3`` (Zoology: 3).
        use_act: SiLU on both gated branches (Zoology's ``use_act``, off by default).
        long_conv_method: ``"fft"`` (``O(L log L)``, as Zoology) or ``"direct"`` (``O(L^2)``; exactly causal,
            where the FFT lets later tokens in at float32 rounding level), see
            :data:`attnjax.ops.convolution.CONV_METHODS`.
    """

    kernel_sizes: tuple[int, ...] = (3, -1)
    implicit_long_conv: bool = True
    filter_order: int = 16
    filter_emb_dim: int = 3
    use_act: bool = False
    long_conv_method: str = "fft"

    def __post_init__(self):
        super().__post_init__()
        sizes = tuple(self.kernel_sizes) if isinstance(self.kernel_sizes, (tuple, list)) else None
        if not sizes or any(not isinstance(k, int) or isinstance(k, bool) or not (k == -1 or 1 <= k <= self.max_len)
                            for k in sizes):
            raise ValueError(f"kernel_sizes must be a non-empty tuple of ints, each -1 (a long FFT convolution) or "
                             f"1..max_len={self.max_len} taps, got {self.kernel_sizes!r}")
        object.__setattr__(self, "kernel_sizes", sizes)  # a list from a config file becomes hashable
        check_int("filter_order", self.filter_order)
        _check_emb_dim(self.filter_emb_dim)
        _check_method(self.long_conv_method)
        for name in ("implicit_long_conv", "use_act"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")


@dataclasses.dataclass(frozen=True)
class HyenaConfig(MixerLMConfig):
    """:class:`MixerLMConfig` plus Hyena's own fields (Zoology's defaults).

    Attributes:
        filter_order: width of the implicit filter's MLP.
        short_filter_order: taps of the short convolution over the three projected streams (at most
            ``max_len``).
        filter_emb_dim: positional features of the filter, odd and ``>= 3``.
        long_conv_method: ``"fft"`` or ``"direct"``, as :class:`BaseConvConfig`'s.
    """

    filter_order: int = 64
    short_filter_order: int = 3
    filter_emb_dim: int = 3
    long_conv_method: str = "fft"

    def __post_init__(self):
        super().__post_init__()
        check_int("filter_order", self.filter_order)
        check_int("short_filter_order", self.short_filter_order)
        if self.short_filter_order > self.max_len:
            raise ValueError(f"short_filter_order={self.short_filter_order} must be <= max_len={self.max_len}")
        _check_emb_dim(self.filter_emb_dim)
        _check_method(self.long_conv_method)


@dataclasses.dataclass(frozen=True)
class BasedConfig(MixerLMConfig):
    """:class:`MixerLMConfig` plus Based's own fields.

    Attributes:
        num_layers: 3 by default: one layer of each mixer, in Based's order.
        layer_mixers: layer ``i`` is ``layer_mixers[i % len]``, each one of :data:`BASED_MIXERS`:
            ``"base_conv"`` (a short gated convolution), ``"linear"`` (Taylor linear attention), ``"window"``
            (sliding-window softmax attention). Based's language models repeat ``base_conv, linear, window``
            then more ``base_conv``; Zoology's MQAR "based" is ``("base_conv", "linear")`` at 2 layers.
        feature_dim: query/key width per head of the linear attention (``1 + F + F^2`` features).
        num_heads: heads of both attentions, dividing ``d_model`` (Zoology's MQAR: 1).
        window_size: earlier keys each query of the window attention sees besides its own.
        conv_kernel_size: taps of the gated short convolution (Zoology: 3), at most ``max_len``.
    """

    num_layers: int = 3
    layer_mixers: tuple[str, ...] = BASED_MIXERS
    feature_dim: int = 16
    num_heads: int = 1
    window_size: int = 64
    conv_kernel_size: int = 3

    def __post_init__(self):
        super().__post_init__()
        mixers = tuple(self.layer_mixers) if isinstance(self.layer_mixers, (tuple, list)) else None
        if not mixers or any(m not in BASED_MIXERS for m in mixers):
            raise ValueError(f"layer_mixers must be a non-empty tuple of names from {BASED_MIXERS}, "
                             f"got {self.layer_mixers!r}")
        object.__setattr__(self, "layer_mixers", mixers)
        check_int("feature_dim", self.feature_dim)
        _check_heads(self.d_model, self.num_heads)
        check_int("window_size", self.window_size, 0)
        check_int("conv_kernel_size", self.conv_kernel_size)
        if self.conv_kernel_size > self.max_len:
            raise ValueError(f"conv_kernel_size={self.conv_kernel_size} must be <= max_len={self.max_len}")


class MixerLM(nn.Module):
    """Zoology's backbone around a token mixer per layer; subclasses say which mixer (:meth:`mixer`).

    Attributes:
        config: the subclass's config (a :class:`MixerLMConfig`).
        output_size: ``C``.
    """

    config: MixerLMConfig
    output_size: int

    def mixer(self, layer: int, name: str) -> nn.Module:
        """The token mixer of ``layer``, ``[B, L, D] -> [B, L, D]`` with a ``train`` argument."""
        raise NotImplementedError

    @nn.compact
    def __call__(self, inputs: Array, seq_lengths: Array | None = None, train: bool = False) -> Array:
        """Per-position logits.

        Args:
            inputs: ``[B, L, V]`` float (one-hot or soft), or ``[B, L]`` integer token ids with
                ``config.vocab_size = V``; ``L <= config.max_len``.
            seq_lengths: ``[B]``; unused: padding comes after the real tokens and no position sees a later one.
            train: dropout on (``'dropout'`` rng) when the config's rates are positive.

        Returns:
            ``[B, L, C]`` float32; position ``t`` depends on ``inputs[:, :t+1]`` only (exactly, except that an FFT
            long convolution lets later tokens in at float32 rounding level; ``long_conv_method="direct"`` is
            exact).

        Raises:
            ValueError: inputs neither ``[B, L, V]`` float nor ``[B, L]`` ids; ``L > max_len``; tied embeddings
                with ``output_size != V``.
        """
        del seq_lengths
        cfg = self.config
        V = token_input_size(inputs, cfg.vocab_size)
        L = inputs.shape[1]
        if L > cfg.max_len:
            raise ValueError(f"inputs have length L={L} > config max_len={cfg.max_len} (the long filters' length); "
                             f"raise max_len")
        if cfg.tie_embeddings and self.output_size != V:
            raise ValueError(f"tie_embeddings needs output_size == V (the read-out is the embedding transposed), "
                             f"got output_size={self.output_size}, V={V}")
        table = self.param("embed", nn.initializers.normal(cfg.init_std), (V, cfg.d_model))
        x = nn.Dropout(cfg.embed_dropout, deterministic=not train)(embed_tokens(inputs, table))
        drop = nn.Dropout(cfg.resid_dropout, deterministic=not train)
        for i in range(cfg.num_layers):
            h = nn.LayerNorm(epsilon=cfg.norm_epsilon, name=f"norm_{i}_mixer")(x)
            x = x + drop(self.mixer(i, f"mixer_{i}")(h, train))
            h = nn.LayerNorm(epsilon=cfg.norm_epsilon, name=f"norm_{i}_state")(x)
            if cfg.mlp_dim is not None:
                h = nn.gelu(nn.Dense(cfg.mlp_dim, kernel_init=nn.initializers.normal(cfg.init_std),
                                     name=f"mlp_{i}_in")(h))
                h = nn.Dense(cfg.d_model, kernel_init=nn.initializers.normal(cfg.out_std), name=f"mlp_{i}_out")(h)
            x = x + drop(h)
        h = nn.LayerNorm(epsilon=cfg.norm_epsilon, name="final_norm")(x)
        if cfg.tie_embeddings:
            return jnp.einsum("BLD,VD->BLV", h, table).astype(jnp.float32)
        return nn.Dense(self.output_size, name="logits")(h).astype(jnp.float32)


class BaseConvLM(MixerLM):
    """BaseConv (Arora et al. 2023) language model: gated short and long convolutions (:class:`BaseConvConfig`)."""

    config: BaseConvConfig

    def mixer(self, layer: int, name: str) -> nn.Module:
        cfg = self.config
        return BaseConv(cfg.kernel_sizes[layer % len(cfg.kernel_sizes)], cfg.max_len, cfg.implicit_long_conv,
                        cfg.filter_order, cfg.filter_emb_dim, cfg.use_act, cfg.init_std, cfg.long_conv_method,
                        name=name)


class HyenaLM(MixerLM):
    """Hyena (Poli et al. 2023) language model, Zoology's order-2 operator in every layer (:class:`HyenaConfig`)."""

    config: HyenaConfig

    def mixer(self, layer: int, name: str) -> nn.Module:
        cfg = self.config
        return Hyena(cfg.max_len, cfg.filter_order, cfg.short_filter_order, cfg.filter_emb_dim, cfg.init_std,
                     cfg.out_std, cfg.long_conv_method, name=name)


class BasedLM(MixerLM):
    """Based (Arora et al. 2024) language model: short gated convolutions, Taylor linear attention and
    sliding-window attention, layer by layer (:class:`BasedConfig`)."""

    config: BasedConfig

    def mixer(self, layer: int, name: str) -> nn.Module:
        cfg = self.config
        kind = cfg.layer_mixers[layer % len(cfg.layer_mixers)]
        if kind == "base_conv":
            return BaseConv(cfg.conv_kernel_size, cfg.max_len, init_std=cfg.init_std, name=name)
        if kind == "linear":
            return TaylorLinearAttention(cfg.feature_dim, cfg.num_heads, cfg.init_std, name=name)
        return SlidingWindowAttention(cfg.window_size, cfg.num_heads, cfg.init_std, cfg.out_std, name=name)


__all__ = ["BASED_MIXERS", "BaseConvConfig", "BaseConvLM", "BasedConfig", "BasedLM", "HyenaConfig", "HyenaLM",
           "MixerLM", "MixerLMConfig"]
