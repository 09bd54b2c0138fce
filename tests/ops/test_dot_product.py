"""The dense core against jax.nn and flax.linen (values and gradients), its properties and its errors."""

from __future__ import annotations


import chex
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import attnjax
from attnjax.ops.masks import attention_mask

TOL = {jnp.float32: 2e-5, jnp.bfloat16: 3e-2, jnp.float16: 4e-3}
GRAD_TOL = {jnp.float32: 5e-5, jnp.bfloat16: 1e-1, jnp.float16: 1e-2}


def _qkv(seed, B, T, S, N, K, H, dtype=jnp.float32):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(kq, (B, T, N, H), dtype), jax.random.normal(kk, (B, S, K, H), dtype),
            jax.random.normal(kv, (B, S, K, H), dtype))


def _visible_rows(B, T, S, N, **kw):
    """[B, T, N, 1] float mask of query rows with at least one visible key (jax.nn averages the others)."""
    m = attention_mask(T, S, **kw)
    if m is None:
        return jnp.ones((B, T, N, 1))
    rows = jnp.broadcast_to(jnp.any(m, axis=-1), (B, N, T))
    return jnp.transpose(rows, (0, 2, 1))[..., None].astype(jnp.float32)


def _random_mask(seed, shape, p=0.7):
    m = jax.random.bernoulli(jax.random.key(seed), p, shape)
    return m.at[..., 0].set(True)  # keep at least one key per row so jax.nn's rows are comparable


SHAPES = [  # B, T, S, N, K, H
    (2, 5, 5, 2, 2, 8),
    (1, 7, 11, 4, 2, 8),   # T != S, GQA
    (2, 6, 9, 4, 1, 16),   # multi-query
]
OPTIONS = [
    {},
    {"is_causal": True},
    {"local_window_size": 2},
    {"local_window_size": (3, 0)},
    {"is_causal": True, "local_window_size": (2, 1)},
    {"key_value_seq_lengths": "kv"},
    {"query_seq_lengths": "q", "key_value_seq_lengths": "kv"},
    {"mask": "mask"},
    {"bias": "bias"},
    {"bias": "bias_heads", "mask": "mask_batch", "is_causal": True},
]


def _materialize(opts, B, T, S, N, dtype):
    out = dict(opts)
    lens = {"q": jnp.array([T, max(1, T - 2)] * B, jnp.int32)[:B],
            "kv": jnp.array([max(1, S - 3), S] * B, jnp.int32)[:B]}
    if "query_seq_lengths" in out:
        out["query_seq_lengths"] = lens["q"]
    if "key_value_seq_lengths" in out:
        out["key_value_seq_lengths"] = lens["kv"]
    if out.get("mask") == "mask":
        out["mask"] = _random_mask(1, (B, N, T, S))
    elif out.get("mask") == "mask_batch":
        out["mask"] = _random_mask(2, (B, 1, 1, S))
    if out.get("bias") == "bias":
        out["bias"] = jax.random.normal(jax.random.key(3), (B, N, T, S), dtype)
    elif out.get("bias") == "bias_heads":
        out["bias"] = jax.random.normal(jax.random.key(4), (1, N, T, S), dtype)
    return out


def _loss(fn, cot, rows):
    def loss(q, k, v):
        return jnp.sum(fn(q, k, v).astype(jnp.float32) * cot * rows)
    return loss


# float32 over the whole option grid; the half-precision dtypes over the options that change numerics most.
LOW_PRECISION_OPTIONS = [OPTIONS[i] for i in (0, 1, 5, 9)]
GRID = ([(o, jnp.float32) for o in OPTIONS]
        + [(o, d) for o in LOW_PRECISION_OPTIONS for d in (jnp.bfloat16, jnp.float16)])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("opts, dtype", GRID,
                         ids=lambda x: jnp.dtype(x).name if not isinstance(x, dict) else "-".join(sorted(x)) or "plain")
