"""Diagnostics against hand-computed values: entropy and attended distance of known weight maps."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.ops import diagnostics as D
from attnjax.ops import registry


def _weights():
    """[B=1, N=2, T=3, S=3]: head 0 uniform over visible keys (causal), head 1 one-hot on key 0."""
    w = np.zeros((1, 2, 3, 3), np.float32)
    for t in range(3):
        w[0, 0, t, : t + 1] = 1.0 / (t + 1)
        w[0, 1, t, 0] = 1.0
    return jnp.asarray(w)


def test_entropy_matches_hand_computed_values():
    w = _weights()
    np.testing.assert_allclose(D.row_entropy(w)[0, 0], [0.0, math.log(2), math.log(3)], atol=1e-6)
    np.testing.assert_allclose(D.row_entropy(w)[0, 1], [0.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(D.head_entropy(w), [(math.log(2) + math.log(3)) / 3, 0.0], atol=1e-6)


def test_attended_distance_matches_hand_computed_values():
    w = _weights()
    # head 0, query t: mean of |t - j| over j <= t = t / 2; head 1: distance t.
    np.testing.assert_allclose(D.row_attended_distance(w)[0, 0], [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(D.row_attended_distance(w)[0, 1], [0.0, 1.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(D.mean_attended_distance(w), [0.5, 1.0], atol=1e-6)
    # explicit positions (e.g. randomized ones) scale the distances
    np.testing.assert_allclose(D.mean_attended_distance(w, jnp.array([0, 10, 20]), jnp.array([0, 10, 20])),
                               [5.0, 10.0], atol=1e-5)


def test_zero_rows_are_excluded_and_unnormalized_rows_are_renormalized():
    w = np.zeros((1, 1, 3, 2), np.float32)
    w[0, 0, 0] = [0.2, 0.2]  # sigmoid-style: sums to 0.4, uniform after renormalizing
    w[0, 0, 2] = [0.0, 3.0]
    np.testing.assert_allclose(D.row_entropy(w)[0, 0], [math.log(2), 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(D.head_entropy(w), [math.log(2) / 2], atol=1e-6)  # row 1 excluded
    np.testing.assert_allclose(D.mean_attended_distance(w), [(0.5 + 1.0) / 2], atol=1e-6)
    assert np.isnan(D.head_entropy(np.zeros((1, 1, 2, 2), np.float32))[0])
    summary = D.summarize(w)
    assert set(summary) == {"entropy", "distance"} and summary["entropy"].shape == (1,)


@pytest.mark.parametrize("name", sorted(registry.ATTENTION))
def test_weights_of_every_registered_variant(name):
    keys = jax.random.split(jax.random.key(0), 2)
    q = jax.random.normal(keys[0], (1, 4, 2, 4))
    k = jax.random.normal(keys[1], (1, 4, 2, 4))
    params = registry.init_attention_params(name, jax.random.key(1), head_dim=4, num_heads=2)
    w = D.attention_weights_of(name, q, k, is_causal=True, **params)
    assert w.shape == (1, 2, 4, 4) and np.all(np.asarray(w) >= 0)
    assert np.all(np.triu(np.asarray(w)[0, 0], 1) == 0)  # causal: nothing above the diagonal
    assert D.head_entropy(w).shape == (2,) and D.mean_attended_distance(w).shape == (2,)


def test_malformed_input_is_rejected():
    with pytest.raises(ValueError, match="weights"):
        D.head_entropy(jnp.zeros((2, 3, 3)))
    with pytest.raises(TypeError, match="weights"):
        D.row_entropy(jnp.zeros((1, 1, 2, 2), jnp.int32))
    with pytest.raises(ValueError, match="q_positions"):
        D.mean_attended_distance(jnp.ones((1, 1, 2, 2)), jnp.arange(3))
    with pytest.raises(ValueError, match="valid names"):
        D.attention_weights_of("nope", jnp.zeros((1, 2, 1, 2)), jnp.zeros((1, 2, 1, 2)))


def test_ops_do_not_import_matplotlib():
    import subprocess
    import sys
    code = "import sys, attnjax.ops, attnjax.testing; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
