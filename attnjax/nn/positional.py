"""Positional encodings for the Flax models, selected by name from :data:`attnjax.ops.positional.POSITIONAL`.

The formulas live in :mod:`attnjax.ops.positional` (pure JAX); this module owns their learned tables
and turns an encoding name into what the encoder consumes, by the encoding's kind:

* ``embedding`` (sinusoidal, learned): a ``[1, L, D]`` vector added to the token embeddings;
* ``bias`` (alibi, t5): a ``[1, N, L, L]`` logit bias passed to every attention layer, or (with
  ``bias_as_score_mod``) the same bias as a ``score_mod`` with its params, evaluated per logit inside the
  attention kernel and never materialized (:func:`attnjax.ops.positional.alibi_score_mod`,
  :func:`attnjax.ops.positional.t5_score_mod`: the same rule and the same parameters);
* ``rotary`` (rope): the ``[1, L]`` positions with which every attention layer rotates its queries and keys;
* ``none`` (nope): nothing.

Any encoding but ``nope`` can be *randomized* (Ruoss et al. 2023): it is read at a sorted random subset of
``[0, max_len)`` instead of ``0..L-1``, one subset shared by the batch and by every layer, drawn anew in
every forward pass.

Decoding with a cache (``decode=True``, :mod:`attnjax.nn.kv_cache`): the new tokens are encoded at their
absolute positions ``index .. index + T - 1`` of the ``L`` cache slots (embeddings and RoPE at those positions,
ALiBi/T5 from them to the cached tokens' positions, which the cache keeps). A randomized encoding reads the
positions a normal call over all ``L`` slots would read: ``0..L-1`` at evaluation with
``randomized_eval="consecutive"``; with ``"random"``, one sorted subset of ``[0, max_len)`` for the ``L``
slots, drawn from the ``'positions'`` rng, so the same key at every call of one decode gives every token its
position in one subset (as a normal call over the decoded sequence with that key).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from attnjax.nn.kv_cache import CACHE, check_room, has_cache, write
from attnjax.ops import positional as P
from attnjax.ops.flex import ScoreMod


class MissingPositionsRngError(ValueError):
    """A randomized positional encoding was applied without a ``'positions'`` rng stream.

    Raised while tracing ``apply``; :mod:`attnjax.train`'s evaluation functions catch it to name their own
    ``rng=`` argument instead of ``apply``'s ``rngs=``.
    """


class PositionalInputs(NamedTuple):
    """What the encoder adds or passes on; unused fields are None.

    Attributes:
        embedding: ``[1|B, L, D]`` float32, added to the token embeddings.
        bias: ``[1, N, L, L]`` float32 logit bias for every attention layer.
        rotary_positions: ``[1|B, L]`` int positions for RoPE in every attention layer.
        score_mod: the logit bias as a :class:`~attnjax.ops.flex.ScoreMod` (``bias`` is then None), for
            every attention layer's ``score_mod``/``score_mod_params``; its indices are global positions.
    """

    embedding: jnp.ndarray | None = None
    bias: jnp.ndarray | None = None
    rotary_positions: jnp.ndarray | None = None
    score_mod: ScoreMod | None = None


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
        max_len: size of a learned absolute table and the range ``[0, max_len)`` randomized positions are
            drawn from (Ruoss et al. use 2048 for test lengths up to 500). Positions past a learned
            table's end get a zero embedding.
        causal: ALiBi/T5 biases for causal attention (only past keys are penalized / bucketed).
        t5_buckets: number of T5 relative buckets.
        randomized: randomized positional encoding (Ruoss et al. 2023): the encoding is read at
            :func:`attnjax.ops.positional.randomized_positions`, one sorted random subset of
            ``[0, max_len)`` per forward pass, shared by the batch. Needs a ``'positions'`` rng whenever
            positions are drawn, and ``L <= max_len``. Not valid with ``nope``.
        randomized_eval: what a randomized encoding does at evaluation (``train=False``): ``"random"``
            (Ruoss et al.: a fresh random subset at evaluation too) or ``"consecutive"`` (positions
            ``0..L-1`` at evaluation, random in training only: an earlier, different method).
        bias_as_score_mod: a bias encoding (alibi, t5) returns its ``score_mod`` form instead of the
            ``[1, N, L, L]`` array (same rule, same parameters): for attention that evaluates the hook, so
            that the bias is computed per tile. Consecutive positions are then the hook's indices
            themselves (no position lookup).
    """

    encoding: str
    d_model: int
    num_heads: int
    max_len: int = 2048
    causal: bool = False
    t5_buckets: int = 32
    randomized: bool = False
    randomized_eval: str = "random"
    bias_as_score_mod: bool = False

    @nn.compact
    def __call__(self, batch: int, length: int, train: bool, index: jnp.ndarray | None = None, *,
                 decode: bool = False) -> PositionalInputs:
        """Encodes the ``L = length`` positions of a batch.

        The positions are ``0..L-1``, or with ``randomized`` (in training, and at evaluation when
        ``randomized_eval="random"``) a sorted random subset of ``[0, max_len)`` drawn from the
        ``'positions'`` rng stream (pass ``rngs={"positions": key}`` to ``apply``). Under ``init`` without
        that stream the ``'params'`` stream is used (Flax's fallback).

        Args:
            batch: ``B`` (the positions are shared by the batch, so outputs have a leading 1).
            length: ``L``.
            train: training mode.
            index: ``[L_local]`` int, encode only these of the ``L`` positions (the tokens one shard of a
                sequence-parallel model holds, :func:`attnjax.parallel.local_positions`); outputs then
                have ``L_local`` along the sequence. Randomized positions are still drawn for all ``L``
                (one subset, equal on every shard) and then indexed. A ``score_mod`` keeps all ``L``: its
                indices are global positions.
            decode: encode ``length`` new tokens after those in the ``"cache"`` collection (module docstring):
                embeddings and rotary positions ``[1, length]``, a bias ``[1, N, length, L]`` (or its
                ``score_mod``) over the ``L`` cache slots. Under ``init`` the cache is created for ``L = length``.

        Returns:
            :class:`PositionalInputs`.

        Raises:
            ValueError: unknown encoding or ``randomized_eval``; ``randomized`` with ``nope``; random
                positions with ``length > max_len`` or without a ``'positions'`` rng; ``index`` with a
                materialized logit-bias encoding (alibi, t5), whose ``[L, L]`` bias cannot be split over shards.
        """
        spec = P.check_randomized(self.encoding, self.randomized, self.randomized_eval)
        # Tables come before any positions rng is drawn, so a randomized model initializes the same
        # parameters as its non-randomized twin even when init falls back to the 'params' stream.
        table = None
        if spec.name == "t5":
            table = self.param("t5_table", lambda rng: P.t5_table_init(rng, self.t5_buckets, self.num_heads))
        elif spec.learned:
            table = self.param("table", lambda rng: P.learned_table_init(rng, self.max_len, self.d_model))
        if spec.kind == "none":
            return PositionalInputs()
        if decode:
            if index is not None:
                raise ValueError("decode=True encodes the tokens of one device; a sequence-parallel index is not "
                                 "supported")
            decoded = self._decode(spec, table, length, train)
            if decoded is not None:  # None under init: the cache was just created, encode as a normal call does
                return decoded
        positions = P.positions_for(self._positions_rng(length, train), 1, length,
                                    randomized=self._random(train), max_len=self.max_len)  # [1, L]
        if spec.kind == "bias" and self.bias_as_score_mod:
            # Consecutive positions are the hook's indices: no lookup. Its indices are global, so no index either.
            pos = positions if self._random(train) else None
            if spec.name == "alibi":
                return PositionalInputs(score_mod=P.alibi_score_mod(P.alibi_slopes(self.num_heads), pos, pos,
                                                                    is_causal=self.causal))
            return PositionalInputs(score_mod=P.t5_score_mod(table, pos, pos, is_causal=self.causal))
        if index is not None:
            if spec.kind == "bias":
                raise ValueError(f"positional encoding {self.encoding!r} is a [L, L] logit bias, which a sequence-"
                                 f"parallel model cannot split over shards; use an embedding or rotary encoding")
            positions = positions[:, index]  # [1, L_local]
        if spec.kind == "rotary":
            return PositionalInputs(rotary_positions=positions)
        if spec.name == "alibi":
            return PositionalInputs(bias=P.alibi_bias(positions, positions, P.alibi_slopes(self.num_heads),
                                                      is_causal=self.causal))
        if spec.name == "t5":
            return PositionalInputs(bias=P.t5_relative_bias(table, positions, positions, is_causal=self.causal))
        if spec.learned:
            return PositionalInputs(embedding=P.learned_encoding(table, positions))
        return PositionalInputs(embedding=P.sinusoidal_encoding(positions, self.d_model))

    def _decode(self, spec: P.PositionalSpec, table, length: int, train: bool) -> PositionalInputs | None:
        """The new tokens' inputs at their cached positions (``decode=True``); None while the cache is created."""
        exists = has_cache(self, "positions")
        cached = self.variable(CACHE, "positions", jnp.zeros, (1, length), jnp.int32)  # [1, L]
        index_var = self.variable(CACHE, "cache_index", lambda: jnp.zeros((), jnp.int32))
        if not exists:
            return None
        slots, index = cached.value.shape[1], index_var.value
        check_room(index, length, slots)
        every = P.positions_for(self._positions_rng(slots, train), 1, slots, randomized=self._random(train),
                                max_len=self.max_len)  # [1, L]: what a normal call over the L slots reads
        q = lax.dynamic_slice_in_dim(every, index, length, axis=1)  # [1, T]
        cached.value = write(cached.value, q, index)
        index_var.value = index + length
        k = cached.value  # the positions of every cached token (slots not yet read are hidden by the attention)
        if spec.kind == "rotary":
            return PositionalInputs(rotary_positions=q)
        if spec.kind == "bias":
            if spec.name == "alibi":
                slopes = P.alibi_slopes(self.num_heads)
                if self.bias_as_score_mod:
                    return PositionalInputs(score_mod=P.alibi_score_mod(slopes, q, k, is_causal=self.causal))
                return PositionalInputs(bias=P.alibi_bias(q, k, slopes, is_causal=self.causal))
            if self.bias_as_score_mod:
                return PositionalInputs(score_mod=P.t5_score_mod(table, q, k, is_causal=self.causal))
            return PositionalInputs(bias=P.t5_relative_bias(table, q, k, is_causal=self.causal))
        if spec.learned:
            return PositionalInputs(embedding=P.learned_encoding(table, q))
        return PositionalInputs(embedding=P.sinusoidal_encoding(q, self.d_model))

    def _random(self, train: bool) -> bool:
        return self.randomized and (train or self.randomized_eval == "random")

    def _positions_rng(self, length: int, train: bool):
        if not self._random(train):
            return None
        mode = "training" if train else f'evaluation with randomized_eval="{self.randomized_eval}"'
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len={self.max_len}: randomized positions are "
                             f"{length} distinct values drawn from [0, max_len) ({mode}); raise max_len")
        if not (self.has_rng("positions") or (self.is_initializing() and self.has_rng("params"))):
            raise MissingPositionsRngError(
                f"randomized positional encoding {self.encoding!r} draws random positions in {mode} and needs a "
                '\'positions\' rng: pass rngs={"positions": key} to apply (or use randomized_eval="consecutive" '
                'for positions 0..L-1 at evaluation)')
        return self.make_rng("positions")