def test_matches_jax_nn_values_and_grads(shape, opts, dtype):
    B, T, S, N, K, H = shape
    q, k, v = _qkv(0, B, T, S, N, K, H, dtype)
    kw = _materialize(opts, B, T, S, N, dtype)
    mask_kw = {m: kw[m] for m in ("mask", "is_causal", "query_seq_lengths", "key_value_seq_lengths") if m in kw}
    if "local_window_size" in kw:
        w = kw["local_window_size"]
        mask_kw["window"] = (w, w) if isinstance(w, int) else w
    rows = _visible_rows(B, T, S, N, **mask_kw)
    ours = lambda q, k, v: attnjax.dot_product_attention(q, k, v, **kw)
    ref = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, **kw)

    out, expected = ours(q, k, v), ref(q, k, v)
    assert out.dtype == dtype and out.shape == q.shape
    np.testing.assert_allclose(np.asarray(out, np.float32) * rows, np.asarray(expected, np.float32) * rows,
                               atol=TOL[dtype], rtol=TOL[dtype])
    # Rows with no visible key are zeros here (jax.nn returns the mean of the values instead).
    np.testing.assert_array_equal(np.asarray(out, np.float32) * (1 - rows), 0.0)

    cot = jax.random.normal(jax.random.key(9), q.shape)
    grads = jax.grad(_loss(ours, cot, rows), argnums=(0, 1, 2))(q, k, v)
    ref_grads = jax.grad(_loss(ref, cot, rows), argnums=(0, 1, 2))(q, k, v)
    for name, g, r in zip("qkv", grads, ref_grads):
        assert np.all(np.isfinite(np.asarray(g, np.float32))), name
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r, np.float32),
                                   atol=GRAD_TOL[dtype], rtol=GRAD_TOL[dtype], err_msg=f"d{name}")


@pytest.mark.parametrize("masked", [False, True])
def test_matches_flax_linen(masked):
    B, T, S, N, H = 2, 6, 8, 3, 8
    q, k, v = _qkv(1, B, T, S, N, N, H)
    mask = _random_mask(5, (B, 1, T, S)) if masked else None
    bias = jax.random.normal(jax.random.key(6), (B, N, T, S))
    ours = lambda q, k, v: attnjax.dot_product_attention(q, k, v, bias, mask)
    ref = lambda q, k, v: fnn.dot_product_attention(q, k, v, bias=bias, mask=mask)
    np.testing.assert_allclose(ours(q, k, v), ref(q, k, v), atol=2e-5, rtol=2e-5)
    cot = jax.random.normal(jax.random.key(7), q.shape)
    ones = jnp.ones((B, T, N, 1))
    for g, r in zip(jax.grad(_loss(ours, cot, ones), (0, 1, 2))(q, k, v),
                    jax.grad(_loss(ref, cot, ones), (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(g, r, atol=5e-5, rtol=5e-5)


def test_unbatched_inputs_match_jax_nn():
    q, k, v = (x[0] for x in _qkv(2, 1, 5, 6, 4, 2, 8))
    np.testing.assert_allclose(attnjax.dot_product_attention(q, k, v, is_causal=True),
                               jax.nn.dot_product_attention(q, k, v, is_causal=True), atol=2e-5)
    weights = attnjax.attention_weights(q, k, is_causal=True)
    assert weights.shape == (4, 5, 6)  # [N, T, S]
    np.testing.assert_allclose(weights, attnjax.attention_weights(q[None], k[None], is_causal=True)[0])


def test_logit_softcap_matches_formula():
    q, k, v = _qkv(3, 1, 4, 6, 2, 2, 8)
    cap, scale = 2.0, 0.7
    out = attnjax.dot_product_attention(q, k, v, scale=scale, logit_softcap=cap)
    logits = np.einsum("btnh,bsnh->bnts", np.asarray(q), np.asarray(k)) * scale
    logits = cap * np.tanh(logits / cap)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, np.einsum("bnts,bsnh->btnh", p, np.asarray(v)), atol=2e-5)


def test_dropout_is_seeded_and_unbiased():
    q, k, v = _qkv(4, 1, 3, 5, 1, 1, 4)
    plain = attnjax.dot_product_attention(q, k, v)
    drop = jax.jit(jax.vmap(lambda r: attnjax.dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=r)))
    outs = drop(jax.random.split(jax.random.key(0), 4000))
    np.testing.assert_array_equal(outs[0], drop(jax.random.split(jax.random.key(0), 4000))[0])
    assert not np.allclose(outs[0], plain)
    np.testing.assert_allclose(outs.mean(0), plain, atol=0.06)  # inverted scaling keeps the mean


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=lambda d: jnp.dtype(d).name)
def test_fully_masked_rows_give_zeros_and_finite_grads(dtype):
    q, k, v = _qkv(5, 2, 4, 4, 2, 2, 8, dtype)
    mask = jnp.ones((2, 1, 4, 4), bool).at[0, :, 1, :].set(False)
    lengths = jnp.array([0, 4], jnp.int32)  # batch 0 has no keys at all
    for kw in ({"mask": mask}, {"key_value_seq_lengths": lengths}):
        f = lambda q, k, v: attnjax.dot_product_attention(q, k, v, **kw)
        out = f(q, k, v)
        assert np.all(np.isfinite(np.asarray(out, np.float32)))
        dead = out[0, 1] if "mask" in kw else out[0]
        np.testing.assert_array_equal(np.asarray(dead, np.float32), 0.0)
        grads = jax.grad(lambda *a: jnp.sum(f(*a).astype(jnp.float32) ** 2), (0, 1, 2))(q, k, v)
        assert all(np.all(np.isfinite(np.asarray(g, np.float32))) for g in grads)
        w = attnjax.attention_weights(q, k, **kw)
        assert np.all(np.isfinite(np.asarray(w)))


