"""LSTM baseline with the Transformer's interface: ``[B, L, V]`` inputs -> ``[B, L, C]`` logits."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LSTMConfig:
    """Attributes: ``hidden_size`` per layer, ``num_layers`` stacked unidirectional LSTMs."""

    hidden_size: int = 128
    num_layers: int = 1

    def __post_init__(self):
        if self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError(f"hidden_size and num_layers must be >= 1, got {self}")


class LSTM(nn.Module):
    """Left-to-right LSTM stack followed by a per-position linear read-out.

    It reads the raw ``[B, L, V]`` vectors (as in Delétang et al.). Being unidirectional, trailing
    padding cannot influence real positions, so ``seq_lengths`` is accepted for interface parity and
    ignored.

    Attributes:
        config: :class:`LSTMConfig`.
        output_size: ``C``.
    """

    config: LSTMConfig
    output_size: int

    @nn.compact
    def __call__(self, inputs: jnp.ndarray, seq_lengths: jnp.ndarray | None = None, train: bool = False) -> jnp.ndarray:
        """``[B, L, V]`` -> ``[B, L, C]`` float32 logits (``seq_lengths``, ``train`` unused)."""
        del seq_lengths, train
        if inputs.ndim != 3:
            raise ValueError(f"inputs must have rank 3 [B, L, V], got shape {inputs.shape}")
        x = inputs
        for i in range(self.config.num_layers):
            x = nn.RNN(nn.OptimizedLSTMCell(self.config.hidden_size), name=f"lstm_{i}")(x)
        return nn.Dense(self.output_size, name="logits")(x).astype(jnp.float32)
