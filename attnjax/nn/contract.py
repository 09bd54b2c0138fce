"""The input/output contract of every model in :data:`attnjax.nn.MODELS`, written once.

Three kinds of model, one call signature each. Every model is a Flax linen module; ``train=True``
enables dropout (rng stream ``'dropout'``) and randomized positions (rng stream ``'positions'``).
Logits are float32 whatever the computation dtype.

* ``"sequence"`` — :class:`SequenceModel`: ``inputs [B, L, V]`` float (one-hot or soft tokens) and
  ``seq_lengths [B]`` int (positions ``>= seq_lengths`` are padding and never change real positions)
  to per-position ``[B, L, C]`` logits. A model whose config sets ``vocab_size = V`` (the Transformer
  LM and encoder, the recurrent models) also takes ``inputs [B, L]`` integer token ids in ``0..V-1``:
  an embedding-table lookup equal, values and gradients, to feeding ``jax.nn.one_hot(inputs, V)``
  (an id outside ``0..V-1`` embeds as zeros, like its all-zero one-hot row). Ids avoid materializing
  ``[B, L, V]`` at large vocabularies (Zoology's 8,192). The train and eval steps pass ``inputs``
  through unchanged, so a batch may carry either form.
* ``"classifier"`` — :class:`Classifier`: ``inputs [B, L]`` (one scalar feature per position, e.g.
  MNIST-1D) or ``[B, L, F]`` to one ``[B, C]`` logit vector per example.
* ``"seq2seq"`` — :class:`Seq2SeqModel`: ``source [B, S, V]`` float and ``target_inputs [B, T]`` int
  decoder input tokens (teacher forcing: the begin token, then the targets shifted right) to
  ``[B, T, C]`` logits; ``generate`` decodes greedily under jit to a fixed length. Decoder input
  tokens are ids ``0..C-1`` plus the begin token ``C`` (:func:`begin_token`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax.numpy as jnp

Array = jnp.ndarray

MODEL_KINDS = ("sequence", "classifier", "seq2seq")


@runtime_checkable
class SequenceModel(Protocol):
    """``[B, L, V]`` tokens (or ``[B, L]`` ids with ``vocab_size``) -> ``[B, L, C]`` per-position logits."""

    def __call__(self, inputs: Array, seq_lengths: Array | None = None, train: bool = False) -> Array:
        """Args: ``inputs [B, L, V]`` float or ``[B, L]`` int ids, ``seq_lengths [B]`` (None: all real).
        Returns ``[B, L, C]`` float32."""
        ...


@runtime_checkable
class Classifier(Protocol):
    """``[B, L]`` or ``[B, L, F]`` inputs -> ``[B, C]`` logits."""

    def __call__(self, inputs: Array, seq_lengths: Array | None = None, train: bool = False) -> Array:
        """Args: ``inputs [B, L]`` or ``[B, L, F]``, ``seq_lengths [B]``. Returns ``[B, C]`` float32."""
        ...


@runtime_checkable
class Seq2SeqModel(Protocol):
    """Source ``[B, S, V]`` and decoder input tokens ``[B, T]`` -> ``[B, T, C]`` logits."""

    def __call__(self, source: Array, target_inputs: Array, source_lengths: Array | None = None,
                 train: bool = False) -> Array:
        """Teacher-forced logits.

        Args:
            source: ``[B, S, V]`` float.
            target_inputs: ``[B, T]`` int in ``0..C`` (``C`` = the begin token).
            source_lengths: ``[B]``; source positions ``>= source_lengths`` are never attended to.
            train: dropout on.

        Returns:
            ``[B, T, C]`` float32; position ``t`` depends on ``target_inputs[:, :t+1]`` only.
        """
        ...

    def generate(self, source: Array, source_lengths: Array | None = None, *, max_length: int) -> Array:
        """Greedy decoding from the begin token: ``[B, max_length]`` int32 predicted tokens."""
        ...


def begin_token(output_size: int) -> int:
    """Id of the decoder's begin token: one past the ``output_size`` output classes."""
    return int(output_size)