def test_one_trace_per_shape():
    @jax.jit
    @chex.assert_max_traces(n=2)
    def f(q, k, v):
        return attnjax.dot_product_attention(q, k, v, is_causal=True)

    chex.clear_trace_counter()
    for seed in range(3):
        f(*_qkv(seed, 1, 4, 4, 2, 2, 8))
    for seed in range(3):  # one new shape, one new trace
        f(*_qkv(seed, 1, 6, 6, 2, 2, 8))
    with pytest.raises(AssertionError):
        f(*_qkv(0, 1, 8, 8, 2, 2, 8))


# ---------------------------------------------------------------- properties (hypothesis)
# Hypothesis varies values, seeds, positions and constants over a few fixed shapes, so the jitted
# functions below compile once per shape instead of once per example.

PROPERTY_SHAPES = [(1, 1, 1, 1, 1, 4), (2, 5, 7, 4, 2, 8), (1, 6, 6, 2, 1, 8)]  # B, T, S, N, K, H
cases = st.tuples(st.sampled_from(PROPERTY_SHAPES), st.integers(0, 2**16))
PROPERTY_SETTINGS = settings(max_examples=12, deadline=None)

attend = jax.jit(attnjax.dot_product_attention, static_argnames=("is_causal",))
weights = jax.jit(attnjax.attention_weights, static_argnames=("is_causal",))


@jax.jit
def _causal_prefix_and_grads(q, k, v, t):
    """Causal outputs of positions <= t (others zeroed) and the gradient of their squared sum."""
    def prefix(q, k, v):
        out = attnjax.dot_product_attention(q, k, v, is_causal=True)
        return jnp.where((jnp.arange(q.shape[1]) <= t)[None, :, None, None], out, 0.0)
    return prefix(q, k, v), jax.grad(lambda *a: jnp.sum(prefix(*a) ** 2), (0, 1, 2))(q, k, v)


@jax.jit
def _masked_output_and_grads(q, k, v, mask):
    f = lambda k, v: attnjax.dot_product_attention(q, k, v, mask=mask)
    return f(k, v), jax.grad(lambda k, v: jnp.sum(f(k, v) ** 2), (0, 1))(k, v)


@PROPERTY_SETTINGS
@given(cases, st.booleans())
def test_rows_sum_to_one(case, causal):
    (B, T, S, N, K, H), seed = case
    q, k, _ = _qkv(seed, B, T, S, N, K, H)
    w = weights(q, k, is_causal=causal)
    assert w.shape == (B, N, T, S)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)


@PROPERTY_SETTINGS
@given(cases)
def test_permuting_keys_and_values_together_changes_nothing(case):
    (B, T, S, N, K, H), seed = case
    q, k, v = _qkv(seed, B, T, S, N, K, H)
    perm = np.random.default_rng(seed).permutation(S)
    np.testing.assert_allclose(attend(q, k[:, perm], v[:, perm]), attend(q, k, v), atol=2e-5)


