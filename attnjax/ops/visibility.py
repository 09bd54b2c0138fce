"""The one rule of which keys a query may see: causality, a local window and sequence lengths.

Every path (dense masks, the blockwise kernel, the ring kernels, the row-has-a-key test of the
back ends) asks this module, so the rule exists once. It works on integer *positions*, so the same
call serves the whole ``[T, S]`` grid (dense), one block of it (blockwise) or a tile of a sharded
sequence whose positions are not contiguous (ring, zigzag layout).

Query ``i`` may see key ``j`` when all of these hold:

* ``j <= i`` if ``is_causal`` (top-left aligned, as ``jax.nn``);
* ``i - left <= j <= i + right`` for a window ``(left, right)``;
* ``i < query_seq_lengths[b]`` and ``j < key_value_seq_lengths[b]`` when lengths are given.

A user mask or segment ids further restrict this; they are data, not part of the rule.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax.numpy as jnp

from attnjax.ops.checks import Window

Array = jnp.ndarray


def _and(conds: list) -> Any:
    return functools.reduce(jnp.logical_and, conds) if conds else None


def _as_column(lengths) -> Array:
    """``[B]`` lengths (or one int) as ``[B|1, 1]`` int32, to compare with a row of positions."""
    return jnp.asarray(lengths, jnp.int32).reshape(-1, 1)


@dataclasses.dataclass(frozen=True)
class Visibility:
    """Causality and a local window (hashable: a static argument of jitted kernels).

    Attributes:
        is_causal: key ``j`` is visible to query ``i`` only if ``j <= i``.
        window: ``(left, right)`` with both sides ``>= 0``, or None.
    """

    is_causal: bool = False
    window: Window | None = None

    @property
    def left(self) -> int | None:
        """Largest ``i - j`` allowed (None: unbounded)."""
        return None if self.window is None else self.window[0]

    @property
    def right(self) -> int | None:
        """Largest ``j - i`` allowed (None: unbounded). Window sides are ``>= 0``, so causality wins."""
        if self.is_causal:
            return 0
        return None if self.window is None else self.window[1]

    @property
    def restricts_positions(self) -> bool:
        return self.left is not None or self.right is not None

    def pair_visible(self, q_pos, k_pos) -> Any:
        """Causality and the window for a query at ``q_pos`` and a key at ``k_pos``, elementwise (scalars in a
        ``mask_mod``, broadcasting arrays in :meth:`mask`); None when neither restricts positions."""
        parts = []
        if self.right is not None:
            parts.append(k_pos <= q_pos + self.right)
        if self.left is not None:
            parts.append(k_pos >= q_pos - self.left)
        return _and(parts)

    def mask(self, q_pos: Array, k_pos: Array, *, query_seq_lengths=None, key_value_seq_lengths=None
             ) -> Array | None:
        """Boolean visibility ``[B|1, T, S]`` of queries at ``q_pos [T]`` and keys at ``k_pos [S]``.

        Lengths are ``[B]`` int arrays (or one int for every row); None when nothing is hidden.
        """
        pairs = self.pair_visible(q_pos[:, None], k_pos[None, :])
        parts = [] if pairs is None else [pairs[None]]
        if key_value_seq_lengths is not None:
            parts.append((k_pos[None, :] < _as_column(key_value_seq_lengths))[:, None, :])
        if query_seq_lengths is not None:
            parts.append((q_pos[None, :] < _as_column(query_seq_lengths))[:, :, None])
        return _and(parts)

    def all_visible(self, q_first, q_last, k_first, k_last, *, query_seq_lengths=None,
                    key_value_seq_lengths=None) -> Any:
        """Whether every query in positions ``[q_first, q_last]`` sees every key in ``[k_first, k_last]``
        (traced bool; None when the rule hides nothing, so every pair is visible)."""
        conds = []
        if self.right is not None:
            conds.append(k_last <= q_first + self.right)
        if self.left is not None:
            conds.append(k_first >= q_last - self.left)
        if key_value_seq_lengths is not None:
            conds.append(k_last < jnp.min(jnp.asarray(key_value_seq_lengths)))
        if query_seq_lengths is not None:
            conds.append(q_last < jnp.min(jnp.asarray(query_seq_lengths)))
        return _and(conds)

    def key_range(self, q_first, q_last, num_keys, *, key_value_seq_lengths=None) -> tuple[Any, Any]:
        """``[lo, hi)``: the key positions in ``[0, num_keys)`` that some query in ``[q_first, q_last]``
        may see (in any batch row). Elementwise, so per-row bounds come from ``q_first = q_last = q_pos``."""
        lo, hi = jnp.zeros_like(jnp.asarray(q_first)), jnp.full_like(jnp.asarray(q_last), num_keys)
        if self.left is not None:
            lo = jnp.maximum(lo, q_first - self.left)
        if self.right is not None:
            hi = jnp.minimum(hi, q_last + self.right + 1)
        if key_value_seq_lengths is not None:
            hi = jnp.minimum(hi, jnp.max(jnp.asarray(key_value_seq_lengths)))
        return lo, jnp.maximum(hi, lo)

    def query_range(self, k_first, k_last, num_queries, *, query_seq_lengths=None, key_value_seq_lengths=None
                    ) -> tuple[Any, Any]:
        """``[lo, hi)``: the query positions in ``[0, num_queries)`` that see some key in ``[k_first, k_last]``."""
        lo, hi = jnp.zeros_like(jnp.asarray(k_first)), jnp.full_like(jnp.asarray(k_last), num_queries)
        if self.right is not None:
            lo = jnp.maximum(lo, k_first - self.right)
        if self.left is not None:
            hi = jnp.minimum(hi, k_last + self.left + 1)
        if query_seq_lengths is not None:
            hi = jnp.minimum(hi, jnp.max(jnp.asarray(query_seq_lengths)))
        if key_value_seq_lengths is not None:  # keys past every sequence's end are seen by nobody
            hi = jnp.where(k_first < jnp.max(jnp.asarray(key_value_seq_lengths)), hi, lo)
        return lo, jnp.maximum(hi, lo)

    def key_bounds(self, T: int, S: int, *, key_value_seq_lengths=None) -> tuple[Array, Array]:
        """``(lo, hi)``, each ``[B|1, T]`` int32: query ``i`` of batch row ``b`` sees exactly the keys
        ``lo[b, i] <= j < hi[b, i]`` (``hi <= lo``: none), in O(B*T). Query lengths are not applied."""
        rows = jnp.arange(T, dtype=jnp.int32)[None, :]
        kv_len = S if key_value_seq_lengths is None else jnp.minimum(_as_column(key_value_seq_lengths), S)
        lo, hi = jnp.zeros_like(rows), jnp.minimum(jnp.full_like(rows, S), kv_len)
        if self.left is not None:
            lo = jnp.maximum(lo, rows - self.left)
        if self.right is not None:
            hi = jnp.minimum(hi, rows + self.right + 1)
        return lo, hi

    def rows_with_keys(self, T: int, S: int, *, query_seq_lengths=None, key_value_seq_lengths=None
                       ) -> Array | None:
        """``[B|1, T]`` bool: which query rows see at least one key, in O(B*T) (None: all of them)."""
        if not self.restricts_positions and query_seq_lengths is None and key_value_seq_lengths is None:
            return None
        rows = jnp.arange(T)[None, :]
        lo, hi = self.key_bounds(T, S, key_value_seq_lengths=key_value_seq_lengths)
        ok = lo < hi
        if query_seq_lengths is not None:
            ok = ok & (rows < _as_column(query_seq_lengths))
        return ok
