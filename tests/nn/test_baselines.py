"""Logistic, MLP and CNN baselines: reference architectures, padding, training, errors.

Compiles dominate the time of these tests, so each model compiles one ``probe`` (loss, logits,
gradients and one Adam step on a fixed batch) that serves the padding and training tests alike.
:data:`JIT`, :func:`make_probe` and :func:`fit` live in ``tests/nn/training.py``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn.baselines import CNN, MLP, CNNConfig, Logistic, LogisticConfig, MLPConfig
from attnjax.nn.contract import Classifier, SequenceModel
from tests.nn.training import JIT, fit, make_probe, probe_once

B, L, F, C = 32, 12, 2, 2
CLASSIFIERS = {
    "logistic": lambda: Logistic(LogisticConfig(), C),
    "mlp": lambda: MLP(MLPConfig(hidden_sizes=(16, 16)), C),
    "cnn_flatten": lambda: CNN(CNNConfig(channels=(8, 8), kernel_sizes=(5, 3)), C),
    "cnn_mean": lambda: CNN(CNNConfig(channels=(8, 8), kernel_sizes=(5, 3), pooling="mean"), C),
    "cnn_max": lambda: CNN(CNNConfig(channels=(8, 8), kernel_sizes=(5, 3), pooling="max"), C),
    # per-position model: labels are the previous token of a one-hot sequence with V = F = 2
    "cnn_sequence": lambda: CNN(CNNConfig(channels=(8, 8), kernel_sizes=(3, 5), pooling=None), C),
}


def _batch(name):
    """``(inputs [B, L, F], lengths, labels, weights)``; lengths 7..12, padding filled with noise.

    Classifiers: two classes separated by a shift of the whole real sequence. ``cnn_sequence``:
    one-hot tokens, label = the previous token, weighted on real positions only.
    """
    lengths = 7 + jnp.arange(B) % 6
    real = jnp.arange(L)[None, :] < lengths[:, None]
    noise = jax.random.normal(jax.random.key(9), (B, L, F))
    if name == "cnn_sequence":
        tokens = jax.random.randint(jax.random.key(4), (B, L), 0, F)
        x = jax.nn.one_hot(tokens, F)
        labels, weights = jnp.concatenate([tokens[:, :1], tokens[:, :-1]], axis=1), real.astype(jnp.float32)
    else:
        labels = jnp.arange(B) % 2
        x = 0.5 * jax.random.normal(jax.random.key(3), (B, L, F)) + jnp.where(labels == 1, 1.0, -1.0)[:, None, None]
        weights = jnp.ones((B,))
    return jnp.where(real[..., None], x, 3.0 * noise), lengths, labels, weights


@functools.lru_cache(maxsize=None)
def _setup(name):
    """(model, initial params, probe, batch) per model, built once per test session."""
    model = CLASSIFIERS[name]()
    batch = _batch(name)
    params = JIT(model.init)(jax.random.key(0), batch[0])
    return model, params, make_probe(model.apply, lr=0.03), batch


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("shape", [(3, 12), (3, 12, 2)])
def test_shapes(name, shape):
    model = CLASSIFIERS[name]()
    if name == "cnn_sequence" and len(shape) == 2:
        shape = (3, 12, 4)  # a sequence model needs [B, L, V]
    x = jnp.zeros(shape)
    out = jax.eval_shape(model.apply, jax.eval_shape(model.init, jax.random.key(0), x), x, jnp.array([12, 7, 9]))
    assert out.shape == ((3, 12, C) if name == "cnn_sequence" else (3, C)) and out.dtype == jnp.float32
    assert isinstance(model, SequenceModel if name == "cnn_sequence" else Classifier)


def test_reference_architectures_on_mnist1d_length():
    """MNIST-1D's ConvBase (5210 params: 40 -> 19 -> 10 -> 5 positions, linear on 25 * 5 = 125) and
    MLPBase (15210 params) and LinearBase, on the 40-step sequences."""
    x = jnp.zeros((2, 40))
    count = lambda model: sum(p.size for p in jax.tree.leaves(  # noqa: E731
        jax.eval_shape(model.init, jax.random.key(0), x)))
    cnn = jax.eval_shape(CNN(CNNConfig(), 10).init, jax.random.key(0), x)["params"]
    assert [cnn[f"conv_{i}"]["kernel"].shape for i in range(3)] == [(5, 1, 25), (3, 25, 25), (3, 25, 25)]
    assert cnn["logits"]["kernel"].shape == (125, 10)
    assert count(CNN(CNNConfig(), 10)) == 5210
    assert count(MLP(MLPConfig(), 10)) == 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10
    assert count(Logistic(LogisticConfig(), 10)) == 40 * 10 + 10


def test_mlp_residual_layer():
    x = jax.random.normal(jax.random.key(1), (2, 6))
    model = MLP(MLPConfig(hidden_sizes=(4, 4)), 3)
    params = JIT(model.init)(jax.random.key(0), x)
    # With the second layer's weights zeroed, relu(W h + b) = 0: the residual layer passes h through.
    params["params"]["hidden_1"] = jax.tree.map(jnp.zeros_like, params["params"]["hidden_1"])
    p = params["params"]
    h = jax.nn.relu(x @ p["hidden_0"]["kernel"] + p["hidden_0"]["bias"])
    np.testing.assert_allclose(JIT(model.apply)(params, x), h @ p["logits"]["kernel"] + p["logits"]["bias"],
                               rtol=1e-5)
    plain = JIT(MLP(MLPConfig(hidden_sizes=(4, 4), residual=False), 3).apply)(params, x)
    np.testing.assert_allclose(plain, jnp.broadcast_to(p["logits"]["bias"], (2, 3)), rtol=1e-6)


def test_mlp_dropout_only_when_training():
    x = jax.random.normal(jax.random.key(1), (4, 10))
    model = MLP(MLPConfig(hidden_sizes=(32,), dropout_rate=0.5), 3)
    params = JIT(model.init)(jax.random.key(0), x)
    apply = JIT(lambda rng, train: model.apply(params, x, train=train, rngs={"dropout": rng}),
                static_argnames="train")
    assert not np.allclose(apply(jax.random.key(1), True), apply(jax.random.key(2), True))
    np.testing.assert_array_equal(apply(jax.random.key(1), False), apply(jax.random.key(2), False))


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_padded_content_is_invisible(name):
    """Positions >= seq_lengths are zeroed before any weight: other padding gives the same logits,
    the loss gradient w.r.t. padded inputs is exactly zero, and a model told that everything is real
    does read them."""
    model, params, probe, (x, lengths, labels, weights) = _setup(name)
    real = jnp.arange(L)[None, :] < lengths[:, None]
    out = probe_once(probe, params, x, lengths, labels, weights)
    other = probe_once(probe, params, jnp.where(real[..., None], x, -x), lengths, labels, weights)
    np.testing.assert_allclose(other["logits"], out["logits"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["input_grads"][~real], 0.0)
    assert np.all(np.abs(out["input_grads"]).sum((1, 2)) > 0)
    unmasked = probe_once(probe, params, x, jnp.full((B,), L), labels, weights)["logits"]
    assert not np.allclose(unmasked[~real[:, -1]], out["logits"][~real[:, -1]])


@pytest.mark.parametrize("name", ["cnn_mean", "cnn_max", "cnn_sequence"])
def test_padded_example_equals_unpadded_sequence(name):
    """Masking before every convolution makes a padded example's output that of the sequence alone."""
    model, params, probe, (x, lengths, labels, weights) = _setup(name)
    assert int(lengths[0]) == 7
    padded = probe_once(probe, params, x, lengths, labels, weights)["logits"][:1]
    alone = JIT(model.apply)(params, x[:1, :7])
    np.testing.assert_allclose(padded[:, :7] if name == "cnn_sequence" else padded, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_models_fit_a_tiny_task(name):
    """Classifiers: two classes shifted apart (32 examples of lengths 7..12); ``cnn_sequence``: the
    previous token at each real position. Cross-entropy < 0.1 after 40 Adam steps (lr 0.03),
    from about log 2 = 0.69."""
    _, params, probe, batch = _setup(name)
    _, losses = fit(probe, params, batch, steps=40)
    assert losses[0] > 0.3 and losses[-1] < 0.1, (losses[0], losses[-1])


@pytest.mark.parametrize("make,match", [
    (lambda: MLPConfig(hidden_sizes=(16, 0)), r"hidden_sizes must be a tuple of ints >= 1, got \(16, 0\)"),
    (lambda: MLPConfig(hidden_sizes=[16]), "hidden_sizes must be a tuple"),
    (lambda: MLPConfig(dropout_rate=1.0), r"dropout_rate must be in \[0, 1\), got 1.0"),
    (lambda: CNNConfig(channels=()), "channels must be a non-empty tuple"),
    (lambda: CNNConfig(kernel_sizes=(5, 3)), r"kernel_sizes must have one entry per layer of channels \(3\)"),
    (lambda: CNNConfig(strides=(1, 1)), r"strides must have one entry per layer of channels \(3\)"),
    (lambda: CNNConfig(padding=-1), "padding must be an int >= 0, got -1"),
    (lambda: CNNConfig(pooling="sum"), "pooling must be one of .*'sum'"),
    (lambda: CNNConfig(pooling=None, strides=(2, 1, 1)), "strides must all be 1 with pooling=None"),
])
def test_config_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_input_errors():
    model = Logistic(LogisticConfig(), 2)
    with pytest.raises(ValueError, match=r"inputs must have rank 2 \[B, L\] or rank 3 \[B, L, F\], got shape "
                                         r"\(2, 3, 4, 5\)"):
        model.init(jax.random.key(0), jnp.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match=r"seq_lengths must have shape \[B\] = \(2,\), got \(3,\)"):
        model.init(jax.random.key(0), jnp.zeros((2, 3)), jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"rank 3 \[B, L, V\] with pooling=None, got shape \(2, 3\)"):
        CNN(CNNConfig(pooling=None), 2).init(jax.random.key(0), jnp.zeros((2, 3)))
