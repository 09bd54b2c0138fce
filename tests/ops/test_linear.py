"""Linear attention, Performer FAVOR+ and local attention against plain formulas.

Linear attention's reference is the quadratic form written out here: weights
``phi(q_i).phi(k_j)`` (causal: ``j <= i``), normalized by their row sum, times ``V``. Performer is
checked against its own quadratic form (same random features) exactly, and against exact softmax
attention statistically. Local attention is checked against dense softmax with a window mask.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import dot_product_attention
from attnjax.ops import BlockSizes, linear, local

B, N, K, H = 2, 4, 2, 4
G = N // K


def _inputs(t, s, seed=0, std=1.0):
    keys = jax.random.split(jax.random.key(seed), 3)
    q = std * jax.random.normal(keys[0], (B, t, N, H))
    k = std * jax.random.normal(keys[1], (B, s, K, H))
    v = jax.random.normal(keys[2], (B, s, K, H))
    return q, k, v


def value_and_grads(f, q, k, v, seed=5):
    """``f(q, k, v)`` and the gradients of ``sum(f * r)``, in one compiled program (eager grads of
    scans would compile every primitive separately)."""
    r = jax.random.normal(jax.random.key(seed), (q.shape[0], q.shape[1], q.shape[2], v.shape[3]))

    @jax.jit
    def run(q, k, v):
        out, vjp = jax.vjp(f, q, k, v)
        return out, vjp(r)

    return run(q, k, v)


def assert_matches(f, ref, q, k, v, atol=2e-5, rtol=2e-5, grad_atol=5e-5, grad_rtol=5e-5):
    out, grads = value_and_grads(f, q, k, v)
    want, want_grads = value_and_grads(ref, q, k, v)
    np.testing.assert_allclose(out, want, atol=atol, rtol=rtol)
    for g, w in zip(grads, want_grads):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, w, atol=grad_atol, rtol=grad_rtol)


def _phi(x):
    return jnp.where(x > 0, x + 1.0, jnp.exp(x))  # elu(x) + 1 written out


def ref_kernel(phi_q, phi_k, v, causal=False, key_keep=None):
    """Quadratic form: [B, T, N, F], [B, S, N, F], [B, S, K, H] -> [B, T, N, H]."""
    scores = jnp.einsum("btnf,bsnf->bnts", phi_q, phi_k)
    t, s = scores.shape[-2:]
    if causal:
        scores = jnp.where(jnp.arange(s)[None, :] <= jnp.arange(t)[:, None], scores, 0.0)
    if key_keep is not None:
        scores = jnp.where(key_keep[:, None, None, :], scores, 0.0)
    z = scores.sum(-1, keepdims=True)
    w = jnp.where(z > 0, scores / jnp.where(z > 0, z, 1.0), 0.0)
    return jnp.einsum("bnts,bsnh->btnh", w, jnp.repeat(v, G, axis=2))


def ref_linear(q, k, v, causal=False, key_keep=None):
    return ref_kernel(_phi(q), _phi(jnp.repeat(k, G, axis=2)), v, causal, key_keep)


@pytest.mark.parametrize("t,s,causal,chunk", [(7, 7, False, 4), (7, 7, True, 3), (9, 9, True, 64),
                                              (5, 8, True, 2), (8, 5, True, 4), (6, 3, False, 4)])
def test_linear_attention_matches_quadratic_form_values_and_gradients(t, s, causal, chunk):
    q, k, v = _inputs(t, s)
    assert_matches(lambda *x: linear.linear_attention(*x, is_causal=causal, chunk_size=chunk),
                   lambda *x: ref_linear(*x, causal), q, k, v)


def test_linear_attention_key_masks_lengths_and_weights():
    q, k, v = _inputs(5, 6)
    keep = np.array([[1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0]], bool)  # batch 1 sees nothing
    out = linear.linear_attention(q, k, v, mask=jnp.asarray(keep)[:, None, None, :])
    np.testing.assert_allclose(out, ref_linear(q, k, v, key_keep=jnp.asarray(keep)), atol=2e-5)
    assert np.all(np.asarray(out)[1] == 0)
    lengths = jnp.array([4, 6])
    out = linear.linear_attention(q, k, v, key_value_seq_lengths=lengths, query_seq_lengths=jnp.array([5, 2]))
    want = ref_linear(q, k, v, key_keep=jnp.arange(6)[None, :] < lengths[:, None])
    np.testing.assert_allclose(out[0], want[0], atol=2e-5)
    np.testing.assert_allclose(out[1, :2], want[1, :2], atol=2e-5)
    assert np.all(np.asarray(out)[1, 2:] == 0)
    w = linear.linear_weights(q, k, is_causal=True)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(jnp.einsum("bnts,bsnh->btnh", w, jnp.repeat(v, G, axis=2)),
                               ref_linear(q, k, v, causal=True), atol=2e-5)


def test_causal_linear_attention_memory_is_linear_in_length():
    # The compiled causal program must not hold a [T, T] buffer: compare temp sizes at two lengths.
    def temp_bytes(t):
        q, k, v = _inputs(t, t)
        f = jax.jit(lambda *x: linear.linear_attention(*x, is_causal=True, chunk_size=32))
        return f.lower(q, k, v).compile().memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(512), temp_bytes(2048)
    assert large < 6 * small, (small, large)  # quadratic would be ~16x


def test_orthogonal_random_features_are_orthogonal_blocks_with_gaussian_norms():
    w = np.asarray(linear.orthogonal_random_features(jax.random.key(0), 10, 4))
    assert w.shape == (10, 4)
    for block in (w[0:4], w[4:8]):
        gram = block @ block.T
        np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-4)
    norms = np.linalg.norm(linear.orthogonal_random_features(jax.random.key(1), 4000, 4), axis=-1)
    assert abs(np.mean(norms ** 2) - 4.0) < 0.3  # chi^2 with H degrees of freedom has mean H


def test_performer_equals_its_quadratic_form_and_is_unbiased_kernel():
    q, k, v = _inputs(6, 6, std=0.5)
    proj = linear.orthogonal_random_features(jax.random.key(3), 64, H)

    def feats(x):  # exp(w.x - |x|^2/2) / sqrt(F), no stabilizer (inputs are small)
        return jnp.exp(x @ proj.T - 0.5 * jnp.sum(x * x, -1, keepdims=True)) / np.sqrt(proj.shape[0])

    for causal in (False, True):
        assert_matches(lambda *x: linear.performer_attention(*x, projection=proj, is_causal=causal, chunk_size=4),
                       lambda a, b, c: ref_kernel(feats(a * H ** -0.25), feats(jnp.repeat(b, G, axis=2) * H ** -0.25),
                                                  c, causal), q, k, v, atol=3e-5, rtol=3e-5, grad_rtol=5e-4)


@pytest.mark.slow
def test_performer_error_shrinks_with_features_and_meets_stated_tolerance():
    from attnjax.ops.registry import PERFORMER_FEATURES, get_spec
    from attnjax.testing import approximation_inputs

    q, k, v = approximation_inputs()
    head_dim = q.shape[-1]
    run = jax.jit(lambda p, c: linear.performer_attention(q, k, v, projection=p, is_causal=c), static_argnums=1)
    exact = {c: dot_product_attention(q, k, v, is_causal=c) for c in (False, True)}

    def rms(f, seed, causal):
        p = linear.orthogonal_random_features(jax.random.key(seed), f, head_dim)
        return float(jnp.sqrt(jnp.mean((run(p, causal) - exact[causal]) ** 2)))

    mean_rms = {f: np.mean([rms(f, s, c) for s in range(4) for c in (False, True)]) for f in (16, 256, 4096)}
    assert mean_rms[4096] < mean_rms[256] < mean_rms[16], mean_rms
    # Monte-Carlo error falls like 1 / sqrt(F): 16x more features, about 4x less error.
    assert mean_rms[4096] < 0.5 * mean_rms[256], mean_rms
    tol = get_spec("performer").approx_tol
    worst = max(rms(PERFORMER_FEATURES, s, c) for s in range(100, 106) for c in (False, True))
    assert worst <= tol, (worst, tol)


@pytest.mark.parametrize("window,causal,block", [(1, False, 2), ((2, 0), False, 3), ((1, 3), True, 4),
                                                 (0, False, 5), (10, True, 64)])
def test_local_attention_equals_dense_windowed_softmax(window, causal, block):
    q, k, v = _inputs(9, 11)
    mask = jax.random.bernoulli(jax.random.key(4), 0.8, (B, 1, 9, 11))
    bias = jax.random.normal(jax.random.key(6), (1, N, 9, 11))
    fn = lambda *x: local.local_attention(*x, bias=bias, mask=mask, local_window_size=window, is_causal=causal,
                                          block_sizes=BlockSizes(block, block))
    left, right = (window, window) if isinstance(window, int) else window
    qi, kj = np.arange(9)[:, None], np.arange(11)[None, :]
    keep = (kj >= qi - left) & (kj <= qi + right) & ((kj <= qi) if causal else True)

    def ref(q, k, v):  # plain masked softmax, written out
        logits = jnp.einsum("btnh,bsnh->bnts", q, jnp.repeat(k, G, axis=2)) / np.sqrt(H) + bias
        m = mask & keep
        row_max = jax.lax.stop_gradient(jnp.max(jnp.where(m, logits, -1e30), -1, keepdims=True))
        e = jnp.where(m, jnp.exp(jnp.where(m, logits - row_max, 0.0)), 0.0)
        z = e.sum(-1, keepdims=True)
        p = jnp.where(z > 0, e / jnp.where(z > 0, z, 1.0), 0.0)
        return jnp.einsum("bnts,bsnh->btnh", p, jnp.repeat(v, G, axis=2))

    assert_matches(fn, ref, q, k, v)
    np.testing.assert_allclose(local.local_weights(q, k, bias, mask, local_window_size=window, is_causal=causal).sum(-1),
                               np.asarray((mask & keep).any(-1), np.float32) * np.ones((B, N, 9)), atol=1e-5)


@pytest.mark.parametrize("call,exc,word", [
    (lambda q, k, v: linear.linear_attention(q, k, v, bias=jnp.zeros((1, 1, 4, 4))), ValueError, "bias"),
    (lambda q, k, v: linear.linear_attention(q, k, v, mask=jnp.ones((B, 1, 4, 4), bool)), ValueError, "key mask"),
    (lambda q, k, v: linear.linear_attention(q, k, v, chunk_size=0), ValueError, "chunk_size"),
    (lambda q, k, v: linear.linear_attention(q, k, v, feature_map=3), TypeError, "feature_map"),
    (lambda q, k, v: linear.performer_attention(q, k, v), ValueError, "projection"),
    (lambda q, k, v: linear.performer_attention(q, k, v, projection=jnp.ones((8, H + 1))), ValueError,
     "projection"),
    (lambda q, k, v: linear.orthogonal_random_features(jax.random.key(0), 0, 4), ValueError, "num_features"),
    (lambda q, k, v: local.local_attention(q, k, v, local_window_size=-1), ValueError, "local_window_size"),
    (lambda q, k, v: local.local_attention(q, k, v, local_window_size=None), ValueError, "local_window_size"),
    (lambda q, k, v: local.local_attention(q, k, v, block_sizes=BlockSizes(0, 2)), ValueError, "block_q"),
    (lambda q, k, v: local.local_attention(q, k[:, :, :1].repeat(3, axis=2), v[:, :, :1].repeat(3, axis=2)),
     ValueError, "multiple"),
])
def test_malformed_input_is_rejected_with_the_argument_named(call, exc, word):
    q, k, v = _inputs(4, 4)
    with pytest.raises(exc, match=word):
        call(q, k, v)


@pytest.mark.parametrize("name", ["linear", "performer"])
def test_key_masks_of_rank_below_4_broadcast_like_jax_nn(name):
    # Issue 24: a [S] mask raised IndexError; ranks < 4 are left-padded with 1s, as in jax.nn.
    q, k, v = _inputs(5, 6)
    fn = (linear.linear_attention if name == "linear"
          else lambda *a, **kw: linear.performer_attention(*a, rng=jax.random.key(3), **kw))
    keep = np.array([True, True, False, True, True, False])
    want = fn(q, k, v, mask=jnp.asarray(keep)[None, None, None, :])
    for mask in (keep, keep[None], keep[None, None], np.broadcast_to(keep, (N, 1, 6))):
        np.testing.assert_allclose(fn(q, k, v, mask=jnp.asarray(mask)), want, atol=1e-6, rtol=1e-6)
    # A [T, S] mask is a query-by-key mask, which kernelized attention cannot apply: named, with the caller's shape.
    with pytest.raises(ValueError, match=r"mask for \w+_attention must be a key mask.*got shape \(5, 6\)"):
        fn(q, k, v, mask=jnp.ones((5, 6), bool))
