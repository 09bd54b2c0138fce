"""Recurrent (Elman RNN / LSTM / GRU, one-way or bidirectional): shapes, seq_lengths, read-out, padding, training,
errors.

Each configuration compiles one probe (loss, logits, gradients, an Adam step on its task's batch)
that serves the padding and training tests alike.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn.contract import Classifier, SequenceModel
from attnjax.nn.recurrent import Recurrent, RecurrentConfig
from tests.nn.training import JIT, fit, make_probe, probe_once

CELL_CLASSES = {"rnn": nn.SimpleCell, "lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}
B, L, V, HIDDEN = 32, 8, 3, 16
# (cell, pooling, readout_relu, bidirectional) -> task. Sequence models: the previous token at every real
# position, or (bidirectional) the next one, which no left-to-right model can know; "last": the last real
# token; "mean" and "flatten": whether 1s outnumber the other tokens.
# Every cell and every mode at least once, readout_relu both ways (each configuration is a compile).
CONFIGS = {("rnn", None, False, False): "previous", ("lstm", None, True, False): "previous",
           ("rnn", "last", True, False): "last", ("lstm", "last", False, False): "last",
           ("gru", "mean", False, False): "majority", ("gru", None, False, True): "next",
           ("gru", "flatten", False, True): "majority"}


def _batch(task):
    """``(inputs [B, L, V] one-hot with noise in the padding, lengths 3..8, labels, weights)``."""
    tokens = jax.random.randint(jax.random.key(2), (B, L), 0, V)
    lengths = 3 + jnp.arange(B) % 6
    real = jnp.arange(L)[None, :] < lengths[:, None]
    x = jnp.where(real[..., None], jax.nn.one_hot(tokens, V), jax.random.normal(jax.random.key(5), (B, L, V)))
    if task == "previous":
        return x, lengths, jnp.concatenate([tokens[:, :1], tokens[:, :-1]], axis=1), real.astype(jnp.float32)
    if task == "next":  # scored at every real position but the last
        scored = jnp.arange(L)[None, :] < lengths[:, None] - 1
        return x, lengths, jnp.concatenate([tokens[:, 1:], tokens[:, :1]], axis=1), scored.astype(jnp.float32)
    if task == "last":
        labels = tokens[jnp.arange(B), lengths - 1]
    else:
        labels = (2 * jnp.sum((tokens == 1) * real, axis=1) > lengths).astype(jnp.int32)
    return x, lengths, labels, jnp.ones((B,))


@functools.lru_cache(maxsize=None)
def _setup(cell, pooling, readout_relu, bidirectional):
    """(model, initial params, probe, batch) per configuration."""
    model = Recurrent(RecurrentConfig(cell=cell, hidden_size=HIDDEN, pooling=pooling, readout_relu=readout_relu,
                                      bidirectional=bidirectional), V)
    batch = _batch(CONFIGS[cell, pooling, readout_relu, bidirectional])
    params = JIT(model.init)(jax.random.key(0), batch[0])
    return model, params, make_probe(model.apply, lr=0.03), batch


@pytest.mark.parametrize("cell,pooling,shape,out", [
    ("gru", None, (2, 7, 3), (2, 7, 5)), ("lstm", None, (2, 7, 3), (2, 7, 5)), ("rnn", "last", (2, 7), (2, 5)),
    ("lstm", "mean", (2, 7, 4), (2, 5))])
def test_shapes(cell, pooling, shape, out):
    model = Recurrent(RecurrentConfig(cell=cell, hidden_size=6, num_layers=2, pooling=pooling), 5)
    x = jnp.zeros(shape)
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    result = jax.eval_shape(model.apply, params, x, jnp.array([7, 3]))
    assert result.shape == out and result.dtype == jnp.float32
    assert set(params["params"]) == {f"{cell}_0", f"{cell}_1", "logits"}
    assert isinstance(model, SequenceModel if pooling is None else Classifier)


@pytest.mark.parametrize("config", list(CONFIGS), ids=str)
def test_padded_content_is_invisible(config):
    """Other padding content gives the same logits and the loss gradient w.r.t. padded inputs is
    exactly zero: left-to-right layers never look ahead, right-to-left ones start at the last real position, and
    pooling reads real positions only."""
    model, params, probe, (x, lengths, labels, weights) = _setup(*config)
    real = jnp.arange(L)[None, :] < lengths[:, None]
    out = probe_once(probe, params, x, lengths, labels, weights)
    other = probe_once(probe, params, jnp.where(real[..., None], x, 7.0), lengths, labels, weights)
    keep = real if config[1] is None else slice(None)  # a sequence model's padded outputs are not used
    np.testing.assert_allclose(other["logits"][keep], out["logits"][keep], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["input_grads"][~real], 0.0)
    assert np.all(np.abs(out["input_grads"][:, 0]).sum(-1) > 0)  # the first token always matters


@pytest.mark.parametrize("config", [c for c in CONFIGS if c[1] is not None and not c[3]], ids=str)
def test_pooled_readout_by_hand(config):
    """The logits equal Dense(relu?(pool(h))) computed from the layer's own outputs: "last" takes h at
    seq_lengths - 1 (``nn.RNN``'s seq_lengths), "mean" averages h over real positions; relu only with
    readout_relu (as in Delétang et al.'s code)."""
    cell, pooling, readout_relu, _ = config
    model, params, probe, (x, lengths, labels, weights) = _setup(*config)
    logits = probe_once(probe, params, x, lengths, labels, weights)["logits"]
    p = params["params"]
    h = JIT(nn.RNN(CELL_CLASSES[cell](features=HIDDEN)).apply)({"params": p[f"{cell}_0"]}, x)  # [B, L, HIDDEN]
    if pooling == "last":
        pooled = h[jnp.arange(B), lengths - 1]
    else:
        real = (jnp.arange(L)[None, :] < lengths[:, None])[..., None]
        pooled = jnp.sum(h * real, axis=1) / lengths[:, None]
    assert np.any(pooled < 0)  # so that a missing or extra relu would show
    features = jax.nn.relu(pooled) if readout_relu else pooled
    np.testing.assert_allclose(logits, features @ p["logits"]["kernel"] + p["logits"]["bias"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", [c for c in CONFIGS if c[3]], ids=str)
def test_bidirectional_by_hand(config):
    """Every position reads [forward h_t, backward h_t]: the backward RNN is a left-to-right one run on the
    example's real positions reversed, so padding never enters it; "flatten" zeroes the padded positions and
    feeds all L of them to the read-out."""
    cell, pooling, _, _ = config
    model, params, probe, (x, lengths, labels, weights) = _setup(*config)
    logits = probe_once(probe, params, x, lengths, labels, weights)["logits"]
    p, rows, t = params["params"], jnp.arange(B)[:, None], jnp.arange(L)[None, :]
    real = t < lengths[:, None]
    flip = jnp.where(real, lengths[:, None] - 1 - t, t)  # reverses each example's real positions
    run = JIT(nn.RNN(CELL_CLASSES[cell](features=HIDDEN)).apply)
    backward = run({"params": p[f"{cell}_0_backward"]}, x[rows, flip])[rows, flip]
    h = jnp.concatenate([run({"params": p[f"{cell}_0"]}, x), backward], axis=-1)  # [B, L, 2 * HIDDEN]
    if pooling == "flatten":
        h = jnp.where(real[..., None], h, 0.0).reshape(B, -1)
    keep = real if pooling is None else slice(None)
    expected = h @ p["logits"]["kernel"] + p["logits"]["bias"]
    np.testing.assert_allclose(logits[keep], expected[keep], rtol=1e-5, atol=1e-5)


def test_mnist1d_reference_gru():
    """greydanus/mnist1d's GRUBase: bidirectional GRU of hidden 6 whose 40 steps of outputs are flattened into
    one Linear(480, 10); 5,110 parameters (PyTorch's 5,134 less the 24 redundant second biases of its GRU).
    Bidirectional "last" reads both final states."""
    x = jnp.zeros((2, 40))
    shapes = lambda **kw: jax.eval_shape(  # noqa: E731
        Recurrent(RecurrentConfig(cell="gru", hidden_size=6, bidirectional=True, **kw), 10).init, jax.random.key(0),
        x)["params"]
    params = shapes(pooling="flatten")
    assert set(params) == {"gru_0", "gru_0_backward", "logits"} and params["logits"]["kernel"].shape == (480, 10)
    assert sum(leaf.size for leaf in jax.tree.leaves(params)) == 5110
    assert shapes(pooling="last", num_layers=2)["logits"]["kernel"].shape == (12, 10)


@pytest.mark.parametrize("config", list(CONFIGS), ids=str)
def test_fits_its_task(config):
    """Previous or next token (sequence models), last real token ("last"), majority ("mean", "flatten"), on 32
    sequences of lengths 3..8: cross-entropy < 0.1 after 60 Adam steps (lr 0.03), from above 0.5."""
    _, params, probe, batch = _setup(*config)
    _, losses = fit(probe, params, batch, steps=60)
    assert losses[0] > 0.5 and losses[-1] < 0.1, (losses[0], losses[-1])


@pytest.mark.parametrize("kwargs,match", [
    (dict(cell="transformer"), r"cell must be one of \['gru', 'lstm', 'rnn'\], got 'transformer'"),
    (dict(hidden_size=0), "hidden_size must be an int >= 1, got 0"),
    (dict(num_layers=1.5), "num_layers must be an int >= 1, got 1.5"),
    (dict(readout_relu="yes"), "readout_relu must be a bool, got 'yes'"),
    (dict(bidirectional=1), "bidirectional must be a bool, got 1"),
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
