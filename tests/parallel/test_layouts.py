"""Sequence layouts of ring attention: permutations, per-device positions, causal load balance."""

import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.ops.masks import position_mask
from attnjax.parallel import LAYOUTS, from_layout, to_layout
from attnjax.parallel.layouts import layout_positions


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("axis_size", [1, 4, 8])
def test_layout_permutation_matches_layout_positions(layout, axis_size):
    T = 32
    order = to_layout(jnp.arange(T)[None], layout, axis_size)[0]
    local = T // axis_size
    for device in range(axis_size):
        np.testing.assert_array_equal(order[device * local:(device + 1) * local],
                                      layout_positions(layout, local, axis_size, device))
    x = jnp.arange(2 * T * 3).reshape(2, T, 3)
    np.testing.assert_array_equal(from_layout(to_layout(x, layout, axis_size), layout, axis_size), x)


@pytest.mark.parametrize("layout, expected", [
    ("contiguous", [0, 1, 2, 3, 4, 5, 6, 7]),
    ("striped", [0, 2, 4, 6, 1, 3, 5, 7]),  # device 0: even positions, device 1: odd
    ("zigzag", [0, 1, 6, 7, 2, 3, 4, 5]),  # chunks of 2; device 0: chunks 0 and 3, device 1: chunks 1 and 2
])
def test_layout_orders_by_hand(layout, expected):
    np.testing.assert_array_equal(to_layout(jnp.arange(8)[None], layout, 2)[0], expected)


def test_layout_rejects_lengths_that_do_not_split():
    with pytest.raises(ValueError, match=r"x sequence length 12 must be divisible by 8 \(2 x ring axis size 4\)"):
        to_layout(jnp.zeros((1, 12)), "zigzag", 4)
    with pytest.raises(ValueError, match=r"layout must be one of .*got 'random'"):
        from_layout(jnp.zeros((1, 12)), "random", 4)


def _visible_chunk_pairs(layout, axis_size, T):
    """counts[device, step] = (query chunk, key chunk) pairs with a visible causal entry."""
    local = T // axis_size
    n = 2 if layout == "zigzag" else 1
    counts = np.zeros((axis_size, axis_size), int)
    for device in range(axis_size):
        q_chunks = np.split(np.asarray(layout_positions(layout, local, axis_size, device)), n)
        for step in range(axis_size):
            source = (device - step) % axis_size
            k_chunks = np.split(np.asarray(layout_positions(layout, local, axis_size, source)), n)
            counts[device, step] = sum(bool(position_mask(jnp.asarray(qc), jnp.asarray(kc), is_causal=True).any())
                                       for qc in q_chunks for kc in k_chunks)
    return counts


def test_zigzag_balances_causal_work():
    """Zigzag: every device has 2 of its 4 chunk pairs to compute on every remote step, 3 on its own block."""
    counts = _visible_chunk_pairs("zigzag", 8, 64)
    np.testing.assert_array_equal(counts[:, 0], 3)  # own block: two diagonal chunks + early-vs-late
    np.testing.assert_array_equal(counts[:, 1:], 2)
    contiguous = _visible_chunk_pairs("contiguous", 8, 64)
    # Device i has i + 1 useful blocks: device 7 is busy on every step, device 0 on one.
    np.testing.assert_array_equal(contiguous.sum(axis=1), np.arange(1, 9))
    # Striped: balanced, but every block has a visible entry, so none can be skipped.
    np.testing.assert_array_equal(_visible_chunk_pairs("striped", 8, 64), 1)
