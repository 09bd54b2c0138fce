"""Similarity-family and normalizer-family variants against plain formulas written out here.

Each reference below is the textbook formula with broadcasting (no shared code with attnjax
beyond nothing at all): logits per variant, then a masked softmax (or sigmoid) and a weighted sum.
Values and gradients (of a random projection of the output) are compared.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.ops import normalizers, similarity

B, T, S, N, K, H = 2, 4, 5, 4, 2, 3
G = N // K


def _inputs(seed=0, t=T, s=S, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(keys[0], (B, t, N, H), dtype)
    k = jax.random.normal(keys[1], (B, s, K, H), dtype)
    v = jax.random.normal(keys[2], (B, s, K, H), dtype)
    return q, k, v


def _mask(seed=1, t=T, s=S):
    m = np.array(jax.random.bernoulli(jax.random.key(seed), 0.6, (B, N, t, s)))
    m[..., 0] = True
    m[0, 1, 2, :] = False  # one fully masked row
    return jnp.asarray(m)


def _kn(x):
    """[B, S, K, H] -> [B, S, N, H]: head n reads kv head n // G."""
    return jnp.repeat(x, G, axis=2)


def _plain_softmax_attend(logits, v, mask=None, causal=False):
    t, s = logits.shape[-2:]
    keep = jnp.ones(logits.shape, bool)
    if mask is not None:
        keep = keep & mask
    if causal:
        keep = keep & (jnp.arange(s)[None, :] <= jnp.arange(t)[:, None])
    safe = jnp.where(keep, logits, 0.0)  # masked entries never reach exp (no inf, no NaN gradient)
    row_max = jax.lax.stop_gradient(jnp.max(jnp.where(keep, logits, -jnp.inf), -1, keepdims=True))
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    e = jnp.where(keep, jnp.exp(safe - row_max), 0.0)
    z = e.sum(-1, keepdims=True)
    p = jnp.where(z > 0, e / jnp.where(z > 0, z, 1.0), 0.0)
    return jnp.einsum("bnts,bsnh->btnh", p, _kn(v)), p


def _dot(q, k):
    return jnp.einsum("btnh,bsnh->bnts", q, _kn(k))


def ref_cosine(q, k, v, mask=None, causal=False, temperature=0.1):
    qn = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    kn = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    t = jnp.asarray(temperature)
    t = t if t.ndim == 0 else t[None, :, None, None]
    return _plain_softmax_attend(_dot(qn, kn) / t, v, mask, causal)


def ref_l2(q, k, v, mask=None, causal=False):
    diff = q[:, :, None, :, :] - _kn(k)[:, None, :, :, :]  # [B, T, S, N, H]
    logits = -jnp.sum(diff ** 2, -1).transpose(0, 3, 1, 2) / np.sqrt(q.shape[-1])
    return _plain_softmax_attend(logits, v, mask, causal)


def ref_additive(q, k, v, wq, wk, vs, mask=None, causal=False):
    hidden = jnp.tanh((q @ wq)[:, :, None, :, :] + (_kn(k) @ wk)[:, None, :, :, :])  # [B, T, S, N, A]
    logits = (hidden @ vs).transpose(0, 3, 1, 2)
    return _plain_softmax_attend(logits, v, mask, causal)


def ref_multiplicative(q, k, v, w, mask=None, causal=False, scale=None):
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    return _plain_softmax_attend(scale * _dot(q @ w, k), v, mask, causal)


def ref_temperature(q, k, v, mask=None, causal=False, temperature=1.0):
    return _plain_softmax_attend(_dot(q, k) / (np.sqrt(q.shape[-1]) * temperature), v, mask, causal)


def ref_sigmoid(q, k, v, mask=None, causal=False, b=None):
    s = k.shape[1]
    b = -np.log(s) if b is None else b
    w = jax.nn.sigmoid(_dot(q, k) / np.sqrt(q.shape[-1]) + b)
    if mask is not None:
        w = jnp.where(mask, w, 0.0)
    if causal:
        w = jnp.where(jnp.arange(s)[None, :] <= jnp.arange(q.shape[1])[:, None], w, 0.0)
    return jnp.einsum("bnts,bsnh->btnh", w, _kn(v)), w


