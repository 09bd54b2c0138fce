"""Transformer and LSTM: shapes, padding invariance, registry, positions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import nn as ann


def _onehot(B=2, L=9, V=3, seed=0):
    return jax.nn.one_hot(jax.random.randint(jax.random.key(seed), (B, L), 0, V), V)


@pytest.mark.parametrize("name,cfg", [("transformer", dict(num_layers=2, d_model=16, num_heads=4, num_kv_heads=2,
                                                           mlp_dim=32)),
                                      ("lstm", dict(hidden_size=8, num_layers=2))])
def test_shapes_and_padding_invariance(name, cfg):
    model = ann.build_model(name, output_size=5, config=cfg)
    x = _onehot()
    params = jax.jit(model.init)(jax.random.key(0), x)
    apply = jax.jit(model.apply)
    logits = apply(params, x, seq_lengths=jnp.array([9, 9]))
    assert logits.shape == (2, 9, 5) and logits.dtype == jnp.float32
    # Real positions 0..5 must not depend on what sits in the padded tail 6..8.
    noise = jnp.concatenate([x[:, :6], 7.0 * jnp.ones((2, 3, 3))], axis=1)
    lengths = jnp.array([6, 6])
    np.testing.assert_allclose(apply(params, noise, seq_lengths=lengths)[:, :6],
                               apply(params, x, seq_lengths=lengths)[:, :6], rtol=1e-5, atol=1e-5)


def test_transformer_is_bidirectional_and_uses_positions():
    model = ann.build_model("transformer", 2, dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=16))
    x = _onehot(B=1, L=6)
    params = jax.jit(model.init)(jax.random.key(0), x)
    apply = jax.jit(model.apply)
    changed_last = x.at[0, -1].set(jnp.array([0.0, 0.0, 1.0]) if x[0, -1, 2] == 0 else jnp.array([1.0, 0, 0]))
    # position 0 sees the last token (bidirectional)
    assert not np.allclose(apply(params, x)[0, 0], apply(params, changed_last)[0, 0])
    same = jnp.tile(x[:, :1], (1, 6, 1))
    out = apply(params, same)
    assert not np.allclose(out[0, 0], out[0, 3])  # identical tokens, different positions
    nopos = ann.build_model("transformer", 2, dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=16,
                                                   positional="nope"))
    out = jax.jit(nopos.apply)(params, same)
    np.testing.assert_allclose(out[0, 0], out[0, 3], rtol=1e-5, atol=1e-6)


def test_sinusoidal_table():
    t = ann.sinusoidal_table(50, 8)
    assert t.shape == (50, 8)
    np.testing.assert_allclose(t[0], [0.0] * 4 + [1.0] * 4, atol=1e-7)  # sines first, then cosines
    np.testing.assert_allclose(t[7, 0], np.sin(7.0), rtol=1e-6)
    np.testing.assert_allclose(t[7, 5], np.cos(7.0 / 10_000 ** (2 / 8)), rtol=1e-5)
    with pytest.raises(ValueError, match="even"):
        ann.sinusoidal_table(4, 3)


def test_registry_errors():
    with pytest.raises(ValueError, match="model must be one of"):
        ann.build_model("gpt", 2)
    with pytest.raises(ValueError, match="unknown attention 'nope'; valid names: .*cosine"):
        ann.TransformerConfig(attention="nope")
    with pytest.raises(ValueError, match="unknown positional encoding 'none'; valid names: .*alibi"):
        ann.TransformerConfig(positional="none")
    with pytest.raises(ValueError, match="cannot take"):
        ann.TransformerConfig(attention="linear", positional="alibi")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        ann.TransformerConfig(d_model=10, num_heads=4)
    with pytest.raises(TypeError):
        ann.build_model("lstm", 2, dict(hidden=3))
