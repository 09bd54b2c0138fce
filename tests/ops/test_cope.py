"""CoPE against a direct reference (values and gradients, the table's included), both paths, masks, GQA,
shared and per-head tables, clamping, low precision, the kit and the Flax layer.

The reference spells the definition out: positions as an explicit sum over ``k >= j`` (an indicator
matrix, not a cumulative sum), the table rows *interpolated first* and then multiplied by the query (the
module gathers ``q . e[p]`` for integer ``p`` instead), and the visibility built with numpy.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn import MultiHeadAttention
from attnjax.ops import AttentionConfig
from attnjax.ops.cope import DEFAULT_NPOS_MAX, contextual_positions, cope_attention, init_cope_params
from attnjax.ops.registry import init_attention_params
from attnjax.testing import check_attention

IMPLEMENTATIONS = ("dense", "blockwise")


def _inputs(seed, B, T, S, N, K, H=8, dtype=jnp.float32):
    ks = jax.random.split(jax.random.key(seed), 5)
    q, k, v = (jax.random.normal(kk, (B, L, M, H)).astype(dtype)
               for kk, L, M in zip(ks[:3], (T, S, S), (N, K, K)))
    bias = 0.5 * jax.random.normal(ks[3], (1, N, T, S))
    cot = jax.random.normal(ks[4], (B, T, N, H))
    return q, k, v, bias, cot


def _visible(B, N, T, S, *, causal, mask=None, q_len=None, kv_len=None) -> np.ndarray:
    vis = np.ones((B, N, T, S), bool)
    if causal:
        vis &= np.arange(S)[None, :] <= np.arange(T)[:, None]
    if mask is not None:
        vis &= np.broadcast_to(np.asarray(mask), (B, N, T, S))
    if q_len is not None:
        vis &= (np.arange(T)[None, :] < np.asarray(q_len)[:, None])[:, None, :, None]
    if kv_len is not None:
        vis &= (np.arange(S)[None, :] < np.asarray(kv_len)[:, None])[:, None, None, :]
    return vis


def reference(q, k, v, table, bias, visible, *, p_max):
    """CoPE straight from the definition, float32."""
    B, T, N, H = q.shape
    S, G = k.shape[1], N // k.shape[2]
    q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
    kr, vr = jnp.repeat(k, G, axis=2), jnp.repeat(v, G, axis=2)
    scale = 1 / np.sqrt(H)
    qk = jnp.einsum("btnh,bsnh->bnts", q, kr)
    gates = jnp.where(visible, jax.nn.sigmoid(scale * qk), 0.0)
    counted_from = (np.arange(S)[None, :] >= np.arange(S)[:, None]).astype(np.float32)  # [j, k]: k >= j
    p = jnp.minimum(jnp.einsum("bntk,jk->bntj", gates, counted_from), p_max)
    low, high = jax.lax.stop_gradient(jnp.floor(p)), jax.lax.stop_gradient(jnp.ceil(p))
    if table.ndim == 2:
        e_low, e_high = table[low.astype(int)], table[high.astype(int)]  # [B, N, T, S, H]
    else:
        heads = np.arange(N)[None, :, None, None]
        e_low, e_high = table[heads, low.astype(int)], table[heads, high.astype(int)]
    frac = (p - low)[..., None]
    e = frac * e_high + (1 - frac) * e_low
    z = jnp.einsum("btnh,bntsh->bnts", q, e)
    logits = jnp.where(visible, scale * (qk + z) + bias, -1e30)
    probs = jnp.where(visible.any(-1, keepdims=True), jax.nn.softmax(logits, axis=-1), 0.0)
    return jnp.einsum("bnts,bsnh->btnh", probs, vr)


CASES = {
    # B, T, S, N, K, causal, masked, table rows P, per-head table, npos_max, block_q
    # Positions reach ~T/2 > P - 1 = 4: clamped to the table.
    "causal_gqa_clamped": (1, 9, 9, 4, 2, True, False, 5, False, None, 4),
    # Not causal, masks and lengths, one table per head, clamped by npos_max below the table's end.
    "bidirectional_masked_per_head": (2, 7, 10, 2, 1, False, True, 12, True, 3, 3),
}


@pytest.mark.parametrize("case", CASES)
def test_both_paths_match_the_reference_values_and_gradients(case):
    B, T, S, N, K, causal, masked, P, per_head, npos_max, block_q = CASES[case]
    q, k, v, bias, cot = _inputs(1, B, T, S, N, K)
    H = q.shape[-1]
    table = jax.random.normal(jax.random.key(9), (N, P, H) if per_head else (P, H))
    masks, mask = {}, None
    if masked:
        mask = np.random.default_rng(0).random((B, N, T, S)) < 0.8
        mask[1, 1, 2] = False  # a fully masked row
        masks = dict(mask=jnp.asarray(mask), query_seq_lengths=jnp.array([T - 2, T]),
                     key_value_seq_lengths=jnp.array([S - 3, S]))
    visible = _visible(B, N, T, S, causal=causal, mask=mask,
                       **{short: np.asarray(masks[n]) for short, n in (("q_len", "query_seq_lengths"),
                                                                       ("kv_len", "key_value_seq_lengths"))
                          if n in masks})
    p_max = P - 1 if npos_max is None else npos_max
    fns = {"reference": lambda q, k, v, e, b: reference(q, k, v, e, b, visible, p_max=p_max)}
    for impl in IMPLEMENTATIONS:
        fns[impl] = functools.partial(
            lambda q, k, v, e, b, impl: cope_attention(q, k, v, b, position_embeddings=e, is_causal=causal,
                                                       npos_max=npos_max, implementation=impl,
                                                       block_sizes=(block_q, 1), **masks), impl=impl)

    @jax.jit
    def run(q, k, v, e, b):
        return {name: (lambda out, pull: (out, pull(cot)))(*jax.vjp(fn, q, k, v, e, b)) for name, fn in fns.items()}

    results = run(q, k, v, table, bias)
    want, want_grads = results["reference"]
    assert float(jnp.abs(want_grads[3]).max()) > 0.1  # the table is really used
    for impl in IMPLEMENTATIONS:
        out, grads = results[impl]
        np.testing.assert_allclose(out, want, atol=2e-6, rtol=1e-5, err_msg=impl)
        for name, g, w in zip(("query", "key", "value", "position_embeddings", "bias"), grads, want_grads):
            np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4, err_msg=f"{impl}: d/d {name}")
    if masked:  # padding rows and the fully masked row are zeros, with no gradient to their queries
        for impl in IMPLEMENTATIONS:
            out, grads = results[impl]
            out, d_query = np.asarray(out), np.asarray(grads[0])
            assert np.all(out[0, T - 2:] == 0) and np.all(out[1, 2, 1] == 0)
            assert np.all(d_query[0, T - 2:] == 0) and np.all(d_query[1, 2, 1] == 0)


def test_positions_count_the_gated_keys():
    # Gates saturated at 1 make the contextual position the relative one, i - j + 1 (the paper's remark);
    # hidden keys are not counted.
    T, H = 6, 4
    x = jnp.zeros((1, T, 1, H)).at[..., 0].set(20.0)
    mask = jnp.ones((T,), bool).at[2].set(False)
    p = np.asarray(contextual_positions(x, x, mask=mask))[0, 0]
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    want = np.where(j <= i, i - j + 1 - ((j <= 2) & (2 <= i)), 0)
    np.testing.assert_allclose(p, want, atol=1e-6)


def test_bfloat16_stays_close_to_float32_and_dropout_runs():
    q, k, v, _, _ = _inputs(2, 2, 10, 10, 4, 2)
    table = jax.random.normal(jax.random.key(3), (6, 8))

    @jax.jit
    def run(q, k, v, rng):
        f = functools.partial(cope_attention, position_embeddings=table, is_causal=True, implementation="blockwise",
                              block_sizes=(4, 4))
        low = f(*(x.astype(jnp.bfloat16) for x in (q, k, v)))
        return f(q, k, v), low, f(q, k, v, dropout_rate=0.5, dropout_rng=rng)

    out, low, dropped = run(q, k, v, jax.random.key(0))
    assert low.dtype == jnp.bfloat16
    # Rounding the inputs to bfloat16 moves the output by a few eps(bfloat16) of max|v|.
    np.testing.assert_allclose(np.asarray(low, np.float32), out, atol=8 * 2 ** -8 * float(jnp.abs(v).max()))
    assert np.all(np.isfinite(dropped)) and not np.allclose(dropped, out)


def test_params_and_errors_name_the_argument():
    assert init_cope_params(None, head_dim=8, num_heads=2)["position_embeddings"].shape == (DEFAULT_NPOS_MAX + 1, 8)
    table = init_attention_params("cope", jax.random.key(0), head_dim=8, num_heads=2, npos_max=5, per_head=True)
    assert table["position_embeddings"].shape == (2, 6, 8) and not np.any(table["position_embeddings"])
    q, k, v, _, _ = _inputs(5, 1, 4, 4, 2, 2)
    with pytest.raises(ValueError, match=r"position_embeddings is required.*init_attention_params"):
        cope_attention(q, k, v)
    with pytest.raises(ValueError, match=r"position_embeddings must have shape \[P, H\]"):
        cope_attention(q, k, v, position_embeddings=jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"position_embeddings must have shape"):
        cope_attention(q, k, v, position_embeddings=jnp.zeros((3, 5, 8)))
    with pytest.raises(ValueError, match="npos_max=9 needs"):
        cope_attention(q, k, v, position_embeddings=jnp.zeros((5, 8)), npos_max=9)
    with pytest.raises(ValueError, match="npos_max"):
        init_cope_params(None, head_dim=8, num_heads=2, npos_max=-1)
    with pytest.raises(TypeError, match="position_embeddings must have a floating dtype"):
        cope_attention(q, k, v, position_embeddings=jnp.zeros((5, 8), jnp.int32))
    with pytest.raises(ValueError, match=r"implementation must be .*got 'cudnn'"):
        cope_attention(q, k, v, position_embeddings=jnp.zeros((5, 8)), implementation="cudnn")


def test_the_kit_with_a_table_that_is_not_zero():
    # The registered entry runs through check_registered (tests/ops/test_registry.py) with its zero-initialized
    # table, where CoPE is plain softmax attention; here the positions change the output.
    def fn(q, k, v, **kwargs):
        H = q.shape[-1]
        table = jnp.sin(jnp.arange(4 * H, dtype=jnp.float32).reshape(4, H))
        return cope_attention(q, k, v, position_embeddings=table, **kwargs)

    check_attention(fn, reference=None, position_free=False, max_examples=1, dtypes=())


def test_flax_layer_option():
    x = jax.random.normal(jax.random.key(0), (2, 6, 8))
    assert AttentionConfig.of("cope").init_options() == {}
    config = AttentionConfig("cope", implementation="blockwise", block_q=4, options={"npos_max": 3, "per_head": True})
    assert config.init_options() == {"npos_max": 3, "per_head": True} and config.keywords()["npos_max"] == 3
    default = MultiHeadAttention(num_heads=2, head_dim=4, attention="cope")
    shapes = jax.eval_shape(functools.partial(default.init, is_causal=True), jax.random.key(1), x)["params"]
    assert shapes["attention_params"]["position_embeddings"].shape == (DEFAULT_NPOS_MAX + 1, 4)
    layer = MultiHeadAttention(num_heads=2, head_dim=4, num_kv_heads=1, attention=config)
    params = jax.jit(functools.partial(layer.init, is_causal=True))(jax.random.key(1), x)["params"]
    assert params["attention_params"]["position_embeddings"].shape == (2, 4, 4)

    def loss(p):
        return jnp.sum(layer.apply({"params": p}, x, is_causal=True, key_value_seq_lengths=jnp.array([6, 4])) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    # The zero-initialized table gets a gradient (through q . e at the interpolated positions).
    assert float(jnp.abs(grads["attention_params"]["position_embeddings"]).sum()) > 0
    assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))
    with pytest.raises(ValueError, match="options are"):
        AttentionConfig("cope", options={"npos": 3})
