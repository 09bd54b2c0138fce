"""Bidirectional Transformer encoder: per-position logits ``[B, L, C]`` or, pooled, class logits ``[B, C]``.

Built from the shared :class:`~attnjax.nn.blocks.TransformerBlock`; the config, with its named presets
(Delétang et al. 2022 among them), lives in :mod:`attnjax.nn.transformer_config`.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from attnjax.nn.blocks import Embedding, TransformerStack, classifier_inputs, pool, readout
from attnjax.nn.execution import Execution
from attnjax.nn.tokens import token_input_size
from attnjax.nn.transformer_config import TRANSFORMER_PRESETS, TransformerConfig, transformer_config


class TransformerEncoder(nn.Module):
    """Embeds inputs, adds positions, runs the shared blocks, reads out logits.

    With ``config.pooling=None`` it is a SequenceModel (``[B, L, V]`` one-hot or soft tokens, or ``[B, L]``
    integer ids with ``config.vocab_size`` -> ``[B, L, C]``); with ``"cls"`` or ``"mean"`` a Classifier
    (``[B, L]`` or ``[B, L, F]`` -> ``[B, C]``).
    Self-attention is bidirectional unless ``config.causal``.

    Attributes:
        config: :class:`TransformerConfig`.
        output_size: ``C`` classes (per position, or per example when pooled).
        execution: :class:`~attnjax.nn.execution.Execution`: compute dtype, sown weights, sequence
            parallelism (parameters do not depend on it).
    """

    config: TransformerConfig
    output_size: int
    execution: Execution = Execution()

    @nn.compact
    def __call__(self, inputs: jnp.ndarray, seq_lengths: jnp.ndarray | None = None, train: bool = False) -> jnp.ndarray:
        """Logits.

        Args:
            inputs: ``[B, L, V]`` float or ``[B, L]`` integer ids with ``config.vocab_size`` (per-position);
                ``[B, L]`` or ``[B, L, F]`` (pooled).
            seq_lengths: ``[B]`` real lengths; positions past them are padding, never attended to (and
                left out of the mean), so they never change the real outputs. None: all real.
            train: dropout (``'dropout'`` rng) and randomized positions (``'positions'`` rng).

        Returns:
            ``[B, L, C]`` or, pooled, ``[B, C]`` float32.

        Raises:
            ValueError: inputs of the wrong rank.
        """
        cfg, run = self.config, self.execution
        if cfg.pooling is None:
            token_input_size(inputs, cfg.vocab_size)
        x = Embedding(cfg, vocab_size=cfg.vocab_size, execution=run, name="embed")(
            inputs if cfg.pooling is None else classifier_inputs(inputs))
        h = TransformerStack(cfg, causal=cfg.causal, execution=run, name="encoder")(x, seq_lengths, train)
        if cfg.pooling is not None:
            h = pool(h, seq_lengths, cfg.pooling)
        return readout(cfg, run, self.output_size, h)


__all__ = ["TRANSFORMER_PRESETS", "TransformerConfig", "TransformerEncoder", "transformer_config"]
