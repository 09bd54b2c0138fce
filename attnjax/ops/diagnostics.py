"""Attention diagnostics: weights of any registered variant, per-head entropy and attended distance.

All functions are pure and take ``[B, N, T, S]`` weights (as returned by the ``*_weights``
functions). Rows are renormalized before computing statistics so that variants whose weights do
not sum to 1 (sigmoid attention) are comparable; rows whose weights are all zero (no visible key,
padding queries) are excluded from the per-head averages.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

Array = jnp.ndarray


def attention_weights_of(name: str, query, key, bias=None, mask=None, **kwargs) -> Array:
    """``[B, N, T, S]`` float32 weights of the registered variant ``name``.

    Args:
        name: a key of :data:`attnjax.ops.registry.ATTENTION`.
        query: ``[B, T, N, H]``; key: ``[B, S, K, H]``.
        bias, mask: as for the variant.
        **kwargs: the variant's keywords (``is_causal``, params such as ``projection`` ...).

    Raises:
        ValueError: unknown name, or a variant without weights.
    """
    from attnjax.ops.registry import get_spec  # the registry imports every variant; keep this module light

    spec = get_spec(name)
    if spec.weights_fn is None:
        raise ValueError(f"attention {name!r} has no attention weights")
    return spec.weights_fn(query, key, bias, mask, **kwargs)


def _check_weights(weights) -> Array:
    weights = jnp.asarray(weights)
    if weights.ndim != 4:
        raise ValueError(f"weights must have shape [B, N, T, S], got {tuple(weights.shape)}")
    if not jnp.issubdtype(weights.dtype, jnp.floating):
        raise TypeError(f"weights must be floating, got dtype {weights.dtype}")
    return weights.astype(jnp.float32)


def _has_weight(weights: Array) -> Array:
    """``[B, N, T]``: rows with positive total weight (the rows the per-head statistics average over)."""
    return jnp.sum(weights, axis=-1) > 0


def _normalized(weights: Array) -> tuple[Array, Array]:
    """Row-normalized weights and :func:`_has_weight` of the rows."""
    total = jnp.sum(weights, axis=-1)
    valid = total > 0
    probs = weights / jnp.where(valid, total, 1.0)[..., None]
    return probs, valid


def _per_head_mean(values: Array, valid: Array) -> Array:
    count = jnp.sum(valid, axis=(0, 2))
    summed = jnp.sum(jnp.where(valid, values, 0.0), axis=(0, 2))
    return jnp.where(count > 0, summed / jnp.maximum(count, 1), jnp.nan)


def row_entropy(weights) -> Array:
    """Entropy in nats of each (renormalized) row, ``[B, N, T]``; 0 for all-zero rows.

    ``log(S)`` is uniform attention over ``S`` keys; 0 is attention to a single key.
    """
    probs, valid = _normalized(_check_weights(weights))
    plogp = jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0)
    return jnp.where(valid, -jnp.sum(plogp, axis=-1), 0.0)


def head_entropy(weights) -> Array:
    """Mean row entropy per head, ``[N]`` float32 (NaN for a head with no valid row)."""
    weights = _check_weights(weights)
    return _per_head_mean(row_entropy(weights), _has_weight(weights))


def row_attended_distance(weights, q_positions=None, k_positions=None) -> Array:
    """Expected ``|i - j|`` under each (renormalized) row, ``[B, N, T]``; 0 for all-zero rows.

    Args:
        weights: ``[B, N, T, S]``.
        q_positions: ``[T]`` query positions (default ``0..T-1``).
        k_positions: ``[S]`` key positions (default ``0..S-1``).
    """
    weights = _check_weights(weights)
    T, S = weights.shape[-2:]
    q = jnp.arange(T) if q_positions is None else jnp.asarray(q_positions)
    k = jnp.arange(S) if k_positions is None else jnp.asarray(k_positions)
    if q.shape != (T,) or k.shape != (S,):
        raise ValueError(
            f"q_positions must have shape [T] = ({T},) and k_positions [S] = ({S},), got "
            f"{tuple(q.shape)} and {tuple(k.shape)}")
    distance = jnp.abs(q[:, None].astype(jnp.float32) - k[None, :].astype(jnp.float32))
    probs, valid = _normalized(weights)
    return jnp.where(valid, jnp.sum(probs * distance, axis=-1), 0.0)


def mean_attended_distance(weights, q_positions=None, k_positions=None) -> Array:
    """Mean attended distance per head, ``[N]`` float32 (NaN for a head with no valid row)."""
    weights = _check_weights(weights)
    return _per_head_mean(row_attended_distance(weights, q_positions, k_positions), _has_weight(weights))


def summarize(weights, q_positions=None, k_positions=None) -> dict[str, np.ndarray]:
    """``{"entropy": [N], "distance": [N]}`` as numpy arrays, for reports."""
    return {"entropy": np.asarray(head_entropy(weights)),
            "distance": np.asarray(mean_attended_distance(weights, q_positions, k_positions))}
