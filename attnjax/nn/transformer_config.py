"""Hyper-parameters shared by every attention model, and named presets of them.

:class:`TransformerConfig` is one frozen dataclass for :class:`~attnjax.nn.transformer.TransformerEncoder`,
:class:`~attnjax.nn.transformer_lm.TransformerLM`, :class:`~attnjax.nn.transformer_seq2seq.TransformerSeq2Seq`
and :class:`~attnjax.nn.vit1d.ViT1D`; it picks the attention variant and positional encoding by name and
is validated when built. :data:`TRANSFORMER_PRESETS` and :func:`transformer_config` name published setups.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.ops import IMPLEMENTATIONS, BlockSizes
from attnjax.ops import positional as P
from attnjax.ops.dot_product import TAKES_BLOCK_SIZES
from attnjax.ops.registry import get_spec
from attnjax.parallel.layouts import LAYOUTS
from attnjax.parallel.sequence import RING_OPTIONS

# Keywords the block sets on every attention call (from other config fields or per batch), so they
# cannot be attention_options.
_SET_BY_THE_BLOCK = ("query", "key", "value", "bias", "mask", "is_causal", "query_seq_lengths",
                     "key_value_seq_lengths", "query_segment_ids", "key_segment_ids", "dropout_rate", "dropout_rng",
                     "implementation", "block_sizes")
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


def _normalize_options(options: Any) -> tuple[tuple[str, Any], ...]:
    """A dict, ConfigDict or sequence of pairs -> sorted hashable ``((name, value), ...)``."""
    pairs = options.items() if hasattr(options, "items") else options
    try:
        pairs = [(name, tuple(v) if isinstance(v, list) else v) for name, v in pairs]
    except (TypeError, ValueError):
        raise ValueError(f"attention_options must be a dict or (name, value) pairs, got {options!r}") from None
    for name, value in pairs:
        if not isinstance(name, str):
            raise ValueError(f"attention_options names must be str, got {name!r}")
        try:
            hash(value)
        except TypeError:
            raise ValueError(f"attention_options[{name!r}] must be hashable (the config is a jit static "
                             f"argument), got {type(value).__name__}: {value!r}") from None
    return tuple(sorted(pairs))


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
        attention: a variant name in :data:`attnjax.ops.registry.ATTENTION`.
        attention_options: the variant's own keywords (e.g. ``{"temperature": 0.5}``,
            ``{"local_window_size": 8}``); a dict is accepted and stored as sorted ``(name, value)`` pairs.
        implementation: ``implementation=`` of the op (``"dense"``, ``"blockwise"``, ...; None: the op
            chooses); only for variants taking it.
        block_q: query block of the blocked implementations (None: ``BlockSizes`` default).
        block_kv: key/value block of the blocked implementations (None: ``BlockSizes`` default).
        causal: causal self-attention in :class:`TransformerEncoder`, :class:`ViT1D` and the seq2seq
            encoder (the LM and the seq2seq decoder are causal whatever this says).
        sow_attention_weights: every attention layer sows its ``[B, N, T, S]`` weights into the
            ``"intermediates"`` collection (computed only when that collection is mutable).
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
        dtype: computation dtype (parameters stay float32; logits are float32).
        vocab_size: ``V``, the number of token ids a per-position model (``pooling=None``) may read as
            integer ``[B, L]`` inputs (an embedding-table lookup equal to the one-hot product); float
            ``[B, L, V]`` inputs must then have this ``V``. None: float inputs only. The seq2seq model
            does not read it (its source is float; its decoder embeds its own ids).
        sequence_parallel_axis: sequence parallelism: the mesh axis the token dimension is split over
            (None: off). Self-attention then runs as :func:`attnjax.parallel.ring_attention` over that
            axis, positional encodings read each token's global position, and every other layer stays
            position-wise local. The model must run inside ``jax.shard_map`` with its tokens permuted into
            ``sequence_parallel_layout``, which ``make_train_step(parallel="shard_map", seq_axis=...)`` does. Needs
            ``pooling=None``, ``attention="dot_product"`` with ring options only (``local_window_size``,
            ``scale``, ``logit_softcap``), a positional encoding that is not a logit bias (not alibi/t5),
            no attention dropout, no sown weights, no implementation or block sizes. Parameters do not
            change, so a checkpoint moves between the sharded and unsharded model.
        sequence_parallel_layout: the ring layout (:data:`attnjax.parallel.LAYOUTS`); ``"zigzag"``
            (default) balances causal attention over the ring, ``"contiguous"`` is the natural order.
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
    attention: str = "dot_product"
    attention_options: Any = ()
    implementation: str | None = None
    block_q: int | None = None
    block_kv: int | None = None
    causal: bool = False
    sow_attention_weights: bool = False
    positional: str = "sinusoidal"
    randomized_positions: bool = False
    randomized_eval: str = "random"
    positions_from_end: bool = False
    max_len: int = 2048
    rope_fraction: float = 1.0
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    vocab_size: int | None = None
    sequence_parallel_axis: str | None = None
    sequence_parallel_layout: str = "zigzag"

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
        spec = get_spec(self.attention)
        positional = P.check_randomized(self.positional, self.randomized_positions, self.randomized_eval)
        if positional.kind == "bias" and not spec.supports_bias:
            raise ValueError(f"positional={self.positional!r} adds a logit bias, which attention="
                             f"{self.attention!r} cannot take (it forms no logits); pick another pair")
        if self.positions_from_end and (self.positional != "sinusoidal" or self.randomized_positions):
            raise ValueError(f"positions_from_end needs positional='sinusoidal' and randomized_positions=False, "
                             f"got positional={self.positional!r}, randomized_positions={self.randomized_positions}")
        self._check_attention_keywords(spec)
        self._check_sequence_parallel(positional)

    def _check_sequence_parallel(self, positional) -> None:
        if self.sequence_parallel_axis is None:
            return
        if not isinstance(self.sequence_parallel_axis, str) or not self.sequence_parallel_axis:
            raise ValueError(f"sequence_parallel_axis must be a mesh axis name or None, "
                             f"got {self.sequence_parallel_axis!r}")
        _choice("sequence_parallel_layout", self.sequence_parallel_layout, LAYOUTS)
        # What ring attention over a split sequence cannot do, each with the field that asks for it.
        unsupported = {
            "pooling": (self.pooling, self.pooling is not None),
            "attention": (self.attention, self.attention != "dot_product"),
            "positional": (self.positional, positional.kind == "bias"),
            "attention_dropout_rate": (self.attention_dropout_rate, self.attention_dropout_rate > 0),
            "sow_attention_weights": (self.sow_attention_weights, self.sow_attention_weights),
            "implementation": (self.implementation, self.implementation is not None),
            "block_q/block_kv": ((self.block_q, self.block_kv), self.block_sizes is not None),
            "attention_options": (dict(self.attention_options),
                                  any(name not in RING_OPTIONS for name, _ in self.attention_options)),
        }
        bad = {name: value for name, (value, is_bad) in unsupported.items() if is_bad}
        if bad:
            raise ValueError(f"sequence_parallel_axis={self.sequence_parallel_axis!r} runs self-attention as ring "
                             f"attention, which needs pooling=None, attention='dot_product', a positional encoding "
                             f"that is not a logit bias, no attention dropout, no sown weights, no implementation "
                             f"or block sizes, and attention_options among {RING_OPTIONS}; got {bad}")

    def _check_attention_keywords(self, spec) -> None:
        takes = inspect.signature(spec.fn).parameters
        options = _normalize_options(self.attention_options)
        object.__setattr__(self, "attention_options", options)
        # The variant's own parameters come from the layer's params; an option must not shadow them.
        learned = set()
        if spec.init_params is not None:
            H = self.d_model // self.num_heads
            learned = set(jax.eval_shape(lambda: spec.init_params(jax.random.key(0), head_dim=H,
                                                                  num_heads=self.num_heads)))
        for name, _ in options:
            if name in _SET_BY_THE_BLOCK or name in learned:
                raise ValueError(f"attention_options may not set {name!r}: it is set by the model "
                                 f"({'a learned parameter' if name in learned else 'a config field or per batch'})")
            if name not in takes:
                valid = sorted(set(takes) - set(_SET_BY_THE_BLOCK) - learned)
                raise ValueError(f"attention_options has {name!r}, which attention={self.attention!r} does not "
                                 f"take; its options are {valid}")
        if self.attention_dropout_rate > 0 and "dropout_rate" not in takes:
            raise ValueError(f"attention_dropout_rate={self.attention_dropout_rate} needs an attention function "
                             f"taking dropout_rate; attention={self.attention!r} does not (use 0.0)")
        if self.implementation is not None:
            if "implementation" not in takes:
                raise ValueError(f"implementation={self.implementation!r} needs an attention function taking "
                                 f"implementation=; attention={self.attention!r} does not (use None)")
            _choice("implementation", self.implementation, (None, *sorted(IMPLEMENTATIONS)))
            if self.implementation not in spec.implementations:
                raise ValueError(f"implementation={self.implementation!r} needs an attention function that has "
                                 f"it; attention={self.attention!r} takes {spec.implementations} (or None)")
        if self.block_q is not None or self.block_kv is not None:
            if "block_sizes" not in takes or self.implementation not in (None, *sorted(TAKES_BLOCK_SIZES)):
                raise ValueError(f"block_q/block_kv are used by implementation in {sorted(TAKES_BLOCK_SIZES)} "
                                 f"(or None) of attention='dot_product', got attention={self.attention!r}, "
                                 f"implementation={self.implementation!r}")
            self.block_sizes  # noqa: B018 - BlockSizes validates the sizes now, not at the first call

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def block_sizes(self) -> BlockSizes | None:
        """``BlockSizes(block_q, block_kv)`` (defaults for an unset one), or None if neither is set."""
        if self.block_q is None and self.block_kv is None:
            return None
        default = BlockSizes()
        return BlockSizes(block_q=default.block_q if self.block_q is None else self.block_q,
                          block_k=default.block_k if self.block_kv is None else self.block_kv)


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
        pooling=None, attention="dot_product", causal=False, positional="sinusoidal", positions_from_end=True,
        dropout_rate=0.1, attention_dropout_rate=0.0),
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
