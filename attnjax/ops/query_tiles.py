"""Row-local attention evaluated one query tile at a time: ``O(block_q * S)`` memory, forward and backward.

Some attention mechanisms are not a softmax over ``logit + bias``, so they cannot run in the flash-style
kernel of :mod:`attnjax.ops.blockwise` (stick-breaking attention, :mod:`attnjax.ops.stick_breaking`) or need
a whole key row at once (CoPE's reverse cumulative sums, :mod:`attnjax.ops.cope`). Each query row of them
depends only on that row's logits, so they are computed for ``block_q`` query rows at a time: a
``lax.map`` over query tiles whose body is rematerialized (``jax.checkpoint``), so that the backward pass
recomputes each tile's ``[B, N, block_q, S]`` intermediates instead of storing them for every tile. Keys
and values are whole in every tile.

Both paths of such a mechanism call the same row function: the ``"dense"`` path once on all ``T`` rows,
the ``"blockwise"`` path on each tile (:func:`map_query_tiles`), so they differ only in how the rows are
grouped.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops.blockwise import BlockSizes, as_block_sizes

Array = jnp.ndarray

# ``implementation=`` values of the row-local mechanisms: "dense" (all rows at once; "xla" is jax.nn's
# name for the materialized path) and "blockwise" (query tiles).
TILED_IMPLEMENTATIONS = ("blockwise", "dense", "xla")
# Query rows per tile when no ``block_sizes`` is given.
DEFAULT_BLOCK_Q = 128


def check_implementation(fn_name: str, implementation: Any) -> str:
    """``"dense"`` or ``"blockwise"`` (None and ``"xla"`` are ``"dense"``).

    Raises:
        ValueError: any other value, naming ``implementation`` and the valid ones.
    """
    if implementation is None or implementation in ("dense", "xla"):
        return "dense"
    if implementation == "blockwise":
        return "blockwise"
    raise ValueError(f"implementation must be None or one of {TILED_IMPLEMENTATIONS} for {fn_name}, got "
                     f"{implementation!r}")


def block_q_of(block_sizes: Any) -> int:
    """Query rows per tile from ``block_sizes`` (a :class:`BlockSizes`, a ``(block_q, block_k)`` pair or
    None for :data:`DEFAULT_BLOCK_Q`). ``block_k`` is not used: a tile holds every key of its rows."""
    block_sizes = as_block_sizes(block_sizes)
    return DEFAULT_BLOCK_Q if block_sizes is None else block_sizes.block_q


def _tile(x: Array | None, nq: int, bq: int) -> Array | None:
    """``[b, n, T|1, s]`` -> ``[nq, b, n, bq, s]`` (None when ``x`` is None or has no query axis)."""
    if x is None or x.shape[2] == 1:
        return None
    b, n, t, s = x.shape
    x = jnp.pad(x, ((0, 0), (0, 0), (0, nq * bq - t), (0, 0)))
    return jnp.moveaxis(x.reshape(b, n, nq, bq, s), 2, 0)


def map_query_tiles(rows: Callable[..., Array], query: Array, bias: Array | None, mask: Array | None, *,
                    block_q: int, offset: Any = 0) -> Array:
    """``rows`` on ``block_q`` query rows at a time, rematerialized in the backward pass.

    Args:
        rows: ``(query [B, t, N, H], q_pos [t] int32, bias [b, n, t|1, s] | None, mask | None, tile int32)
            -> [B, t, N, Hv]``: the output of the query rows at positions ``q_pos``. Keys, values and
            parameters are closed over (they are the same for every tile); ``tile`` numbers the tile (for
            per-tile random streams such as dropout).
        query: ``[B, T, N, H]``.
        bias, mask: rank-4 ``[B|1, N|1, T|1, S|1]`` or None; sliced per tile where they have a query axis.
        block_q: query rows per tile (``min(block_q, T)`` is used; ``T`` is padded up to a multiple, and the
            padded rows, masked out and zero, are dropped).
        offset: the position of query row 0 among the keys (:func:`check_query_offset`): ``rows`` gets
            ``q_pos = offset + t``.

    Returns:
        ``[B, T, N, Hv]`` as ``rows`` returns it.
    """
    B, T, N, H = query.shape
    bq = min(int(block_q), T)
    nq = -(-T // bq)
    q = jnp.pad(query, ((0, 0), (0, nq * bq - T), (0, 0), (0, 0)))
    q = jnp.moveaxis(q.reshape(B, nq, bq, N, H), 1, 0)
    positions = jnp.arange(nq * bq, dtype=jnp.int32).reshape(nq, bq)
    bias_tiles, mask_tiles = _tile(bias, nq, bq), _tile(mask, nq, bq)
    if mask_tiles is not None:
        # Padded query rows see no key, so they stay finite (and are dropped below).
        mask_tiles = mask_tiles & (positions < T)[:, None, None, :, None]

    def body(xs):
        q_tile, q_pos, bias_tile, mask_tile, tile = xs
        return rows(q_tile, q_pos + offset, bias if bias_tile is None else bias_tile,
                    mask if mask_tile is None else mask_tile, tile)

    out = jax.lax.map(jax.checkpoint(body, prevent_cse=False),
                      (q, positions, bias_tiles, mask_tiles, jnp.arange(nq, dtype=jnp.int32)))
    out = jnp.moveaxis(out, 0, 1)  # [B, nq, bq, N, Hv]
    return out.reshape(B, nq * bq, N, out.shape[-1])[:, :T]


def check_query_offset(query_offset: Any) -> Array:
    """``query_offset`` as an int32 scalar: the key position of query row 0, so that query ``t`` sits at key
    position ``query_offset + t`` (its causal horizon and its own key). 0 aligns queries and keys at the start
    (self-attention); decoding with a key/value cache passes the number of keys cached before the new queries.
    It may be traced (a cache index under ``jit``).

    Raises:
        ValueError: a negative Python int, or an array that is not a scalar.
        TypeError: a non-integer value.
    """
    if isinstance(query_offset, (bool, np.bool_)) or not jnp.issubdtype(jnp.result_type(query_offset), jnp.integer):
        raise TypeError(f"query_offset must be an integer (the key position of the first query), got "
                        f"{type(query_offset).__name__}: {query_offset!r}")
    if np.ndim(query_offset) != 0:
        raise ValueError(f"query_offset must be a scalar, got shape {tuple(np.shape(query_offset))}")
    if isinstance(query_offset, (int, np.integer)) and query_offset < 0:
        raise ValueError(f"query_offset must be >= 0, got {query_offset}")
    return jnp.asarray(query_offset, jnp.int32)


__all__ = ["BlockSizes", "DEFAULT_BLOCK_Q", "TILED_IMPLEMENTATIONS", "block_q_of", "check_implementation",
           "check_query_offset", "map_query_tiles"]
