"""Positional encodings for the Flax models, selected by name.

``POSITIONAL`` maps a name to ``(length, dim) -> [length, dim]`` float32 table added to the token
embeddings. ``attnjax/ops/positional.py`` (pure JAX) will provide more encodings; they plug in here as
new entries, and encodings that act on attention logits (RoPE, ALiBi) will go through the attention
function instead.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np


def sinusoidal_table(length: int, dim: int, max_timescale: float = 10_000.0) -> jnp.ndarray:
    """Vaswani et al. sinusoids: ``[length, dim]`` with sin on even and cos on odd channels.

    Raises:
        ValueError: ``dim`` not a positive even number.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be a positive even number for sinusoidal positions, got {dim}")
    position = np.arange(length, dtype=np.float32)[:, None]
    inv_freq = np.exp(-np.log(max_timescale) * np.arange(0, dim, 2, dtype=np.float32) / dim)
    table = np.zeros((length, dim), dtype=np.float32)
    table[:, 0::2] = np.sin(position * inv_freq)
    table[:, 1::2] = np.cos(position * inv_freq)
    return jnp.asarray(table)


def no_positions(length: int, dim: int) -> jnp.ndarray:
    """No positional information (a bag-of-tokens control)."""
    return jnp.zeros((length, dim), jnp.float32)


POSITIONAL: dict[str, Callable[[int, int], jnp.ndarray]] = {
    "sinusoidal": sinusoidal_table,
    "none": no_positions,
}


def get_positional(name: str) -> Callable[[int, int], jnp.ndarray]:
    """Looks a positional encoding up by name; ValueError lists the known names."""
    if name not in POSITIONAL:
        raise ValueError(f"positional must be one of {sorted(POSITIONAL)}, got {name!r}")
    return POSITIONAL[name]
