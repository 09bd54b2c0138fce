"""``attnjax.dot_product_attention`` as a drop-in for ``jax.nn.dot_product_attention``, on dense and blockwise.

Written from jax.nn's documented behaviour (jax 0.10): the ``"xla"`` implementation name, the
``return_residual`` log-sum-exp (in the input dtype, with cotangents of that dtype), left-padding of rank < 4
masks and biases, and x64 mode; jax's own ``testDotProductAttention`` runs with attnjax substituted. The
intended differences that remain are tested too, so they stay deliberate:

* a query row with no visible key gives zeros (jax.nn: the mean of the values) and a ``-inf``
  residual (jax.nn: a large finite negative number);
* complex inputs are rejected (jax.nn computes them);
* ``return_residual`` is computed by the ``"dense"`` and ``"blockwise"`` paths only, and it is
  differentiable (jax.nn's XLA path returns it but drops its gradient).

flax's ``attention_fn`` convention is tested in ``tests/nn/test_flax_attention_fn.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.ops import BlockSizes, dot_product_attention
from attnjax.ops.masks import attention_mask

PATHS = {"dense": {"implementation": "dense"},
         "blockwise": {"implementation": "blockwise", "block_sizes": BlockSizes(4, 3)}}


def _qkv(B=2, T=7, S=9, N=4, K=2, H=8, dtype=jnp.float32, seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(kq, (B, T, N, H), dtype), jax.random.normal(kk, (B, S, K, H), dtype),
            jax.random.normal(kv, (B, S, K, H), dtype))


def _jax_nn(q, k, v, **kw):
    """jax.nn with the key/value heads repeated (its XLA path needs K == N for some options)."""
    G = q.shape[-2] // k.shape[-2]
    return jax.nn.dot_product_attention(q, jnp.repeat(k, G, -2), jnp.repeat(v, G, -2), implementation="xla", **kw)


# --------------------------------------------------------------------------- 1. implementation="xla"

def test_xla_is_jax_nn_name_for_the_dense_path():
    q, k, v = _qkv()
    np.testing.assert_array_equal(dot_product_attention(q, k, v, implementation="xla"),
                                  dot_product_attention(q, k, v, implementation="dense"))
    with pytest.raises(ValueError, match=r"implementation must be one of \[.*'xla'.*\] or None, got 'flash'"):
        dot_product_attention(q, k, v, implementation="flash")


# --------------------------------------------------------------------------- 2. return_residual

def _plain_lse(q, k, bias=None, is_causal=False, local_window_size=None):
    """Autodiff reference for the residual: ``logsumexp`` of the masked, biased logits, ``[B, T, N]``."""
    G = q.shape[2] // k.shape[2]
    logits = jnp.einsum("btnh,bsnh->bnts", q, jnp.repeat(k, G, 2)) / np.sqrt(q.shape[-1])
    logits = logits if bias is None else logits + bias
    window = None if local_window_size is None else tuple(local_window_size)
    mask = attention_mask(q.shape[1], k.shape[1], is_causal=is_causal, window=window)
    logits = logits if mask is None else jnp.where(mask, logits, -jnp.inf)
    return jnp.swapaxes(jax.nn.logsumexp(logits, axis=-1), 1, 2)


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("options", [{}, {"is_causal": True}, {"local_window_size": (2, 1)}, {"bias": True}],
                         ids=["plain", "causal", "window", "bias"])
def test_residual_equals_jax_nn_and_is_differentiable(path, options):
    q, k, v = _qkv()
    options = dict(options)
    if options.pop("bias", False):
        options["bias"] = jax.random.normal(jax.random.key(5), (1, 4, 7, 9))
    ours = lambda q, k, v: dot_product_attention(q, k, v, return_residual=True, **options, **PATHS[path])
    out, lse = ours(q, k, v)
    want_out, want_lse = _jax_nn(q, k, v, return_residual=True, **options)
    assert lse.shape == (2, 7, 4) and lse.dtype == jnp.float32
    np.testing.assert_allclose(out, want_out, atol=2e-5)
    np.testing.assert_allclose(lse, want_lse, atol=2e-5)
    # Gradients through the output equal jax.nn's.
    grads = jax.grad(lambda *x: jnp.sum(jnp.sin(ours(*x)[0])), argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(lambda *x: jnp.sum(jnp.sin(_jax_nn(*x, **options))), argnums=(0, 1, 2))(q, k, v)
    for g, w in zip(grads, want):
        np.testing.assert_allclose(g, w, atol=5e-5)
    # Gradients through the residual: jax.nn's XLA path drops the residual's cotangent (a difference we do
    # not copy); ours equal autodiff of a plain logsumexp.
    grads = jax.grad(lambda q, k: jnp.sum(jnp.sin(ours(q, k, v)[1])), argnums=(0, 1))(q, k)
    want = jax.grad(lambda q, k: jnp.sum(jnp.sin(_plain_lse(q, k, **options))), argnums=(0, 1))(q, k)
    for g, w in zip(grads, want):
        np.testing.assert_allclose(g, w, atol=5e-5)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_residual_unbatched_shape_and_empty_rows(path):
    q, k, v = (x[0] for x in _qkv())
    mask = jnp.ones((1, 7, 9), bool).at[:, 3].set(False)  # query 3 sees no key
    out, lse = dot_product_attention(q, k, v, mask=mask, return_residual=True, **PATHS[path])
    assert out.shape == (7, 4, 8) and lse.shape == (7, 4)
    # Intended difference: zeros and -inf (the log of an empty sum); jax.nn gives the mean and a finite value.
    np.testing.assert_array_equal(out[3], 0.0)
    np.testing.assert_array_equal(lse[3], -np.inf)
    want_out, want_lse = _jax_nn(q, k, v, mask=mask, return_residual=True)
    np.testing.assert_allclose(np.delete(np.asarray(lse), 3, 0), np.delete(np.asarray(want_lse), 3, 0), atol=2e-5)
    np.testing.assert_allclose(want_out[3], jnp.repeat(v, 2, -2).mean(0), atol=1e-5)
    assert np.isfinite(want_lse[3]).all()
    grads = jax.grad(lambda q: dot_product_attention(q, k, v, mask=mask, return_residual=True,
                                                     **PATHS[path])[0].sum())(q)
    assert np.isfinite(grads).all()


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_residual_is_in_the_input_dtype_and_takes_its_cotangents(path, dtype):
    """As jax.nn: a bfloat16/float16 call returns its log-sum-exp in that dtype (computed in float32 and
    rounded once) and its vjp takes cotangents of that dtype for both outputs. The gradients through the
    residual equal the float32 computation's up to the input rounding."""
    q, k, v = _qkv(dtype=dtype)
    ours = lambda q, k, v: dot_product_attention(q, k, v, return_residual=True, is_causal=True, **PATHS[path])
    keys = jax.random.split(jax.random.key(8), 2)
    cot = (jax.random.normal(keys[0], q.shape, dtype), jax.random.normal(keys[1], q.shape[:3], dtype))

    @jax.jit
    def both(q, k, v, cot):
        (out, lse), pull = jax.vjp(ours, q, k, v)
        (_, lse32), pull32 = jax.vjp(ours, *(x.astype(jnp.float32) for x in (q, k, v)))
        return out, lse, lse32, pull(cot), pull32(tuple(c.astype(jnp.float32) for c in cot))

    out, lse, lse32, grads, want = both(q, k, v, cot)
    assert out.dtype == dtype and lse.dtype == dtype and lse.shape == (2, 7, 4)
    np.testing.assert_array_equal(lse, lse32.astype(dtype))  # one rounding of the float32 value
    for g, w in zip(grads, want):
        assert g.dtype == dtype
        # The low-precision call rounds the probabilities before the PV matmul and the gradients themselves
        # to the input dtype (bfloat16 eps 2^-8): about five of its ulps of the largest gradient.
        scale = float(jnp.max(jnp.abs(w)))
        np.testing.assert_allclose(np.asarray(g, np.float32), w, rtol=0, atol=0.02 * scale)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("group_num", [1, 2, 4])
