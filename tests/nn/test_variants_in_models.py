"""Every registered attention variant and positional encoding inside the Flax layer and Transformer."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn import MultiHeadAttention, build_model
from attnjax.ops.positional import POSITIONAL
from attnjax.ops.registry import ATTENTION

B, L, V, C = 2, 6, 3, 2
LENGTHS = jnp.array([L, 4], jnp.int32)
RNGS = {"dropout": jax.random.key(1), "positions": jax.random.key(2)}


def _inputs(length=L, seed=0):
    return jax.nn.one_hot(jax.random.randint(jax.random.key(seed), (B, length), 0, V), V)


@functools.lru_cache(maxsize=None)
def _model(attention, positional):
    return build_model("transformer", C, dict(attention=attention, positional=positional, d_model=16, num_heads=2,
                                             mlp_dim=16, num_layers=1, max_len=64))


def _pairs():
    for a, spec in ATTENTION.items():
        for p, pspec in POSITIONAL.items():
            if pspec.kind != "bias" or spec.supports_bias:
                yield a, p


@pytest.mark.parametrize("attention, positional", list(_pairs()))
def test_every_variant_and_encoding_trains_and_ignores_padding(attention, positional):
    model = _model(attention, positional)
    x = _inputs()
    variables = model.init(jax.random.key(0), x)

    def loss(params):
        out = model.apply({"params": params}, x, seq_lengths=LENGTHS, train=True, rngs=RNGS)
        return jnp.mean(out ** 2), out

    (value, out), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    assert out.shape == (B, L, C) and np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # Padding (positions >= length) never changes the real positions of the shorter example.
    padded = x.at[1, 4:].set(jax.nn.one_hot(2, V))
    a = model.apply(variables, x, seq_lengths=LENGTHS)
    b = model.apply(variables, padded, seq_lengths=LENGTHS)
    np.testing.assert_allclose(a[1, :4], b[1, :4], atol=1e-5)


def test_variant_params_live_in_the_layer_and_fixed_features_get_no_gradient():
    x = jax.random.normal(jax.random.key(0), (B, L, 8))
    for name, trainable in (("additive", True), ("multiplicative", True), ("performer", False)):
        layer = MultiHeadAttention(num_heads=2, head_dim=4, attention=name)
        params = layer.init(jax.random.key(1), x)["params"]
        assert "attention_params" in params, name
        grads = jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, x) ** 2))(params)
        norms = [float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads["attention_params"])]
        assert all(n > 0 for n in norms) if trainable else all(n == 0 for n in norms), (name, norms)
    assert "attention_params" not in MultiHeadAttention(num_heads=2, head_dim=4).init(jax.random.key(1), x)["params"]


def test_rope_layer_depends_only_on_relative_positions():
    x = jax.random.normal(jax.random.key(0), (B, L, 8))
    layer = MultiHeadAttention(num_heads=2, head_dim=4)
    variables = layer.init(jax.random.key(1), x)
    at = lambda offset: layer.apply(variables, x, rotary_positions=jnp.arange(L) + offset)
    np.testing.assert_allclose(at(0), at(37), atol=1e-4)
    assert not np.allclose(at(0), layer.apply(variables, x), atol=1e-3)  # rotation is applied at all


def test_randomized_positions_only_in_training():
    model = _model("dot_product", "randomized")
    x = _inputs()
    variables = model.init(jax.random.key(0), x)
    train = lambda k: model.apply(variables, x, train=True, rngs={"dropout": RNGS["dropout"], "positions": k})
    assert not np.allclose(train(jax.random.key(3)), train(jax.random.key(4)))
    np.testing.assert_allclose(model.apply(variables, x), model.apply(variables, x))
    consecutive = _model("dot_product", "sinusoidal")  # same parameter tree: evaluation uses positions 0..L-1
    np.testing.assert_allclose(model.apply(variables, x), consecutive.apply(variables, x), atol=1e-6)
