"""Token inputs of the sequence models: integer ids ``[B, L]`` or float vectors ``[B, L, V]``, one table.

A one-hot row times a ``[V, D]`` table *is* that table's row, so a model may read its tokens either as
float one-hot (or soft) vectors ``[B, L, V]`` or as integer ids ``[B, L]`` in ``0..V-1``; both go through
the same parameters and give the same outputs and gradients. Ids avoid the ``[B, L, V]`` array, which at
Zoology's vocabulary of 8,192 is 2 GiB for one batch of 256 x 256 tokens.

An id outside ``0..V-1`` (``-1`` for padding) embeds as a zero vector, as its all-zero one-hot row would
(``jax.nn.one_hot`` gives zeros there); values cannot be checked under jit, so this is the rule instead.
"""

from __future__ import annotations

import jax.numpy as jnp

Array = jnp.ndarray


def token_input_size(inputs: Array, vocab_size: int | None, name: str = "inputs") -> int:
    """``V`` of a sequence model's ``inputs``: float ``[B, L, V]`` or integer ``[B, L]`` ids.

    Args:
        inputs: the model's inputs.
        vocab_size: the config's ``vocab_size`` (None: float inputs only).
        name: argument name for error messages.

    Returns:
        ``V``: ``inputs.shape[-1]`` for float inputs, ``vocab_size`` for ids.

    Raises:
        ValueError: another rank or dtype; ids without ``vocab_size``; float inputs whose last axis is
            not ``vocab_size`` (when it is set).
    """
    integer = jnp.issubdtype(inputs.dtype, jnp.integer)
    if integer and inputs.ndim == 2:
        if vocab_size is None:
            raise ValueError(f"{name} are integer token ids {tuple(inputs.shape)}: set the model config's "
                             f"vocab_size (V, the number of ids) to embed them, got vocab_size=None")
        return int(vocab_size)
    if not integer and inputs.ndim == 3:
        if vocab_size is not None and inputs.shape[-1] != vocab_size:
            raise ValueError(f"{name} [B, L, V] must have V == vocab_size={vocab_size}, "
                             f"got shape {tuple(inputs.shape)}")
        return int(inputs.shape[-1])
    raise ValueError(f"{name} must have rank 3 [B, L, V] (float one-hot or soft tokens) or rank 2 [B, L] "
                     f"(integer token ids, with config vocab_size), got {inputs.dtype} shape {tuple(inputs.shape)}")


def embed_tokens(inputs: Array, table: Array, dtype=jnp.float32) -> Array:
    """``inputs`` times ``table``: a row lookup for integer ids, a product for float vectors.

    Args:
        inputs: ``[..., V]`` float, or ``[...]`` integer ids (outside ``0..V-1``: a zero row).
        table: ``[V, D]``.
        dtype: computation dtype (the table is cast to it; so are float inputs).

    Returns:
        ``[..., D]``; for ids equal to ``jax.nn.one_hot(ids, V) @ table``, values and gradients.
    """
    table = table.astype(dtype)
    if jnp.issubdtype(inputs.dtype, jnp.integer):
        V = table.shape[0]
        real = (inputs >= 0) & (inputs < V)
        # The where (not a clipped index alone) keeps out-of-range ids at zero and their gradient off the table.
        rows = jnp.take(table, jnp.clip(inputs, 0, V - 1), axis=0)
        return jnp.where(real[..., None], rows, jnp.zeros((), dtype))
    return jnp.einsum("...F,FD->...D", inputs.astype(dtype), table)


__all__ = ["embed_tokens", "token_input_size"]
