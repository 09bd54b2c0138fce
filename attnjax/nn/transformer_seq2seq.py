"""Encoder-decoder Transformer (Vaswani et al. 2017) with cross-attention: the Seq2SeqModel contract."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.nn.blocks import Embedding, TransformerStack
from attnjax.nn.contract import begin_token
from attnjax.nn.execution import Execution
from attnjax.nn.transformer_config import KERNEL_INITS, TransformerConfig


@dataclasses.dataclass(frozen=True)
class TransformerSeq2SeqConfig(TransformerConfig):
    """:class:`TransformerConfig` of the encoder and the decoder (``num_layers`` blocks each).

    ``causal`` applies to the encoder only (the decoder is always causal); ``pooling`` must be None.
    """

    def __post_init__(self):
        super().__post_init__()
        if self.pooling is not None:
            raise ValueError(f"TransformerSeq2Seq decodes per position: pooling must be None, got {self.pooling!r}")


class TransformerSeq2Seq(nn.Module):
    """Bidirectional encoder over the source; causal decoder with cross-attention to the encoder output.

    The decoder never sees source padding (cross-attention keys past ``source_lengths`` are masked, as
    are the encoder's own) nor later target tokens (causal self-attention). Decoder input tokens are
    ``0..C-1`` plus the begin token ``C`` (:func:`attnjax.nn.contract.begin_token`), embedded one-hot.

    Attributes:
        config: :class:`TransformerSeq2SeqConfig` (or a :class:`TransformerConfig` with ``pooling=None``).
        output_size: ``C`` target classes.
        execution: :class:`~attnjax.nn.execution.Execution`: compute dtype, sown weights, sequence
            parallelism (parameters do not depend on it).
    """

    config: TransformerConfig
    output_size: int
    execution: Execution = Execution()

    def setup(self):
        cfg = self.config
        if cfg.pooling is not None:
            raise ValueError(f"TransformerSeq2Seq decodes per position: pooling must be None, got {cfg.pooling!r}")
        run = self.execution
        self.source_embed = Embedding(cfg, execution=run)
        self.encoder = TransformerStack(cfg, causal=cfg.causal, execution=run)
        self.target_embed = Embedding(cfg, execution=run)
        self.decoder = TransformerStack(cfg, causal=True, cross_attention=True, execution=run)
        self.logits = nn.Dense(self.output_size, dtype=run.dtype, kernel_init=KERNEL_INITS[cfg.kernel_init])

    def encode(self, source: jnp.ndarray, source_lengths: jnp.ndarray | None = None,
               train: bool = False) -> jnp.ndarray:
        """``source [B, S, V]`` float -> memory ``[B, S, D]`` (keys past ``source_lengths [B]`` masked)."""
        if source.ndim != 3:
            raise ValueError(f"source must have rank 3 [B, S, V], got shape {source.shape}")
        return self.encoder(self.source_embed(source), source_lengths, train)

    def decode(self, memory: jnp.ndarray, target_inputs: jnp.ndarray, source_lengths: jnp.ndarray | None = None,
               train: bool = False) -> jnp.ndarray:
        """``memory [B, S, D]`` and ``target_inputs [B, T]`` int -> ``[B, T, C]`` float32 logits."""
        if target_inputs.ndim != 2 or not jnp.issubdtype(target_inputs.dtype, jnp.integer):
            raise ValueError(f"target_inputs must be an int array [B, T], got {target_inputs.dtype} "
                             f"{target_inputs.shape}")
        if target_inputs.shape[0] != memory.shape[0]:
            raise ValueError(f"target_inputs batch {target_inputs.shape[0]} != source batch {memory.shape[0]}")
        tokens = jax.nn.one_hot(target_inputs, begin_token(self.output_size) + 1, dtype=self.execution.dtype)
        h = self.decoder(self.target_embed(tokens), None, train, memory=memory, memory_lengths=source_lengths)
        return self.logits(h).astype(jnp.float32)

    def __call__(self, source: jnp.ndarray, target_inputs: jnp.ndarray, source_lengths: jnp.ndarray | None = None,
                 train: bool = False) -> jnp.ndarray:
        """Teacher-forced logits.

        Args:
            source: ``[B, S, V]`` float.
            target_inputs: ``[B, T]`` int in ``0..C`` (the begin token, then the targets shifted right).
            source_lengths: ``[B]``; source positions past them are never attended to.
            train: dropout (``'dropout'`` rng) and randomized positions (``'positions'`` rng).

        Returns:
            ``[B, T, C]`` float32; position ``t`` depends on ``target_inputs[:, :t+1]`` only.
        """
        return self.decode(self.encode(source, source_lengths, train), target_inputs, source_lengths, train)

    def generate(self, source: jnp.ndarray, source_lengths: jnp.ndarray | None = None, *,
                 max_length: int) -> jnp.ndarray:
        """Greedy decoding from the begin token (evaluation mode), jit-friendly at a fixed ``max_length``.

        The source is encoded once; each of the ``max_length`` steps reruns the decoder over a fixed
        ``[B, max_length]`` buffer of its own predictions (no key/value cache: O(max_length^2) decoder
        work, fine at the lengths the experiments use, and one compiled loop body). Causality makes the
        not-yet-filled tail of the buffer irrelevant to step ``t``.

        Args:
            source: ``[B, S, V]``.
            source_lengths: ``[B]`` or None.
            max_length: tokens to produce (a Python int: static under jit).

        A randomized positional encoding with ``randomized_eval="random"`` needs a ``'positions'`` rng here
        too; the decoder reads the same random positions at every step.

        Returns:
            ``[B, max_length]`` int32 predicted tokens, equal to the argmax of :meth:`__call__` fed with
            its own shifted predictions.
        """
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be an int >= 1, got {max_length!r}")
        memory = self.encode(source, source_lengths)
        batch = source.shape[0]
        buffer = jnp.full((batch, max_length), begin_token(self.output_size), jnp.int32)
        predicted = jnp.zeros((batch, max_length), jnp.int32)

        def step(mdl, carry):
            t, buffer, predicted = carry
            logits = mdl.decode(memory, buffer, source_lengths)  # [B, max_length, C]
            token = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False), axis=-1)
            token = token.astype(jnp.int32)
            # Position t + 1 of the decoder input is the token predicted at t (dropped after the last step).
            buffer = buffer.at[:, t + 1].set(token, mode="drop")
            return t + 1, buffer, predicted.at[:, t].set(token)

        # A randomized encoding draws the decoder's positions once for the whole generation: the 'positions'
        # rng is handed to every step unsplit.
        _, _, predicted = nn.while_loop(lambda mdl, carry: carry[0] < max_length, step, self,
                                        (jnp.int32(0), buffer, predicted), split_rngs={"positions": False})
        return predicted


__all__ = ["TransformerSeq2Seq", "TransformerSeq2SeqConfig"]
