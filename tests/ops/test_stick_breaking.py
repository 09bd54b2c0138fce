"""Stick-breaking attention against a direct reference (values and gradients), both paths, masks, GQA,
low precision, numerical stability, the memory of the query-tile path, the kit and the Flax layer.

The reference below spells the definition out: ``beta = sigmoid(z)``, ``A_ij = beta_ij * prod_k (1 - beta_ik)``
over an explicit ``[T, S(j), S(k)]`` indicator of the keys between ``j`` and ``i``, the remainder as
``1 - sum_j A_ij`` (the reference code's form) and the visibility built with numpy, not with attnjax's rule.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn import MultiHeadAttention
from attnjax.ops import AttentionConfig
from attnjax.ops.stick_breaking import stick_breaking_attention, stick_breaking_weights

IMPLEMENTATIONS = ("dense", "blockwise")


def _inputs(seed, B, T, S, N, K, H=8, dtype=jnp.float32, spread=1.0):
    ks = jax.random.split(jax.random.key(seed), 5)
    q = spread * jax.random.normal(ks[0], (B, T, N, H))
    k = spread * jax.random.normal(ks[1], (B, S, K, H))
    v = jax.random.normal(ks[2], (B, S, K, H))
    bias = 0.5 * jax.random.normal(ks[3], (1, N, T, S))
    cot = jax.random.normal(ks[4], (B, T, N, H))
    return tuple(x.astype(dtype) for x in (q, k, v)) + (bias, cot)


def _visible(B, N, T, S, mask=None, q_len=None, kv_len=None) -> np.ndarray:
    """``[B, N, T, S]`` causal visibility, by hand (key ``i`` included)."""
    i, j = np.arange(T)[:, None], np.arange(S)[None, :]
    vis = np.broadcast_to(j <= i, (B, N, T, S)).copy()
    if mask is not None:
        vis &= np.broadcast_to(np.asarray(mask), (B, N, T, S))
    if q_len is not None:
        vis &= (np.arange(T)[None, :] < np.asarray(q_len)[:, None])[:, None, :, None]
    if kv_len is not None:
        vis &= (np.arange(S)[None, :] < np.asarray(kv_len)[:, None])[:, None, None, :]
    return vis


def reference(q, k, v, bias, visible, *, attend_current=False, scale=None):
    """Stick-breaking attention straight from the definition (float32, materializes ``[B, N, T, S, S]``)."""
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    G = N // K
    q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
    kr, vr = jnp.repeat(k, G, axis=2), jnp.repeat(v, G, axis=2)
    scale = 1 / np.sqrt(H) if scale is None else scale
    z = jnp.einsum("btnh,bsnh->bnts", q, kr) * scale + (0.0 if bias is None else bias)
    beta = jax.nn.sigmoid(z)
    i, j = np.arange(T)[:, None], np.arange(S)[None, :]
    on_stick = visible & ((j <= i) if attend_current else (j < i))  # [B, N, T, S]
    kk = np.arange(S)
    between = on_stick[:, :, :, None, :] & (kk[None, :] > np.arange(S)[:, None])  # [B, N, T, S(j), S(k)]
    kept = jnp.prod(jnp.where(between, 1.0 - beta[:, :, :, None, :], 1.0), axis=-1)  # prod_{j<k} (1 - beta_ik)
    A = jnp.where(on_stick, beta * kept, 0.0)
    remainder = 1.0 - A.sum(-1)  # [B, N, T]
    own = np.zeros((B, N, T), bool)
    rows = np.arange(min(T, S))
    own[:, :, rows] = visible[:, :, rows, rows]
    v_own = jnp.take(vr, np.minimum(np.arange(T), S - 1), axis=1)  # [B, T, N, H]
    out = jnp.einsum("bnts,bsnh->btnh", A, vr)
    return out + jnp.swapaxes(jnp.where(own, remainder, 0.0), 1, 2)[..., None] * v_own


def _all_paths(q, k, v, bias, cot, visible, *, block_q, attend_current, **masks):
    """Reference and both paths, values and ``vjp`` with the cotangent ``cot``, in one compiled program."""
    fns = {"reference": lambda q, k, v, b: reference(q, k, v, b, visible, attend_current=attend_current)}
    for impl in IMPLEMENTATIONS:
        fns[impl] = functools.partial(
            lambda q, k, v, b, impl: stick_breaking_attention(q, k, v, b, attend_current=attend_current,
                                                              implementation=impl, block_sizes=(block_q, 1),
                                                              **masks), impl=impl)

    @jax.jit
    def run(q, k, v, bias, cot):
        results = {}
        for name, fn in fns.items():
            out, pull = jax.vjp(fn, q, k, v, bias)
            results[name] = (out, pull(cot.astype(out.dtype)))
        return results

    return run(q, k, v, bias, cot)


CASES = {
    # B, T, S, N, K, mask/lengths, attend_current, block_q
    "gqa_more_queries_than_keys": (1, 9, 6, 4, 2, False, False, 4),
    "masked_lengths_attend_current": (2, 13, 13, 2, 1, True, True, 4),
}


@pytest.mark.parametrize("case", CASES)
def test_both_paths_match_the_reference_values_and_gradients(case):
    B, T, S, N, K, masked, attend_current, block_q = CASES[case]
    q, k, v, bias, cot = _inputs(1, B, T, S, N, K)
    masks, mask = {}, None
    if masked:
        rng = np.random.default_rng(0)
        mask = rng.random((B, N, T, S)) < 0.8
        mask[0, 0, 3] = False  # a fully masked row
        masks = dict(mask=jnp.asarray(mask), query_seq_lengths=jnp.array([T - 2] + [T] * (B - 1)),
                     key_value_seq_lengths=jnp.array([S - 1] + [S] * (B - 1)))
    visible = _visible(B, N, T, S, mask, *(np.asarray(masks[n]) if n in masks else None
                                           for n in ("query_seq_lengths", "key_value_seq_lengths")))
    results = _all_paths(q, k, v, bias, cot, visible, block_q=block_q, attend_current=attend_current, **masks)
    want, want_grads = results["reference"]
    for impl in IMPLEMENTATIONS:
        out, grads = results[impl]
        np.testing.assert_allclose(out, want, atol=2e-6, rtol=1e-5, err_msg=impl)
        for name, g, w in zip(("query", "key", "value", "bias"), grads, want_grads):
            np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4, err_msg=f"{impl}: d/d {name}")
    if masked:  # padding rows and the fully masked row are zeros, with no gradient to their queries
        for impl in IMPLEMENTATIONS:
            out, grads = results[impl]
            out, d_query = np.asarray(out), np.asarray(grads[0])
            assert np.all(out[0, T - 2:] == 0) and np.all(out[0, 3, 0] == 0)
            assert np.all(d_query[0, T - 2:] == 0) and np.all(d_query[0, 3, 0] == 0)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_constant_logits_give_the_geometric_stick(implementation):
    # z_ij = c for every pair: A_ij = b (1 - b)^(i - j - 1) for j < i, remainder (1 - b)^i to v_i.
    T, H, c = 6, 4, 0.7
    q = jnp.zeros((1, T, 1, H)).at[..., 0].set(1.0)
    k = jnp.zeros((1, T, 1, H)).at[..., 0].set(c * np.sqrt(H))
    w = np.asarray(stick_breaking_weights(q, k))[0, 0]
    b = 1 / (1 + np.exp(-c))
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    want = np.where(j < i, b * (1 - b) ** np.maximum(i - j - 1, 0), 0.0) + np.where(i == j, (1 - b) ** i, 0.0)
    np.testing.assert_allclose(w, want, rtol=1e-6, atol=1e-7)
    v = jax.random.normal(jax.random.key(0), (1, T, 1, 3))
    np.testing.assert_allclose(stick_breaking_attention(q, k, v, implementation=implementation, block_sizes=(4, 4)),
                               jnp.einsum("ts,bsnh->btnh", want, v), rtol=1e-5, atol=1e-6)


def test_bfloat16_stays_close_to_float32_and_dropout_drops_stick_weights_only():
    q, k, v, bias, cot = _inputs(2, 2, 10, 10, 4, 2)

    @jax.jit
    def run(q, k, v, rng):
        f = functools.partial(stick_breaking_attention, implementation="blockwise", block_sizes=(4, 4))
        return f(q, k, v), f(*(x.astype(jnp.bfloat16) for x in (q, k, v))), f(q, k, v, dropout_rate=0.5,
                                                                              dropout_rng=rng)

    out, low, dropped = run(q, k, v, jax.random.key(7))
    assert low.dtype == jnp.bfloat16
    # Rounding the inputs to bfloat16 moves the output by a few eps(bfloat16) of max|v|.
    np.testing.assert_allclose(np.asarray(low, np.float32), out, atol=8 * 2 ** -8 * float(jnp.abs(v).max()))
    assert np.all(np.isfinite(dropped)) and not np.allclose(dropped, out)
    # The first query has no earlier key: its output is its own value (the remainder is never dropped).
    np.testing.assert_allclose(dropped[:, 0], jnp.repeat(v, 2, axis=2)[:, 0], rtol=1e-6)


def test_long_sequences_and_extreme_logits_stay_finite():
    # T = 2048 with |z| up to ~1e3: products of 2000 factors and log-sigmoids far in their tails.
    T = 2048
    q, k, v, _, cot = _inputs(3, 1, T, T, 1, 1, H=4, spread=8.0)
    mask = jnp.ones((T,), bool).at[T // 2:T // 2 + 4].set(False)

    @jax.jit
    def run(q, k, v):
        results = []
        for impl in IMPLEMENTATIONS:
            f = functools.partial(stick_breaking_attention, mask=mask, implementation=impl, block_sizes=(256, 256))
            out, pull = jax.vjp(f, q, k, v)
            results.append((out, pull(cot)))
        return results, stick_breaking_weights(q, k, mask=mask)

    ((out, grads), (tiled_out, tiled_grads)), w = run(q, k, v)
    assert np.all(np.isfinite(out)) and all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_allclose(tiled_out, out, atol=1e-5)
    for g, tiled in zip(grads, tiled_grads):
        np.testing.assert_allclose(tiled, g, atol=1e-4 * float(np.abs(g).max()))
    rows = np.asarray(w.sum(-1))[0, 0]
    hidden_own = np.zeros(T, bool)
    hidden_own[T // 2:T // 2 + 4] = True  # these rows lose their remainder (their own key is masked)
    np.testing.assert_allclose(rows[~hidden_own], 1.0, atol=1e-5)
    assert np.all(rows[hidden_own] <= 1.0 + 1e-6)


def test_the_query_tile_path_holds_one_tile_of_scores():
    # Forward and backward: the compiled temporaries of the tiled path are a fraction of the dense ones.
    T = 512
    x = jnp.ones((1, T, 2, 8))

    def temp_bytes(impl):
        grad = jax.grad(lambda q, k, v: jnp.sum(stick_breaking_attention(q, k, v, implementation=impl,
                                                                         block_sizes=(64, 64))), argnums=(0, 1, 2))
        return jax.jit(grad).lower(x, x, x).compile().memory_analysis().temp_size_in_bytes

    dense, tiled = temp_bytes("dense"), temp_bytes("blockwise")
    assert tiled * 4 < dense, (tiled, dense)


def test_errors_name_the_argument():
    q, k, v, *_ = _inputs(5, 1, 4, 4, 2, 2)
    with pytest.raises(ValueError, match="is_causal=False"):
        stick_breaking_attention(q, k, v, is_causal=False)
    with pytest.raises(ValueError, match="is_causal=False"):
        stick_breaking_weights(q, k, is_causal=False)
    with pytest.raises(ValueError, match=r"implementation must be .*got 'flash'"):
        stick_breaking_attention(q, k, v, implementation="flash")
    with pytest.raises(ValueError, match="block_sizes"):
        stick_breaking_attention(q, k, v, implementation="blockwise", block_sizes=(0, 4))
    with pytest.raises(ValueError, match="attend_current"):
        stick_breaking_attention(q, k, v, attend_current=1)
    with pytest.raises(ValueError, match="mask"):
        stick_breaking_attention(q, k, v, mask=jnp.ones((3, 4), bool))
    with pytest.raises(ValueError, match="dropout_rng"):
        stick_breaking_attention(q, k, v, dropout_rate=0.1)


def test_flax_layer_option():
    # attention="stick_breaking" is the same layer with the default AttentionConfig of that name.
    assert AttentionConfig.of("stick_breaking") == AttentionConfig("stick_breaking")
    x = jax.random.normal(jax.random.key(0), (2, 6, 8))
    lengths = jnp.array([6, 4])
    config = AttentionConfig("stick_breaking", implementation="blockwise", block_q=4, options={"attend_current": True})
    layer = MultiHeadAttention(num_heads=2, head_dim=4, num_kv_heads=1, attention=config)
    params = jax.jit(functools.partial(layer.init, is_causal=True))(jax.random.key(1), x)["params"]
    assert "attention_params" not in params  # no learned parameters of its own

    def loss(p):
        return jnp.sum(layer.apply({"params": p}, x, is_causal=True, key_value_seq_lengths=lengths) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))
    with pytest.raises(ValueError, match="is_causal=False"):
        layer.apply({"params": params}, x)
    with pytest.raises(ValueError, match="options are"):
        AttentionConfig("stick_breaking", options={"temperature": 2.0})