def _params():
    keys = jax.random.split(jax.random.key(7), 4)
    A = 6
    return dict(wq=jax.random.normal(keys[0], (H, A)) / 2, wk=jax.random.normal(keys[1], (H, A)) / 2,
                vs=jax.random.normal(keys[2], (A,)), w=jax.random.normal(keys[3], (H, H)) / 2)


P = _params()

# name -> (attnjax function, attnjax weights function, plain reference, kwargs for attnjax)
VARIANTS = {
    "cosine": (similarity.cosine_attention, similarity.cosine_weights, ref_cosine, {}),
    "cosine_t": (similarity.cosine_attention, similarity.cosine_weights,
                 lambda *a, **kw: ref_cosine(*a, **kw, temperature=jnp.array([0.5, 1.0, 2.0, 0.25])),
                 {"temperature": jnp.array([0.5, 1.0, 2.0, 0.25])}),
    "l2": (similarity.l2_attention, similarity.l2_weights, ref_l2, {}),
    "additive": (similarity.additive_attention, similarity.additive_weights,
                 lambda q, k, v, **kw: ref_additive(q, k, v, P["wq"], P["wk"], P["vs"], **kw),
                 {"w_query": P["wq"], "w_key": P["wk"], "v_score": P["vs"]}),
    "multiplicative": (similarity.multiplicative_attention, similarity.multiplicative_weights,
                       lambda q, k, v, **kw: ref_multiplicative(q, k, v, P["w"], **kw), {"weight": P["w"]}),
    "temperature": (normalizers.softmax_temperature_attention, normalizers.softmax_temperature_weights,
                    lambda *a, **kw: ref_temperature(*a, **kw, temperature=0.7), {"temperature": 0.7}),
    "sigmoid": (normalizers.sigmoid_attention, normalizers.sigmoid_weights, ref_sigmoid, {}),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("masked,causal", [(False, False), (True, True)])
def test_values_weights_and_gradients_match_plain_formula(name, masked, causal):
    fn, weights_fn, ref, kwargs = VARIANTS[name]
    t = T
    s = T if causal else S
    q, k, v = _inputs(t=t, s=s)
    mask = _mask(t=t, s=s) if masked else None
    f = lambda *x: fn(*x, mask=mask, is_causal=causal, **kwargs)
    r = jax.random.normal(jax.random.key(3), (B, t, N, H))

    @jax.jit  # one compiled program per variant and case; eager grads would compile every primitive
    def run(q, k, v):
        out, vjp = jax.vjp(f, q, k, v)
        want, want_vjp = jax.vjp(lambda *x: ref(*x, mask=mask, causal=causal)[0], q, k, v)
        weights = weights_fn(q, k, mask=mask, is_causal=causal, **kwargs)
        return out, vjp(r), want, want_vjp(r), weights, ref(q, k, v, mask=mask, causal=causal)[1]

    out, grads, want, want_grads, weights, want_w = run(q, k, v)
    np.testing.assert_allclose(out, want, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(weights, want_w, atol=2e-6)
    for g, wg in zip(grads, want_grads):
        np.testing.assert_allclose(g, wg, atol=5e-5, rtol=5e-5)
        assert np.all(np.isfinite(g))


def test_fully_masked_row_is_zero_for_softmax_and_sigmoid():
    q, k, v = _inputs()
    mask = _mask()
    for fn in (similarity.cosine_attention, similarity.l2_attention, normalizers.sigmoid_attention):
        out = fn(q, k, v, mask=mask)
        assert np.all(np.asarray(out)[0, 2, 1] == 0)


def test_learned_temperature_and_parameters_receive_gradients_under_jit():
    q, k, v = _inputs()

    @jax.jit
    def loss(temperature, w):
        a = similarity.cosine_attention(q, k, v, temperature=temperature)
        b = similarity.multiplicative_attention(q, k, v, weight=w)
        return jnp.sum(a ** 2) + jnp.sum(b ** 2)

    g_t, g_w = jax.grad(loss, (0, 1))(jnp.full((N,), 0.3), P["w"])
    want_t = jax.grad(lambda t: jnp.sum(ref_cosine(q, k, v, temperature=t)[0] ** 2))(jnp.full((N,), 0.3))
    np.testing.assert_allclose(g_t, want_t, rtol=1e-4, atol=1e-5)
    assert g_w.shape == (H, H) and np.all(np.isfinite(g_w)) and np.any(g_w != 0)


def test_multiplicative_with_identity_equals_dot_product():
    from attnjax import dot_product_attention
    q, k, v = _inputs()
    np.testing.assert_allclose(similarity.multiplicative_attention(q, k, v, weight=jnp.eye(H)),
                               dot_product_attention(q, k, v), atol=1e-6)


def test_sigmoid_bias_is_minus_log_s_by_default_and_overridable():
    q, k, v = _inputs()
    w = normalizers.sigmoid_weights(q, k)
    np.testing.assert_allclose(w, ref_sigmoid(q, k, v)[1], atol=1e-6)
    w0 = normalizers.sigmoid_weights(q, k, sigmoid_bias=0.0)
    np.testing.assert_allclose(w0, ref_sigmoid(q, k, v, b=0.0)[1], atol=1e-6)


def test_bf16_inputs_keep_dtype_and_stay_close():
    q, k, v = _inputs()
    for fn, _, _, kwargs in VARIANTS.values():
        out = fn(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16), **kwargs)
        assert out.dtype == jnp.bfloat16
        np.testing.assert_allclose(out.astype(jnp.float32), fn(q, k, v, **kwargs), atol=0.08)


@pytest.mark.parametrize("call,exc,word", [
    (lambda q, k, v: similarity.cosine_attention(q, k, v, temperature=0.0), ValueError, "temperature"),
    (lambda q, k, v: similarity.cosine_attention(q, k, v, temperature=jnp.ones(3)), ValueError, "temperature"),
    (lambda q, k, v: similarity.l2_attention(q, k, v, scale=-1.0), ValueError, "scale"),
    (lambda q, k, v: similarity.l2_attention(q[0], k, v), ValueError, "query"),
    (lambda q, k, v: similarity.l2_attention(q, k, v, mask=jnp.ones((B, N, T, S))), TypeError, "mask"),
    (lambda q, k, v: similarity.l2_attention(q, k, v, bias=jnp.ones((B, N, T, 2))), ValueError, "bias"),
    (lambda q, k, v: similarity.additive_attention(q, k, v), ValueError, "w_query"),
    (lambda q, k, v: similarity.additive_attention(q, k, v, w_query=P["wq"], w_key=P["wk"][:, :2],
                                                   v_score=P["vs"]), ValueError, "w_key"),
    (lambda q, k, v: similarity.additive_attention(q, k, v, w_query=P["wq"], w_key=P["wk"],
                                                   v_score=P["vs"][:2]), ValueError, "v_score"),
    (lambda q, k, v: similarity.multiplicative_attention(q, k, v, weight=jnp.ones((H, H + 1))), ValueError,
     "weight"),
    (lambda q, k, v: similarity.multiplicative_attention(q, k, v, weight=jnp.ones((H, H), jnp.int32)),
     TypeError, "weight"),
    (lambda q, k, v: normalizers.sigmoid_attention(q, k, v, sigmoid_bias=jnp.ones(3)), ValueError,
     "sigmoid_bias"),
    (lambda q, k, v: normalizers.softmax_temperature_attention(q, k, v, temperature=-2.0), ValueError,
     "temperature"),
    (lambda q, k, v: normalizers.softmax_temperature_attention(q, k.astype(jnp.bfloat16), v), TypeError,
     "dtype"),
])
def test_malformed_input_is_rejected_with_the_argument_named(call, exc, word):
    q, k, v = _inputs()
    with pytest.raises(exc, match=word):
        call(q, k, v)