@PROPERTY_SETTINGS
@given(cases)
def test_masked_key_has_no_influence_on_output_or_gradient(case):
    (B, T, S, N, K, H), seed = case
    q, k, v = _qkv(seed, B, T, S, N, K, H)
    j = seed % S
    mask = jnp.ones((1, 1, 1, S), bool).at[..., j].set(S == 1)  # a lone key stays visible
    out, (gk, gv) = _masked_output_and_grads(q, k, v, mask)
    if S == 1:
        return
    out2, _ = _masked_output_and_grads(q, k.at[:, j].set(1e3), v.at[:, j].set(-1e3), mask)
    np.testing.assert_allclose(out, out2, atol=2e-5)
    np.testing.assert_array_equal(gk[:, j], 0.0)
    np.testing.assert_array_equal(gv[:, j], 0.0)


@PROPERTY_SETTINGS
@given(cases)
def test_causal_output_ignores_later_tokens(case):
    (B, T, _, N, K, H), seed = case
    q, k, v = _qkv(seed, B, T, T, N, K, H)
    t = seed % T
    out, grads = _causal_prefix_and_grads(q, k, v, t)
    later = (jnp.arange(T) > t)[None, :, None, None]
    noise = _qkv(seed + 1, B, T, T, N, K, H)
    perturbed = [jnp.where(later, x + 5 * n, x) for x, n in zip((q, k, v), noise)]
    np.testing.assert_allclose(out, _causal_prefix_and_grads(*perturbed, t)[0], atol=2e-5)
    for g in grads:
        np.testing.assert_array_equal(g[:, t + 1:], 0.0)


@PROPERTY_SETTINGS
@given(cases, st.floats(-50, 50))
def test_constant_added_to_a_row_changes_nothing(case, c):
    (B, T, S, N, K, H), seed = case
    q, k, v = _qkv(seed, B, T, S, N, K, H)
    row_shift = c * jax.random.normal(jax.random.key(seed + 7), (B, N, T, 1))
    np.testing.assert_allclose(attend(q, k, v, bias=row_shift), attend(q, k, v), atol=5e-5)


# ---------------------------------------------------------------- errors

GOOD = dict(zip("qkv", _qkv(0, 2, 4, 5, 4, 2, 8)))


@pytest.mark.parametrize("change, error, words", [
    ({"q": jnp.ones((2, 4, 8))}, ValueError, "query must have rank 4"),
    ({"k": jnp.ones((2, 5, 3, 8)), "v": jnp.ones((2, 5, 3, 8))}, ValueError, "multiple of key/value heads"),
    ({"k": jnp.ones((2, 5, 2, 4))}, ValueError, "key head dim"),
    ({"v": jnp.ones((2, 6, 2, 8))}, ValueError, "value must match key"),
    ({"k": jnp.ones((3, 5, 2, 8))}, ValueError, "batch sizes differ"),
    ({"q": jnp.ones((2, 4, 4, 8), jnp.int32)}, TypeError, "query must have a floating dtype"),
    ({"v": jnp.ones((2, 5, 2, 8), jnp.bfloat16)}, TypeError, "share one dtype"),
    ({"mask": jnp.ones((2, 4, 4, 4), bool)}, ValueError, "mask must be broadcastable"),
    ({"mask": jnp.ones((1, 1, 1, 4, 5), bool)}, ValueError, "mask must be broadcastable"),  # rank 5
    ({"mask": jnp.ones((3, 5), bool)}, ValueError, "mask must be broadcastable"),  # left-padded: T is 4
    ({"mask": jnp.ones((1, 1, 4, 5), jnp.float32)}, TypeError, "mask must be boolean"),
    ({"bias": jnp.ones((2, 3, 4, 5))}, ValueError, "bias must be broadcastable"),
    ({"local_window_size": -1}, ValueError, "local_window_size"),
    ({"local_window_size": (1, 2, 3)}, ValueError, "local_window_size"),
    ({"local_window_size": 1.5}, ValueError, "local_window_size"),
    ({"key_value_seq_lengths": jnp.ones((3,), jnp.int32)}, ValueError, "key_value_seq_lengths must have shape"),
    ({"query_seq_lengths": jnp.ones((2,))}, TypeError, "query_seq_lengths must be an integer"),
    ({"scale": -1.0}, ValueError, "scale"),
    ({"logit_softcap": 0.0}, ValueError, "logit_softcap"),
    ({"dropout_rate": 0.1}, ValueError, "dropout_rng"),
    ({"dropout_rate": 1.0, "dropout_rng": jax.random.key(0)}, ValueError, "dropout_rate must be in"),
    ({"implementation": "nope"}, ValueError, "'dense'"),
])
def test_bad_input_is_named(change, error, words):
    args = {**GOOD, **change}
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    with pytest.raises(error, match=words.replace("(", r"\(").replace("[", r"\[")):
        attnjax.dot_product_attention(q, k, v, **args)


