"""The existing biases and masks through the hook (``attnjax.ops.alibi_score_mod``, ``t5_score_mod``,
``softcap_score_mod``, ``causal_mask_mod``, ``window_mask_mod``, ``segment_mask_mod``) against their
materialized forms, values and gradients (query, key, value and the learned ALiBi slopes or T5 table), on the
dense and blockwise paths, causal and not, with grouped-query heads.

Each case runs the materialized reference and both hook paths in one jitted program (compiling dominates);
``T`` and ``S`` are not multiples of the 8 x 8 tiles, so padded tiles are covered.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.ops import (BlockSizes, alibi_bias, alibi_score_mod, causal_mask_mod, dot_product_attention,
                         segment_mask, segment_mask_mod, softcap_score_mod, t5_relative_bias, t5_score_mod,
                         window_mask_mod)
from attnjax.ops import flex

TILES = BlockSizes(8, 8)
B, T, S, N, K, H = 2, 21, 19, 4, 2, 8  # 4 query heads on 2 key/value heads


def _inputs(seed):
    ks = jax.random.split(jax.random.PRNGKey(seed), 4)
    return (jax.random.normal(ks[0], (B, T, N, H)), jax.random.normal(ks[1], (B, S, K, H)),
            jax.random.normal(ks[2], (B, S, K, H)), jax.random.normal(ks[3], (B, T, N, H)))


def _value_and_grads(attention, q, k, v, params, cot):
    """Output and gradients of ``sum(out * cot)`` with respect to q, k, v and the params."""
    def loss(q, k, v, params):
        out = attention(q, k, v, params)
        return jnp.sum(out * cot), out

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(q, k, v, params)
    return out, grads


# Randomized positions (Ruoss et al.): sorted distinct draws per batch row, queries and keys apart.
Q_POS = jnp.sort(jax.random.choice(jax.random.PRNGKey(1), 64, (T,), replace=False))[None].repeat(B, 0)
K_POS = jnp.sort(jax.random.choice(jax.random.PRNGKey(2), 64, (S,), replace=False))[None].repeat(B, 0)
Q_POS = Q_POS.at[1].set(jnp.sort(jax.random.choice(jax.random.PRNGKey(3), 64, (T,), replace=False)))


def _case(name, is_causal, randomized):
    """``(params, hook(params) -> ScoreMod, materialized bias(params) -> [1|B, N, T, S])``: the positions are
    the indices themselves, or (``randomized``) looked up in ``[B, T]`` / ``[B, S]`` position arrays."""
    q_pos, k_pos = (Q_POS, K_POS) if randomized else (None, None)
    grid = (Q_POS, K_POS) if randomized else (jnp.arange(T), jnp.arange(S))
    if name == "alibi":
        slopes = jnp.array([0.5, 0.25, 0.125, 0.0625]) / (8 if randomized else 1)
        return (slopes, lambda p: alibi_score_mod(p, q_pos, k_pos, is_causal=is_causal),
                lambda p: alibi_bias(*grid, p, is_causal=is_causal))
    # T5 with 8 buckets up to distance 16: the log-spaced buckets are reached.
    table = 0.5 * jax.random.normal(jax.random.PRNGKey(9), (8, N))
    return (table, lambda p: t5_score_mod(p, q_pos, k_pos, is_causal=is_causal, max_distance=16),
            lambda p: t5_relative_bias(p, *grid, is_causal=is_causal, max_distance=16))


@pytest.mark.parametrize("name, is_causal, randomized", [("alibi", False, False), ("alibi", True, True),
                                                         ("t5", False, True), ("t5", True, False)])
def test_positional_hooks_equal_the_materialized_bias(name, is_causal, randomized):
    params, hook, bias = _case(name, is_causal, randomized)
    q, k, v, cot = _inputs(0)

    @jax.jit
    def three(q, k, v, params):
        reference = lambda q, k, v, p: dot_product_attention(q, k, v, bias(p), is_causal=is_causal,
                                                             implementation="dense")

        def hooked(implementation, **extra):
            return lambda q, k, v, p: dot_product_attention(q, k, v, is_causal=is_causal, implementation=implementation,
                                                            **hook(p).keywords(), **extra)

        return [_value_and_grads(f, q, k, v, params, cot)
                for f in (reference, hooked("dense"), hooked("blockwise", block_sizes=TILES))]

    (ref, ref_grads), *paths = three(q, k, v, params)
    for path, (out, grads) in zip(("dense", "blockwise"), paths):
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0, err_msg=path)
        for arg, g, r in zip(("query", "key", "value", "params"), grads, ref_grads):
            assert g.shape == r.shape and np.all(np.isfinite(g)), (path, arg)
            np.testing.assert_allclose(g, r, atol=1e-4, rtol=0, err_msg=f"{path}: gradient wrt {arg}")
    assert float(jnp.max(jnp.abs(ref_grads[3]))) > 1e-2  # the slopes' / table's gradient is really compared


# Packed documents: 7, 9 and 5 queries / 6, 8 and 5 keys in row 0, one document in row 1.
Q_IDS = jnp.array([[0] * 7 + [1] * 9 + [2] * 5, [3] * T], jnp.int32)
K_IDS = jnp.array([[0] * 6 + [1] * 8 + [2] * 5, [3] * S], jnp.int32)


@pytest.mark.parametrize("name", ["causal", "softcap_window_documents"])
def test_softcap_and_mask_hooks_equal_the_materialized_forms(name):
    """``causal_mask_mod`` against ``is_causal``; ``softcap_score_mod`` with ``window_mask_mod`` (causal, a left
    window) and-ed with ``segment_mask_mod`` (as one mask_mod) against ``logit_softcap``, ``local_window_size``
    and ``segment_mask``."""
    q, k, v, cot = _inputs(2)
    hooks = {}
    if name == "causal":
        hooks["mask_mod"], reference = causal_mask_mod(), {"is_causal": True}
    else:
        window, documents = window_mask_mod((4, 0), is_causal=True), segment_mask_mod(Q_IDS, K_IDS)
        hooks["mask_mod"] = lambda b, h, q_idx, kv_idx: window(b, h, q_idx, kv_idx) & documents(b, h, q_idx, kv_idx)
        hooks.update(softcap_score_mod(1.5).keywords())
        reference = {"is_causal": True, "local_window_size": (4, 0), "mask": segment_mask(Q_IDS, K_IDS),
                     "logit_softcap": 1.5}

    @jax.jit
    def three(q, k, v):
        dense = lambda q, k, v, _: dot_product_attention(q, k, v, scale=0.9, implementation="dense", **reference)
        hooked = lambda implementation: lambda q, k, v, _: dot_product_attention(
            q, k, v, scale=0.9, implementation=implementation, block_sizes=TILES, **hooks)
        return [_value_and_grads(f, q, k, v, None, cot)[:2] for f in (dense, hooked("dense"), hooked("blockwise"))]

    (ref, ref_grads), *paths = three(q, k, v)
    for out, grads in paths:
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
        for g, r in zip(grads[:3], ref_grads[:3]):
            np.testing.assert_allclose(g, r, atol=1e-4, rtol=0)


def test_mask_hooks_classify_tiles_like_the_rule_and_are_hashable():
    """``causal_mask_mod`` reads positions only and its tiles are those ``is_causal`` visits; two calls give
    equal (hashed equal) hooks, so an eager call reuses the compiled kernel; a document mask_mod hides the
    tiles pairing different documents."""
    assert causal_mask_mod() == causal_mask_mod() and hash(window_mask_mod(3)) == hash(window_mask_mod((3, 3)))
    assert alibi_score_mod(jnp.ones(2)).score_mod == alibi_score_mod(jnp.zeros(2)).score_mod
    mods = flex.check_mods(None, causal_mask_mod(), None, score_dtype=jnp.float32)
    assert mods.mask_uses == (False, False, True, True)
    states = np.asarray(flex.block_states(mods, B=1, N=1, T=24, S=24, bq=8, bk=8))
    np.testing.assert_array_equal(states, [[flex.PARTIAL, flex.EMPTY, flex.EMPTY],
                                           [flex.FULL, flex.PARTIAL, flex.EMPTY],
                                           [flex.FULL, flex.FULL, flex.PARTIAL]])
    ids = jnp.array([[0] * 8 + [1] * 16], jnp.int32)
    documents = flex.check_mods(None, segment_mask_mod(ids), None, score_dtype=jnp.float32)
    states = np.asarray(flex.block_states(documents, B=1, N=1, T=24, S=24, bq=8, bk=8, consts=()))
    np.testing.assert_array_equal(states, [[flex.FULL, flex.EMPTY, flex.EMPTY],
                                           [flex.EMPTY, flex.FULL, flex.FULL],
                                           [flex.EMPTY, flex.FULL, flex.FULL]])


@pytest.mark.parametrize("call, error, words", [
    (lambda: alibi_score_mod(jnp.ones((2, 2))), ValueError, r"slopes must have shape \[N\], got \(2, 2\)"),
    (lambda: alibi_score_mod(jnp.ones(2), k_positions=jnp.arange(3)), ValueError, r"k_positions needs q_positions"),
    (lambda: alibi_score_mod(jnp.ones(2), jnp.arange(3.0)), TypeError, r"q_positions must be an integer array"),
    (lambda: t5_score_mod(jnp.ones(8)), ValueError, r"table must have shape \[num_buckets, N\], got \(8,\)"),
    (lambda: t5_score_mod(jnp.ones((8, 2)), max_distance=0), ValueError, r"max_distance must be an int >= 1"),
    (lambda: softcap_score_mod(-1.0), ValueError, r"cap must be a finite number > 0, got -1.0"),
    (lambda: window_mask_mod((2, -1)), ValueError, r"local_window_size sides must be >= 0"),
    (lambda: segment_mask_mod(jnp.ones((2, 3))), TypeError, r"query_segment_ids must be an integer array"),
    (lambda: segment_mask_mod(Q_IDS, K_IDS[:1]), ValueError, r"one batch size B, got \(2, 21\) and \(1, 19\)"),
])
def test_bad_hook_arguments_are_named(call, error, words):
    with pytest.raises(error, match=words):
        call()
