"""Attention weights per layer, for plots and diagnostics: read back from what a model sowed, or from one call of
a trained model with its weights sown (:func:`apply_with_attention_weights`; a seq2seq model on its own greedy
output: :func:`greedy_attention_weights`)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.nn.contract import begin_token
from attnjax.nn.execution import Execution


def sown_attention_weights(intermediates: Any, module: str | None = None) -> list[jnp.ndarray]:
    """Every ``attention_weights`` a model sowed, in layer order.

    Args:
        intermediates: the ``"intermediates"`` collection returned by
            ``model.apply(..., mutable=["intermediates"])`` of a model built with
            ``execution=Execution(sow_attention_weights=True)``.
        module: only the weights sown below modules of this name (``"cross_attention"``: a decoder's
            cross-attention, not its self-attention); None: all of them.

    Returns:
        ``[B, N, T, S]`` float32 arrays, sorted by module path with numbers compared as numbers
        (``block_2`` before ``block_10``).
    """
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
        keys = [str(getattr(p, "key", getattr(p, "idx", p))) for p in path]
        if "attention_weights" in keys and (module is None or module in keys):
            found.append(([int(t) if t.isdigit() else t for k in keys for t in re.split(r"(\d+)", k)], leaf))
    return [leaf for _, leaf in sorted(found, key=lambda item: [(isinstance(t, str), t) for t in item[0]])]


def apply_with_attention_weights(model: nn.Module, params: Any, *args: Any, module: str | None = None,
                                 **kwargs: Any) -> tuple[Any, list[jnp.ndarray]]:
    """``model``'s output on one call and the attention weights of each of its layers in that call.

    ``model`` runs as built, with ``sow_attention_weights=True`` added to its execution: the same parameters
    serve, so a trained model needs no second copy. Works under ``jax.jit``.

    Args:
        model: a model with an ``execution`` (:func:`attnjax.nn.models.takes_execution`).
        params: its parameters.
        *args, **kwargs: the rest of ``model.apply``'s arguments (inputs, ``train=False``, ``rngs``, ...).
        module: only the weights sown below modules of this name (:func:`sown_attention_weights`).

    Returns:
        ``(output, weights)``: ``weights`` as :func:`sown_attention_weights` orders them, ``[B, N, T, S]``
        each (the RNN seq2seq decoder's one attention: ``[B, T, S]``).

    Raises:
        ValueError: ``model`` has no execution.
    """
    if not isinstance(getattr(model, "execution", None), Execution):
        raise ValueError(f"{type(model).__name__} has no execution, so it cannot sow attention weights")
    sowing = model.clone(execution=dataclasses.replace(model.execution, sow_attention_weights=True))
    output, sown = sowing.apply({"params": params}, *args, mutable=["intermediates"], **kwargs)
    return output, sown_attention_weights(sown.get("intermediates", {}), module)


def greedy_attention_weights(model: nn.Module, params: Any, source: jnp.ndarray, source_lengths: jnp.ndarray,
                             max_length: int, module: str | None = None) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
    """A seq2seq model's greedy tokens ``[B, max_length]`` and the attention weights that produced them: the
    decoder runs once more, teacher-forced on its own tokens (what ``generate`` does step by step), with its
    weights sown (:func:`apply_with_attention_weights`, whose ``module`` this passes on)."""
    tokens = model.apply({"params": params}, source, source_lengths, max_length=max_length, method="generate")
    begin = jnp.full((tokens.shape[0], 1), begin_token(model.output_size), tokens.dtype)
    inputs = jnp.concatenate([begin, tokens[:, :-1]], axis=1)
    return tokens, apply_with_attention_weights(model, params, source, inputs, source_lengths=source_lengths,
                                                module=module)[1]