@pytest.mark.parametrize("fn", ["dot_product_attention", "attention_weights"])
def test_rank3_errors_show_the_shapes_passed_and_how_they_were_read(fn):
    """[B, T, D] inputs (heads not split) are read as unbatched [T, N, H]: the message says so, in the
    caller's shapes, not the [1, ...] shapes the checks see."""
    q, k = jnp.ones((2, 8, 64)), jnp.ones((2, 8, 32))
    args = (q, k, k) if fn == "dot_product_attention" else (q, k)
    with pytest.raises(ValueError) as info:
        getattr(attnjax, fn)(*args)
    message = str(info.value)
    assert "query (2, 8, 64), key (2, 8, 32)" in message, message
    assert "(1, 2, 8, 64)" not in message and "(1, 2, 8, 32)" not in message, message
    assert "read as unbatched query [T, N, H]" in message, message
    with pytest.raises(ValueError, match=r"as passed: query \(2, 8, 64\).*read as unbatched"):
        attnjax.dot_product_attention(q, q, q, key_value_seq_lengths=jnp.array([8, 8]))


def test_mixed_rank_error_says_when_rank3_is_unbatched():
    q, kv = jnp.ones((2, 8, 64)), jnp.ones((2, 8, 4, 16))
    with pytest.raises(ValueError, match=r"query must have rank 4.*got shape \(2, 8, 64\).*as passed: query "
                                         r"\(2, 8, 64\), key \(2, 8, 4, 16\).*only when all of them have rank 3"):
        attnjax.dot_product_attention(q, kv, kv)


@pytest.mark.parametrize("implementation", ["dense", "blockwise"])
def test_nan_in_a_masked_out_value_reaches_the_output_as_in_jax_nn(implementation):
    """Documented: masked-out weights are exact zeros and 0 * NaN = NaN; a NaN key is masked away."""
    q, k, v = _qkv(4, 1, 4, 6, 2, 2, 8)
    visible = dict(key_value_seq_lengths=jnp.array([4]))  # keys 4 and 5 are masked out
    nan_value, nan_key = v.at[:, 5].set(jnp.nan), k.at[:, 5].set(jnp.nan)
    ours = attnjax.dot_product_attention(q, k, nan_value, implementation=implementation, **visible)
    assert np.isnan(ours).all() and np.isnan(jax.nn.dot_product_attention(q, k, nan_value, **visible)).all()
    np.testing.assert_allclose(attnjax.dot_product_attention(q, nan_key, v, implementation=implementation, **visible),
                               jax.nn.dot_product_attention(q, k, v, **visible), atol=2e-5)
    doc = " ".join(attnjax.dot_product_attention.__doc__.split())
    assert "a NaN (or inf) in the value of a masked-out key still makes the output NaN" in doc
    assert "as in ``jax.nn.dot_product_attention``" in doc


def test_error_message_names_both_shapes():
    with pytest.raises(ValueError) as info:
        attnjax.dot_product_attention(GOOD["q"], GOOD["k"], GOOD["v"], mask=jnp.ones((2, 4, 4, 4), bool))
    assert "(2, 4, 4, 5)" in str(info.value) and "(2, 4, 4, 4)" in str(info.value)
