"""How an attention model runs, apart from what it is: compute dtype, sown attention weights, sequence
parallelism.

A model's config (:class:`~attnjax.nn.transformer_config.TransformerConfig`) is its architecture: what a
checkpoint holds. :class:`Execution` is set where a run applies it, as the model's ``execution`` attribute::

    model = TransformerEncoder(config, output_size=C, execution=Execution(dtype=jnp.bfloat16))
    sharded = model.clone(execution=Execution(sequence_parallel_axis="seq"))  # same parameters

Parameters never depend on it, so one checkpoint serves every execution.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from attnjax.ops.positional import get_positional
from attnjax.parallel.layouts import LAYOUTS
from attnjax.parallel.sequence import RING_OPTIONS


@dataclasses.dataclass(frozen=True)
class Execution:
    """How a model computes (frozen: hashable, a valid jit static argument).

    Attributes:
        dtype: computation dtype (a dtype or its name; parameters stay float32, logits are float32).
        sow_attention_weights: every attention layer sows its ``[B, N, T, S]`` weights into the
            ``"intermediates"`` collection (computed only when that collection is mutable).
        sequence_parallel_axis: the mesh axis the token dimension is split over (None: off). Self-attention
            then runs as :func:`attnjax.parallel.ring_attention` over that axis, positional encodings read
            each token's global position, and every other layer stays position-wise local. The model must run
            inside ``jax.shard_map`` with its tokens permuted into ``sequence_parallel_layout``, which
            ``make_train_step(parallel="shard_map", seq_axis=...)`` does. The config must then have
            ``pooling=None``, attention ``"dot_product"`` with ring options only, a positional encoding that
            is not a logit bias and no attention dropout (:func:`check_sequence_parallel`).
        sequence_parallel_layout: the ring layout (:data:`attnjax.parallel.LAYOUTS`); ``"zigzag"`` (default)
            balances causal attention over the ring, ``"contiguous"`` is the natural order.
    """

    dtype: Any = jnp.float32
    sow_attention_weights: bool = False
    sequence_parallel_axis: str | None = None
    sequence_parallel_layout: str = "zigzag"

    def __post_init__(self):
        try:
            dtype = jnp.dtype(self.dtype)
        except TypeError:
            raise ValueError(f"Execution.dtype must be a dtype or its name, got {self.dtype!r}") from None
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"Execution.dtype must be a floating dtype, got {self.dtype!r}")
        object.__setattr__(self, "dtype", dtype)
        if not isinstance(self.sow_attention_weights, bool):
            raise ValueError(f"Execution.sow_attention_weights must be a bool, got {self.sow_attention_weights!r}")
        axis = self.sequence_parallel_axis
        if axis is not None and (not isinstance(axis, str) or not axis):
            raise ValueError(f"Execution.sequence_parallel_axis must be a mesh axis name or None, got {axis!r}")
        if self.sequence_parallel_layout not in LAYOUTS:
            raise ValueError(f"Execution.sequence_parallel_layout must be one of {LAYOUTS}, "
                             f"got {self.sequence_parallel_layout!r}")


def check_sequence_parallel(config: Any, execution: Execution) -> None:
    """Raises ValueError naming every field of ``config`` (a TransformerConfig) that ring attention over a
    split sequence cannot run, when ``execution`` splits the sequence; also sown weights."""
    if execution.sequence_parallel_axis is None:
        return
    attention = config.attention
    # What ring attention over a split sequence cannot do, each with the field that asks for it.
    unsupported = {
        "pooling": (config.pooling, config.pooling is not None),
        "attention.name": (attention.name, attention.name != "dot_product"),
        "positional": (config.positional, get_positional(config.positional).kind == "bias"),
        "attention_dropout_rate": (config.attention_dropout_rate, config.attention_dropout_rate > 0),
        "sow_attention_weights": (execution.sow_attention_weights, execution.sow_attention_weights),
        "attention.implementation": (attention.implementation, attention.implementation is not None),
        "attention.block_q/block_kv": ((attention.block_q, attention.block_kv), attention.block_sizes is not None),
        "attention.options": (dict(attention.options),
                              any(name not in RING_OPTIONS for name, _ in attention.options)),
    }
    bad = {name: value for name, (value, is_bad) in unsupported.items() if is_bad}
    if bad:
        raise ValueError(f"sequence_parallel_axis={execution.sequence_parallel_axis!r} runs self-attention as ring "
                         f"attention, which needs pooling=None, attention 'dot_product', a positional encoding "
                         f"that is not a logit bias, no attention dropout, no sown weights, no implementation "
                         f"or block sizes, and attention options among {RING_OPTIONS}; got {bad}")
