"""Reading back what models sowed: attention weights per layer, for plots and diagnostics."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp


def sown_attention_weights(intermediates: Any) -> list[jnp.ndarray]:
    """Every ``attention_weights`` a model sowed, in layer order.

    Args:
        intermediates: the ``"intermediates"`` collection returned by
            ``model.apply(..., mutable=["intermediates"])`` of a model built with ``sow_attention_weights=True``.

    Returns:
        ``[B, N, T, S]`` float32 arrays, sorted by module path with numbers compared as numbers
        (``block_2`` before ``block_10``).
    """
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
        keys = [str(getattr(p, "key", getattr(p, "idx", p))) for p in path]
        if "attention_weights" in keys:
            found.append(([int(t) if t.isdigit() else t for k in keys for t in re.split(r"(\d+)", k)], leaf))
    return [leaf for _, leaf in sorted(found, key=lambda item: [(isinstance(t, str), t) for t in item[0]])]
