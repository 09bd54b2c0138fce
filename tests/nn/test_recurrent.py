"""Recurrent (Elman RNN / LSTM / GRU): shapes, seq_lengths, read-out, padding, training, errors."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attnjax.nn.recurrent import Recurrent, RecurrentConfig

CELLS = ("rnn", "lstm", "gru")


@functools.lru_cache(maxsize=None)
def _built(cell, pooling, shape, C=3, readout_relu=False):
    """(model, params, jitted apply), shared by the tests of this file."""
    model = Recurrent(RecurrentConfig(cell=cell, hidden_size=12, pooling=pooling, readout_relu=readout_relu), C)
    return model, jax.jit(model.init)(jax.random.key(0), jnp.zeros(shape)), jax.jit(model.apply)


def adam_fit(loss_fn, params, steps, lr):
    """``steps`` full-batch Adam steps in one jitted scan; returns (params, loss after the last step)."""
    opt = optax.adam(lr)

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            updates, s = opt.update(jax.grad(loss_fn)(p), s, p)
            return (optax.apply_updates(p, updates), s), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
        return params, loss_fn(params)

    return run(params)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("pooling,shape,out", [(None, (2, 7, 3), (2, 7, 5)), ("last", (2, 7), (2, 5)),
                                               ("mean", (2, 7, 4), (2, 5))])
def test_shapes(cell, pooling, shape, out):
    model = Recurrent(RecurrentConfig(cell=cell, hidden_size=6, num_layers=2, pooling=pooling), 5)
    x = jnp.zeros(shape)
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    result = jax.eval_shape(model.apply, params, x, jnp.array([7, 3]))
    assert result.shape == out and result.dtype == jnp.float32
    assert f"{cell}_1" in params["params"]


@pytest.mark.parametrize("cell,readout_relu", [("rnn", True), ("lstm", False), ("gru", True)])
def test_last_reads_the_state_at_the_real_end(cell, readout_relu):
    """``nn.RNN``'s seq_lengths gives each sequence its own last state; the read-out is
    Dense(relu(h)) with readout_relu (Delétang et al.), Dense(h) without."""
    model, params, apply = _built(cell, "last", (2, 9, 2), readout_relu=readout_relu)
    x = jax.random.normal(jax.random.key(1), (2, 9, 2))
    padded = apply(params, x, jnp.array([4, 9]))
    # The same logits by hand: run the layer alone, take h at positions 3 and 8, then the read-out.
    p = params["params"]
    cell_cls = {"rnn": nn.SimpleCell, "lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}[cell]
    h = nn.RNN(cell_cls(features=12)).apply({"params": p[f"{cell}_0"]}, x)[jnp.arange(2), jnp.array([3, 8])]
    assert np.any(h < 0)  # so that a missing or extra relu would show
    features = jax.nn.relu(h) if readout_relu else h
    np.testing.assert_allclose(padded, features @ p["logits"]["kernel"] + p["logits"]["bias"], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("pooling", [None, "last", "mean"])
def test_padded_content_never_changes_real_outputs(pooling):
    x = jax.random.normal(jax.random.key(1), (2, 9, 3))
    model, params, apply = _built("gru", pooling, x.shape)
    lengths = jnp.array([4, 9])
    noisy = jnp.where(jnp.arange(9)[None, :, None] >= lengths[:, None, None], 30.0, x)
    out, out_noisy = apply(params, x, lengths), apply(params, noisy, lengths)
    if pooling is None:
        out, out_noisy = out[0, :4], out_noisy[0, :4]
    np.testing.assert_allclose(out_noisy, out, rtol=1e-5, atol=1e-5)
    if pooling == "mean":  # equals the mean over the 4 real outputs alone
        np.testing.assert_allclose(out[0], apply(params, x[:1, :4])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_sequence_model_fits_delayed_copy(cell):
    """Per-position target = the previous token: loss < 0.1 after 60 Adam steps (lr 0.03)."""
    B, L, V = 16, 8, 3
    model, params, _ = _built(cell, None, (B, L, V))
    tokens = jax.random.randint(jax.random.key(2), (B, L), 0, V)
    targets = jnp.concatenate([tokens[:, :1], tokens[:, :-1]], axis=1)

    def loss(p):
        logits = model.apply(p, jax.nn.one_hot(tokens, V))
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    _, final = adam_fit(loss, params, steps=60, lr=0.03)
    assert final < 0.1, final


@pytest.mark.parametrize("cell,pooling", [("lstm", "last"), ("gru", "mean")])
def test_classifier_fits_variable_length_task(cell, pooling):
    """"last": the last real token of a variable-length sequence; "mean": whether 1s outnumber 0s.
    Cross-entropy < 0.1 after 60 Adam steps (lr 0.03)."""
    B, L = 32, 7
    model, params, _ = _built(cell, pooling, (B, L, 2), C=2)
    tokens = jax.random.randint(jax.random.key(3), (B, L), 0, 2)
    lengths = jnp.array([3, 5, 7, 6] * (B // 4))
    real = jnp.arange(L)[None, :] < lengths[:, None]
    if pooling == "last":
        labels = tokens[jnp.arange(B), lengths - 1]
    else:
        labels = (2 * jnp.sum(tokens * real, axis=1) > lengths).astype(jnp.int32)
    x = jax.nn.one_hot(jnp.where(real, tokens, 0), 2)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x, lengths), labels).mean()

    _, final = adam_fit(loss, params, steps=60, lr=0.03)
    assert final < 0.1, final


@pytest.mark.parametrize("kwargs,match", [
    (dict(cell="transformer"), r"cell must be one of \['gru', 'lstm', 'rnn'\], got 'transformer'"),
    (dict(hidden_size=0), "hidden_size must be an int >= 1, got 0"),
    (dict(num_layers=1.5), "num_layers must be an int >= 1, got 1.5"),
    (dict(readout_relu="yes"), "readout_relu must be a bool, got 'yes'"),
    (dict(pooling="first"), "pooling must be one of .*got 'first'"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RecurrentConfig(**kwargs)


def test_input_errors():
    seq = Recurrent(RecurrentConfig(hidden_size=4), 2)
    with pytest.raises(ValueError, match=r"inputs must have rank 3 \[B, L, V\] with pooling=None, got shape \(2, 5\)"):
        seq.init(jax.random.key(0), jnp.zeros((2, 5)))
    pooled = Recurrent(RecurrentConfig(hidden_size=4, pooling="last"), 2)
    with pytest.raises(ValueError, match=r"rank 2 \[B, L\] or rank 3 \[B, L, F\], got shape \(2, 5, 1, 1\)"):
        pooled.init(jax.random.key(0), jnp.zeros((2, 5, 1, 1)))
    with pytest.raises(ValueError, match=r"seq_lengths must have shape \[B\] = \(2,\), got \(2, 1\)"):
        pooled.init(jax.random.key(0), jnp.zeros((2, 5)), jnp.ones((2, 1), jnp.int32))
