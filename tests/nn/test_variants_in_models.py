"""Every registered attention variant and positional encoding inside the Flax layer and Transformer."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn import MultiHeadAttention, TransformerConfig, build_model
from attnjax.ops.positional import POSITIONAL
from attnjax.ops.registry import ATTENTION

B, L, V, C = 2, 6, 3, 2
LENGTHS = jnp.array([L, 4], jnp.int32)
RNGS = {"dropout": jax.random.key(1), "positions": jax.random.key(2)}
# Randomized positions (Ruoss et al. 2023) are TransformerConfig fields passed to PositionalEncoding.
HAS_RANDOMIZED = {"randomized_positions", "randomized_eval"} <= {f.name for f in dataclasses.fields(TransformerConfig)}
needs_randomized = pytest.mark.skipif(not HAS_RANDOMIZED, reason="TransformerConfig has no randomized_positions yet")


def _inputs(length=L, seed=0):
    return jax.nn.one_hot(jax.random.randint(jax.random.key(seed), (B, length), 0, V), V)


@functools.lru_cache(maxsize=None)
def _model(attention, positional, randomized=False, randomized_eval="random"):
    extra = dict(randomized_positions=randomized, randomized_eval=randomized_eval) if randomized else {}
    if ATTENTION[attention].causal_only:  # stick-breaking: the encoder runs causal self-attention
        extra["causal"] = True
    return build_model("transformer", C, dict(attention=attention, positional=positional, d_model=16, num_heads=2,
                                             mlp_dim=16, num_layers=1, max_len=64, **extra))


def _cases():
    for a, spec in ATTENTION.items():
        for p, pspec in POSITIONAL.items():
            if pspec.kind != "bias" or spec.supports_bias:
                yield a, p, False
    # Randomization changes only the positions an encoding reads, not the attention variant: one variant.
    for p, pspec in POSITIONAL.items():
        if pspec.kind != "none":
            yield pytest.param("dot_product", p, True, marks=needs_randomized)


@pytest.mark.parametrize("attention, positional, randomized", list(_cases()))
def test_every_variant_and_encoding_trains_and_ignores_padding(attention, positional, randomized):
    model = _model(attention, positional, randomized)
    x = _inputs()
    variables = model.init(jax.random.key(0), x)

    def loss(params):
        out = model.apply({"params": params}, x, seq_lengths=LENGTHS, train=True, rngs=RNGS)
        return jnp.mean(out ** 2), out

    (value, out), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    assert out.shape == (B, L, C) and np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # Padding (positions >= length) never changes the real positions of the shorter example (randomized
    # models draw their positions at evaluation too: the same key gives the same draw).
    padded = x.at[1, 4:].set(jax.nn.one_hot(2, V))
    eval_rngs = {"positions": RNGS["positions"]}
    a = model.apply(variables, x, seq_lengths=LENGTHS, rngs=eval_rngs)
    b = model.apply(variables, padded, seq_lengths=LENGTHS, rngs=eval_rngs)
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


@needs_randomized
def test_randomized_positions_are_drawn_in_evaluation_too_unless_consecutive():
    x = _inputs()
    plain = _model("dot_product", "sinusoidal")
    variables = plain.init(jax.random.key(0), x)  # randomization adds no parameter: one tree for all three
    at = lambda model, key, train=False: model.apply(variables, x, train=train, rngs={
        "dropout": RNGS["dropout"], "positions": jax.random.key(key)})
    ruoss = _model("dot_product", "sinusoidal", True)
    assert not np.allclose(at(ruoss, 3), at(ruoss, 4))  # a fresh random subset at evaluation (Ruoss et al.)
    assert not np.allclose(at(ruoss, 3, True), at(ruoss, 4, True))
    np.testing.assert_array_equal(at(ruoss, 3), at(ruoss, 3))  # fixed rng, identical outputs
    with pytest.raises(ValueError, match="rngs="):
        ruoss.apply(variables, x)
    earlier = _model("dot_product", "sinusoidal", True, "consecutive")
    np.testing.assert_allclose(earlier.apply(variables, x), plain.apply(variables, x), atol=1e-6)  # 0..L-1
    assert not np.allclose(at(earlier, 3, True), at(earlier, 4, True))  # random in training
