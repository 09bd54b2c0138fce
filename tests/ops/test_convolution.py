"""Causal depthwise convolutions: the direct one against the written-out sum, the FFT one against the direct one
(values and gradients, filters shorter than, as long as and longer than the sequence), causality, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.ops.convolution import CONV_METHODS, causal_conv, fft_causal_conv, get_conv


def _inputs(B, L, D, K, seed=0):
    ku, kk = jax.random.split(jax.random.key(seed))
    return jax.random.normal(ku, (B, L, D)), jax.random.normal(kk, (K, D))


def _value_and_grads(f, u, k):
    """``f(u, k)`` and the gradients of ``sum(f * r)`` w.r.t. ``u`` and ``k``, compiled once."""
    @jax.jit
    def run(u, k):
        out, vjp = jax.vjp(f, u, k)
        return out, vjp(jax.random.normal(jax.random.key(9), out.shape))

    return run(u, k)


def test_direct_is_the_written_out_sum():
    u, k = _inputs(2, 7, 3, 4)
    want = np.zeros(u.shape, np.float32)
    for t in range(7):
        for s in range(min(t + 1, 4)):
            want[:, t] += np.asarray(k[s]) * np.asarray(u[:, t - s])  # tap s weighs the input s steps back
    np.testing.assert_allclose(causal_conv(u, k), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("B, L, D, K", [
    (2, 16, 3, 16),  # a filter as long as the sequence: the long-convolution case
    (2, 16, 3, 5),  # shorter: zero taps past K
    (1, 9, 2, 24),  # longer: taps past L must not wrap around onto early outputs
    (2, 256, 128, 256),  # a real size
])
def test_fft_equals_direct_values_and_gradients(B, L, D, K):
    u, k = _inputs(B, L, D, K)
    out, (gu, gk) = _value_and_grads(fft_causal_conv, u, k)
    want, (wu, wk) = _value_and_grads(causal_conv, u, k)
    scale = float(np.sqrt(min(K, L)))  # sums of up to min(K, L) unit-variance products
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=2e-5 * scale)
    np.testing.assert_allclose(gu, wu, rtol=1e-4, atol=2e-5 * scale)
    np.testing.assert_allclose(gk, wk, rtol=1e-4, atol=2e-5 * scale * np.sqrt(B))
    if K > L:  # taps that reach no output inside the sequence get no gradient
        np.testing.assert_array_equal(gk[L:], 0.0)


def test_causality_exact_on_the_direct_path_and_to_rounding_on_the_fft_path():
    u, k = _inputs(1, 12, 4, 12)
    for method, f in CONV_METHODS.items():
        grads = jax.jit(jax.jacrev(lambda x: f(x, k)[0, :, 0]))(u)[:, 0, :, 0]  # [t, s]: d y_t / d u_s, channel 0
        later = np.triu(np.ones((12, 12), bool), 1)
        if method == "direct":
            np.testing.assert_array_equal(grads[later], 0.0)
        else:
            assert np.max(np.abs(grads[later])) < 1e-6 * np.max(np.abs(grads)), method
        taps = np.asarray(k[:, 0])[np.subtract.outer(np.arange(12), np.arange(12))]  # [t, s] -> tap at lag t - s
        np.testing.assert_allclose(grads[~later], taps[~later], rtol=1e-5, atol=1e-5)  # d y_t / d u_s


def test_dtype_is_kept():
    u, k = _inputs(1, 8, 2, 8)
    for f in CONV_METHODS.values():
        out = f(u.astype(jnp.bfloat16), k)
        assert out.dtype == jnp.bfloat16 and out.shape == (1, 8, 2)


def test_errors_name_the_argument():
    u, k = _inputs(1, 8, 3, 4)
    for f in (causal_conv, fft_causal_conv):
        with pytest.raises(ValueError, match=r"u must have rank 3 \[B, L, D\], got shape \(8, 3\)"):
            f(u[0], k)
        with pytest.raises(ValueError, match=r"kernel must have rank 2 \[K, D\]"):
            f(u, k[0])
        with pytest.raises(ValueError, match=r"kernel \[K, D\] must have D = 3 channels.*got kernel shape \(4, 2\)"):
            f(u, k[:, :2])
        with pytest.raises(TypeError, match="u must have a floating dtype"):
            f(u.astype(jnp.int32), k)
        with pytest.raises(ValueError, match="at least one position and one tap"):
            f(u, k[:0])
    with pytest.raises(ValueError, match=r"conv method must be one of \['direct', 'fft'\], got 'fast'"):
        get_conv("fast")
