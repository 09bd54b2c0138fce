"""Decoder-only causal Transformer language model: ``[B, L, V]`` tokens (or ``[B, L]`` ids) -> ``[B, L, C]`` logits."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from attnjax.nn.blocks import Embedding, TransformerStack, readout
from attnjax.nn.execution import Execution
from attnjax.nn.tokens import token_input_size
from attnjax.nn.transformer_config import TransformerConfig


@dataclasses.dataclass(frozen=True)
class TransformerLMConfig(TransformerConfig):
    """:class:`TransformerConfig` plus the LM's own field.

    Attributes:
        tie_embeddings: the read-out is the transpose of the input embedding (``logits = h E^T``, no
            bias), which needs ``output_size == V``.
    """

    tie_embeddings: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.pooling is not None:
            raise ValueError(f"TransformerLM gives per-position logits: pooling must be None, got {self.pooling!r}")


class TransformerLM(nn.Module):
    """Causal self-attention over ``[B, L, V]`` tokens (or ``[B, L]`` ids): position ``t`` sees tokens ``0..t`` only.

    A SequenceModel (:mod:`attnjax.nn.contract`). It is causal by construction, so ``config.causal`` is
    not consulted; ALiBi/T5 biases are built causal.

    Attributes:
        config: :class:`TransformerLMConfig` (a plain :class:`TransformerConfig` works too: untied).
        output_size: ``C``.
        execution: :class:`~attnjax.nn.execution.Execution`: compute dtype, sown weights, sequence
            parallelism (parameters do not depend on it).
    """

    config: TransformerConfig
    output_size: int
    execution: Execution = Execution()

    @nn.compact
    def __call__(self, inputs: jnp.ndarray, seq_lengths: jnp.ndarray | None = None, train: bool = False,
                 decode: bool = False) -> jnp.ndarray:
        """Per-position logits.

        Args:
            inputs: ``[B, L, V]`` float (one-hot or soft), or ``[B, L]`` integer token ids in ``0..V-1``
                when ``config.vocab_size = V`` (a table lookup equal to embedding their one-hot vectors).
            seq_lengths: ``[B]``; positions past them are padding (never attended to).
            train: dropout (``'dropout'`` rng) and randomized positions (``'positions'`` rng).
            decode: ``inputs`` are the next tokens after those kept in the ``"cache"`` collection (a prompt,
                then one token per call), read at their absolute positions; ``mutable=["cache"]``, no
                ``seq_lengths``, no ``train``. Same parameters as a normal call (:mod:`attnjax.nn.kv_cache`).

        Returns:
            ``[B, L, C]`` float32; position ``t`` depends on ``inputs[:, :t+1]`` only.

        Raises:
            ValueError: inputs neither ``[B, L, V]`` float nor ``[B, L]`` ids (with ``vocab_size``); tied
                embeddings with ``output_size != V``; pooling set; ``decode`` without a cache, past its length,
                or with what it cannot do (:mod:`attnjax.nn.kv_cache`).
        """
        cfg = self.config
        V = token_input_size(inputs, cfg.vocab_size)
        if cfg.pooling is not None:
            raise ValueError(f"TransformerLM gives per-position logits: pooling must be None, got {cfg.pooling!r}")
        tied = getattr(cfg, "tie_embeddings", False)
        if tied and self.output_size != V:
            raise ValueError(f"tie_embeddings needs output_size == V (the read-out is the embedding transposed), "
                             f"got output_size={self.output_size}, V={V}")
        embed = Embedding(cfg, vocab_size=cfg.vocab_size, execution=self.execution, name="embed")
        h = TransformerStack(cfg, causal=True, execution=self.execution, name="decoder")(embed(inputs), seq_lengths,
                                                                                        train, decode=decode)
        return embed.attend(h) if tied else readout(cfg, self.execution, self.output_size, h)


__all__ = ["TransformerLM", "TransformerLMConfig"]
