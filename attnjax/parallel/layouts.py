"""Sequence layouts for ring attention: which global positions each device of the ring holds.

The global sequence of length ``L·P`` is split over the ``P`` devices of the ring axis. Contiguous
sharding (``jax.shard_map`` with the sequence axis in the ``PartitionSpec``) gives device ``i`` the
``i``-th slice; the other layouts permute the sequence first (:func:`to_layout`) so that the same
contiguous sharding hands each device a different *set of positions*, and permute the output back
(:func:`from_layout`). :func:`layout_positions` gives those positions inside ``shard_map``, which
is all the masks need.

Why the layout matters for causal attention (``LAYOUTS``):

* ``contiguous``: device ``i`` holds positions ``[i·L, (i+1)·L)``. Natural for non-causal attention.
  Under a causal mask it is unbalanced: device ``i`` has useful work only for the ``i + 1`` key
  blocks at or before its own, so device ``P-1`` computes ``P`` blocks while device 0 computes one
  and then waits; every ring step lasts as long as the busiest device.
* ``striped``: position ``t`` lives on device ``t mod P``. Every (query block, key block) pair is
  then about half visible under a causal mask, so every device does the same work at every step
  (balanced), but no block is entirely hidden, so each is computed in full.
* ``zigzag``: the sequence is cut into ``2P`` chunks and device ``i`` holds chunks ``i`` and
  ``2P-1-i`` (one early, one late). Against a key block from device ``j < i`` exactly the first key
  chunk is visible, to both query chunks; against ``j > i`` exactly the second query chunk sees both
  key chunks; only ``j == i`` needs the triangular mask. So on every remote step each device computes
  two of its four (query chunk, key chunk) pairs and skips the other two (ring attention skips
  fully masked pairs with ``lax.cond``): balanced *and* about half the work of the busiest device of
  the contiguous layout.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

LAYOUTS = ("contiguous", "striped", "zigzag")  # see the module docstring for when to use which


def chunks_per_shard(layout: str) -> int:
    """Runs of consecutive positions per shard: zigzag shards are two chunks, the others one."""
    return 2 if layout == "zigzag" else 1


def check_layout(layout: str) -> None:
    """Raises ValueError unless ``layout`` is one of :data:`LAYOUTS`."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def _layout_order(length: int, layout: str, axis_size: int) -> np.ndarray:
    """``order[j]`` = global position of the token stored at index ``j`` of the permuted sequence."""
    positions = np.arange(length)
    if layout == "contiguous":
        return positions
    if layout == "striped":
        # Device i's shard (a contiguous slice after permuting) is tokens i, i + P, i + 2P, ...
        return positions.reshape(length // axis_size, axis_size).T.reshape(-1)
    chunks = positions.reshape(2 * axis_size, length // (2 * axis_size))
    pairs = [(i, 2 * axis_size - 1 - i) for i in range(axis_size)]
    return np.concatenate([chunks[c] for pair in pairs for c in pair])


def check_layout_length(name: str, length: int, layout: str, axis_size: int) -> None:
    """Raises ValueError unless a sequence of ``length`` tokens splits into the layout's shards.

    Args:
        name: the argument name used in the message, e.g. ``"query"``.
        length: global sequence length.
        layout: one of :data:`LAYOUTS`.
        axis_size: number of devices ``P`` on the ring axis.
    """
    check_layout(layout)
    multiple = 2 * axis_size if layout == "zigzag" else axis_size
    if length % multiple != 0:
        raise ValueError(
            f"{name} sequence length {length} must be divisible by {multiple} "
            f"({'2 x ' if layout == 'zigzag' else ''}ring axis size {axis_size}) for layout {layout!r}")


def _reorder(x: jnp.ndarray, order: np.ndarray, axis: int, out_sharding: Any) -> jnp.ndarray:
    if out_sharding is None:
        return jnp.take(x, order, axis=axis)
    # Under Explicit mesh axes a gather along a sharded axis needs its output sharding spelled out.
    return x.at[(slice(None),) * axis + (order,)].get(out_sharding=out_sharding)


def to_layout(x: jnp.ndarray, layout: str, axis_size: int, *, axis: int = 1,
              out_sharding: Any = None) -> jnp.ndarray:
    """Permutes a global sequence so that contiguous sharding over ``axis_size`` devices gives ``layout``.

    Use it before ``jax.shard_map`` with the sequence axis sharded (and :func:`from_layout` after)
    when calling :func:`ring_attention` with ``layout="striped"`` or ``"zigzag"`` yourself.

    Args:
        x: array whose ``axis`` is the sequence, e.g. ``[B, T, N, H]``.
        layout: one of :data:`LAYOUTS`.
        axis_size: number of devices ``P`` on the ring axis.
        axis: the sequence axis.
        out_sharding: the result's sharding; needed only when ``x`` is sharded along ``axis`` over an
            Explicit mesh axis (``jax.make_mesh``'s default), where JAX will not guess it.

    Returns:
        ``x`` with its sequence axis reordered (a copy; ``contiguous`` returns ``x`` itself).
    """
    check_layout_length("x", x.shape[axis], layout, axis_size)
    if layout == "contiguous":
        return x
    return _reorder(x, _layout_order(x.shape[axis], layout, axis_size), axis, out_sharding)


def from_layout(x: jnp.ndarray, layout: str, axis_size: int, *, axis: int = 1,
                out_sharding: Any = None) -> jnp.ndarray:
    """Inverse of :func:`to_layout`: puts a sequence stored in ``layout`` back into position order."""
    check_layout_length("x", x.shape[axis], layout, axis_size)
    if layout == "contiguous":
        return x
    return _reorder(x, np.argsort(_layout_order(x.shape[axis], layout, axis_size)), axis, out_sharding)


def layout_positions(layout: str, local_length: int, axis_size: int, index: jnp.ndarray | int) -> jnp.ndarray:
    """Global positions ``[L]`` of the ``local_length`` tokens held by ring device ``index``.

    Args:
        layout: one of :data:`LAYOUTS`.
        local_length: tokens per device ``L`` (the global length divided by ``axis_size``).
        axis_size: number of devices ``P`` on the ring axis.
        index: the device's position on the ring (``lax.axis_index``), int or traced int.

    Returns:
        ``[L]`` int32 positions in the global (unpermuted) sequence.
    """
    check_layout(layout)
    local = jnp.arange(local_length, dtype=jnp.int32)
    index = jnp.asarray(index, jnp.int32)
    if layout == "contiguous":
        return index * local_length + local
    if layout == "striped":
        return local * axis_size + index
    half = local_length // 2
    return jnp.where(local < half, index * half + local, (2 * axis_size - 1 - index) * half + local - half)
