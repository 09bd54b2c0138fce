"""Positional encodings for the Flax models, selected by name.

``POSITIONAL`` maps a name to ``(length, dim) -> [length, dim]`` float32 table added to the token
embeddings. The formulas live in :mod:`attnjax.ops.positional` (pure JAX); more absolute encodings
plug in here as entries, while encodings acting on attention logits (RoPE, ALiBi, relative bias) go
through the attention function.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from attnjax.ops.positional import sinusoidal_encoding


def sinusoidal_table(length: int, dim: int, max_timescale: float = 10_000.0) -> jnp.ndarray:
    """Vaswani et al. sinusoids for positions ``0..length-1``: ``[length, dim]`` float32.

    Channel layout is :func:`attnjax.ops.positional.sinusoidal_encoding`'s (all sines, then all
    cosines); the embedding layer in front makes the channel order irrelevant.

    Raises:
        ValueError: ``dim`` not a positive even number.
    """
    return sinusoidal_encoding(jnp.arange(length), dim, max_timescale=max_timescale)


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
