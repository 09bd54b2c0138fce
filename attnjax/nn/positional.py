"""Positional encodings for the Flax models, selected by name from :data:`attnjax.ops.positional.POSITIONAL`.

The formulas live in :mod:`attnjax.ops.positional` (pure JAX); this module owns their learned tables
and turns an encoding name into what the encoder consumes, by the encoding's kind:

* ``embedding`` (sinusoidal, learned, randomized): a ``[1|B, L, D]`` vector added to the token embeddings;
* ``bias`` (alibi, t5): a ``[1, N, L, L]`` logit bias passed to every attention layer;
* ``rotary`` (rope): the positions with which every attention layer rotates its queries and keys;
* ``none`` (nope): nothing.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from attnjax.ops import positional as P


class PositionalInputs(NamedTuple):
    """What the encoder adds or passes on; unused fields are None.

    Attributes:
        embedding: ``[1|B, L, D]`` float32, added to the token embeddings.
        bias: ``[1, N, L, L]`` float32 logit bias for every attention layer.
        rotary_positions: ``[1|B, L]`` int positions for RoPE in every attention layer.
    """

    embedding: jnp.ndarray | None = None
    bias: jnp.ndarray | None = None
    rotary_positions: jnp.ndarray | None = None


def sinusoidal_table(length: int, dim: int, max_timescale: float = 10_000.0) -> jnp.ndarray:
    """Vaswani et al. sinusoids for positions ``0..length-1``: ``[length, dim]`` float32.

    Raises:
        ValueError: ``dim`` not a positive even number.
    """
    return P.sinusoidal_encoding(jnp.arange(length), dim, max_timescale=max_timescale)


class PositionalEncoding(nn.Module):
    """Positions of a length-``L`` sequence, encoded as named.

    Attributes:
        encoding: key of :data:`attnjax.ops.positional.POSITIONAL`.
        d_model: ``D`` (embedding encodings).
        num_heads: ``N`` (bias encodings have one bias per head).
        max_len: size of a learned absolute table and the range ``[0, max_len)`` randomized training
            positions are drawn from (Ruoss et al. use 2048 for test lengths up to 500). Positions past a
            learned table's end get a zero embedding.
        causal: ALiBi/T5 biases for causal attention (only past keys are penalized / bucketed).
        t5_buckets: number of T5 relative buckets.
    """

    encoding: str
    d_model: int
    num_heads: int
    max_len: int = 2048
    causal: bool = False
    t5_buckets: int = 32

    @nn.compact
    def __call__(self, batch: int, length: int, train: bool) -> PositionalInputs:
        """Encodes positions ``0..L-1`` (in training, a sorted random subset of ``[0, max_len)`` when the
        encoding asks for randomized positions; this needs a ``'positions'`` rng).

        Returns:
            :class:`PositionalInputs`.
        """
        spec = P.get_positional(self.encoding)
        if spec.randomized_train_positions and train:
            positions = P.randomized_positions(self.make_rng("positions"), batch, length, self.max_len)
        else:
            positions = P.consecutive_positions(1, length)
        if spec.kind == "rotary":
            return PositionalInputs(rotary_positions=positions)
        if spec.kind == "none":
            return PositionalInputs()
        if spec.kind == "bias":
            if spec.name == "alibi":
                bias = P.alibi_bias(positions[0], positions[0], P.alibi_slopes(self.num_heads), causal=self.causal)
            else:
                table = self.param("t5_table", lambda rng: P.t5_table_init(rng, self.t5_buckets, self.num_heads))
                bias = P.t5_relative_bias(table, positions[0], positions[0], bidirectional=not self.causal)
            return PositionalInputs(bias=bias)
        if spec.learned:
            table = self.param("table", lambda rng: P.learned_table_init(rng, self.max_len, self.d_model))
            return PositionalInputs(embedding=P.learned_encoding(table, positions))
        return PositionalInputs(embedding=P.sinusoidal_encoding(positions, self.d_model))