@pytest.mark.parametrize("use_vmap", [False, True])
def test_jax_test_dot_product_attention_with_attnjax_substituted(dtype, group_num, use_vmap):
    """jax's ``tests/nn_test.py::testDotProductAttention`` (implementation="xla", its 12 cases) with
    ``jax.nn.dot_product_attention`` replaced by ``attnjax.dot_product_attention``: grouped-query heads
    against heads repeated, vmap over the batch (unbatched calls), and the vjp of ``(output, residual)``
    with cotangents in the input dtype. Same shapes, seeds and tolerances as jax's test."""
    B, S, T, N, H, G = 2, 128, 128, 4, 32, group_num
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    Q = jax.random.normal(keys[0], (B, T, N, H), dtype)
    K = jax.random.normal(keys[1], (B, S, N // G, H), dtype)
    V = jax.random.normal(keys[2], (B, S, N // G, H), dtype)
    grad = jax.random.normal(keys[3], (B, T, N, H), dtype)
    lse_grad = jax.random.normal(keys[4], (B, T, N), dtype)
    reference = lambda *args, **kw: dot_product_attention(*args, implementation=None, **kw)
    answer = lambda *args, **kw: dot_product_attention(*args, implementation="xla", **kw)
    plain = jax.vmap(answer, in_axes=(0, 0, 0, None, None)) if use_vmap else answer
    with_residual = lambda *args: answer(*args, return_residual=True)
    K_ref, V_ref = jnp.repeat(K, G, axis=2), jnp.repeat(V, G, axis=2)

    def summed_heads(dx):  # the reference's gradient for repeated heads, summed back over each group
        return dx.reshape(B, S, N // G, G, H).sum(axis=3)

    out_ref, pull_ref = jax.vjp(reference, Q, K_ref, V_ref, None, None)
    out_ans, pull_ans = jax.vjp(plain, Q, K, V, None, None)
    res_ref, pull_res_ref = jax.vjp(lambda *a: reference(*a, return_residual=True), Q, K_ref, V_ref, None, None)
    res_ans, pull_res_ans = jax.vjp(with_residual, Q, K, V, None, None)
    dq_ref, dk_ref, dv_ref = pull_ref(grad)[:3]
    dq_ans, dk_ans, dv_ans = pull_ans(grad)[:3]
    dq_res_ref, dk_res_ref, dv_res_ref = pull_res_ref((grad, lse_grad))[:3]
    dq_res_ans, dk_res_ans, dv_res_ans = pull_res_ans((grad, lse_grad))[:3]
    close = lambda a, b: np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                                    atol=0.01, rtol=0.01)
    assert res_ans[1].dtype == res_ref[1].dtype == dtype
    for a, b in ((out_ref, out_ans), (dq_ref, dq_ans), (summed_heads(dk_ref), dk_ans),
                 (summed_heads(dv_ref), dv_ans), (res_ref[0], res_ans[0]), (res_ref[1], res_ans[1]),
                 (dq_res_ref, dq_res_ans), (summed_heads(dk_res_ref), dk_res_ans),
                 (summed_heads(dv_res_ref), dv_res_ans)):
        assert a.dtype == b.dtype == dtype
        close(a, b)
    # And the values are jax.nn's own (its residual gradient differs by design: module docstring).
    want_out, want_lse = _jax_nn(Q, K, V, return_residual=True)
    close(res_ans[0], want_out)
    close(res_ans[1], want_lse)


@pytest.mark.parametrize("implementation", ["cudnn", "pallas_interpret"])
def test_residual_on_a_path_without_it_is_a_clear_error(implementation):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=rf"return_residual=True needs implementation 'dense' or 'blockwise'.*"
                                         rf"got '{implementation}'"):
        dot_product_attention(q, k, v, return_residual=True, implementation=implementation)


def test_residual_with_no_implementation_picks_a_path_that_has_it():
    q, k, v = _qkv()
    out, lse = dot_product_attention(q, k, v, return_residual=True)
    np.testing.assert_allclose(lse, _jax_nn(q, k, v, return_residual=True)[1], atol=2e-5)


# --------------------------------------------------------------------------- 3. rank < 4 mask and bias

@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("shape", [(9,), (1, 1, 9), (7, 9), (2, 1, 7, 9)], ids=str)
def test_low_rank_mask_is_left_padded_like_jax_nn(path, shape):
    q, k, v = _qkv()
    mask = jax.random.bernoulli(jax.random.key(3), 0.6, shape).at[..., 0].set(True)
    np.testing.assert_allclose(dot_product_attention(q, k, v, mask=mask, **PATHS[path]), _jax_nn(q, k, v, mask=mask),
                               atol=2e-5)


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("shape", [(9,), (7, 9), (4, 7, 9)], ids=str)
def test_low_rank_bias_is_left_padded_like_jax_nn_with_its_gradient(path, shape):
    q, k, v = _qkv()
    bias = jax.random.normal(jax.random.key(4), shape)
    got = jax.value_and_grad(lambda b: jnp.sum(jnp.sin(dot_product_attention(q, k, v, bias=b, **PATHS[path]))))(bias)
    want = jax.value_and_grad(lambda b: jnp.sum(jnp.sin(_jax_nn(q, k, v, bias=b))))(bias)
    assert got[1].shape == shape
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_allclose(got[1], want[1], atol=5e-5)


@pytest.mark.parametrize("name, shape, expected", [
    ("mask", (1, 1, 1, 7, 9), r"rank <= 4"),
    ("mask", (8,), r"\(2, 4, 7, 9\).*got shape \(8,\)"),
    ("bias", (3, 7, 9), r"\(2, 4, 7, 9\).*got shape \(3, 7, 9\)"),
])
def test_what_cannot_broadcast_is_still_rejected_by_name(name, shape, expected):
    q, k, v = _qkv()
    value = jnp.ones(shape, bool) if name == "mask" else jnp.ones(shape)
    with pytest.raises(ValueError, match=rf"{name} must be broadcastable to BNTS .*{expected}"):
        dot_product_attention(q, k, v, **{name: value})


# --------------------------------------------------------------------------- 4. x64 mode

def _reference64(q, k, v, bias, mask):
    """Float64 NumPy attention with attnjax's empty-row zeros: ``[B, T, N, H]``."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    G = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, G, 2), np.repeat(v, G, 2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1]) + np.asarray(bias, np.float64)
    logits = np.where(mask, logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", weights, v)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_float64_inputs_are_computed_in_float64(path):
    with jax.enable_x64():
        q, k, v = _qkv(dtype=jnp.float64)
        mask = jax.random.bernoulli(jax.random.key(6), 0.7, (2, 1, 7, 9)).at[..., 0].set(True)
        bias = jax.random.normal(jax.random.key(7), (1, 4, 7, 9), jnp.float64)
        out, lse = dot_product_attention(q, k, v, bias=bias, mask=mask, return_residual=True, **PATHS[path])
        assert out.dtype == jnp.float64 and lse.dtype == jnp.float64
        # float32 statistics would leave errors near 1e-7; float64 ones stay near 1e-15.
        np.testing.assert_allclose(out, _reference64(q, k, v, bias, mask), rtol=0, atol=1e-12)
        grads = jax.grad(lambda *x: jnp.sum(jnp.sin(dot_product_attention(*x, bias=bias, mask=mask, **PATHS[path]))),
                         argnums=(0, 1, 2))(q, k, v)
        dense = jax.grad(lambda *x: jnp.sum(jnp.sin(dot_product_attention(*x, bias=bias, mask=mask,
                                                                          implementation="dense"))),
                         argnums=(0, 1, 2))(q, k, v)
        for g, w in zip(grads, dense):
            assert g.dtype == jnp.float64
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-11)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_float32_inputs_work_in_x64_mode(path):
    q, k, v = _qkv()
    mask = jnp.ones((9,), bool).at[2].set(False)
    want = dot_product_attention(q, k, v, mask=mask, **PATHS[path])
    with jax.enable_x64():
        got = dot_product_attention(q, k, v, mask=mask, bias=jnp.zeros((7, 9)), is_causal=True, **PATHS[path])
        assert got.dtype == jnp.float32
    assert np.isfinite(got).all() and got.shape == want.shape


def test_pallas_kernel_runs_in_x64_mode_and_rejects_float64_by_name():
    # JAX's Pallas kernel mixes int32 and default-int indices; attnjax traces it (forward and backward)
    # with x64 off, so float32 calls work in x64 mode.
    q = jax.random.normal(jax.random.key(0), (1, 16, 2, 16))
    loss = lambda impl: lambda q: jnp.sum(jnp.sin(dot_product_attention(q, q, q, is_causal=True, implementation=impl)))
    want = jax.value_and_grad(loss("dense"))(q)
    with jax.enable_x64():
        got = jax.jit(jax.value_and_grad(loss("pallas_interpret")))(q)
        with pytest.raises(ValueError, match=r"pallas_interpret.*float64 inputs need implementation='dense' or "
                                             r"'blockwise'"):
            dot_product_attention(q.astype(jnp.float64), q.astype(jnp.float64), q.astype(jnp.float64),
                                  implementation="pallas_interpret")
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_allclose(got[1], want[1], atol=2e-5)


# --------------------------------------------------------------------------- intended differences

def test_complex_inputs_are_rejected_by_name():
    q, k, v = (x.astype(jnp.complex64) for x in _qkv())
    with pytest.raises(TypeError, match=r"query must have a floating dtype .* got complex64"):
        dot_product_attention(q, k, v)
