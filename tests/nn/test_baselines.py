"""Logistic, MLP and CNN baselines: reference shapes, padding, training, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attnjax.nn.baselines import CNN, MLP, CNNConfig, Logistic, LogisticConfig, MLPConfig

CLASSIFIERS = {
    "logistic": lambda C: Logistic(LogisticConfig(), C),
    "mlp": lambda C: MLP(MLPConfig(hidden_sizes=(16, 16)), C),
    "cnn_flatten": lambda C: CNN(CNNConfig(channels=(8, 8), kernel_sizes=(5, 3)), C),
    "cnn_mean": lambda C: CNN(CNNConfig(channels=(8, 8), kernel_sizes=(5, 3), pooling="mean"), C),
    "cnn_max": lambda C: CNN(CNNConfig(channels=(8, 8), kernel_sizes=(5, 3), pooling="max"), C),
}


@functools.lru_cache(maxsize=None)
def _built(name, C, shape):
    """(model, params, jitted apply) for one model on inputs of ``shape``: each compiles once per file."""
    model = CLASSIFIERS[name](C) if name in CLASSIFIERS else CNN(CNNConfig(channels=(6, 6), kernel_sizes=(3, 5),
                                                                          pooling=None), C)
    params = model.init(jax.random.key(0), jnp.zeros(shape))
    return model, params, jax.jit(model.apply)


def adam_fit(loss_fn, params, steps, lr):
    """``steps`` full-batch Adam steps in one jitted scan; returns (params, loss after the last step)."""
    opt = optax.adam(lr)

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            grads = jax.grad(loss_fn)(p)
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
        return params, loss_fn(params)

    return run(params)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("shape", [(3, 12), (3, 12, 2)])
def test_classifier_shapes(name, shape):
    model = CLASSIFIERS[name](5)
    x = jnp.zeros(shape)
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    out = jax.eval_shape(model.apply, params, x, jnp.array([12, 7, 9]))
    assert out.shape == (3, 5) and out.dtype == jnp.float32


def test_cnn_sequence_shapes():
    model = CNN(CNNConfig(pooling=None), 4)
    x = jnp.zeros((2, 11, 3))
    out = jax.eval_shape(model.apply, jax.eval_shape(model.init, jax.random.key(0), x), x)
    assert out.shape == (2, 11, 4) and out.dtype == jnp.float32


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
    params = jax.tree.map(lambda a: a, model.init(jax.random.key(0), x))
    # With the second layer's weights zeroed, relu(W h + b) = 0: the residual layer passes h through.
    params["params"]["hidden_1"] = jax.tree.map(jnp.zeros_like, params["params"]["hidden_1"])
    p = params["params"]
    h = jax.nn.relu(x @ p["hidden_0"]["kernel"] + p["hidden_0"]["bias"])
    np.testing.assert_allclose(model.apply(params, x), h @ p["logits"]["kernel"] + p["logits"]["bias"], rtol=1e-5)
    plain = MLP(MLPConfig(hidden_sizes=(4, 4), residual=False), 3).apply(params, x)
    np.testing.assert_allclose(plain, jnp.broadcast_to(p["logits"]["bias"], (2, 3)), rtol=1e-6)


def test_mlp_dropout_only_when_training():
    x = jax.random.normal(jax.random.key(1), (4, 10))
    model = MLP(MLPConfig(hidden_sizes=(32,), dropout_rate=0.5), 3)
    params = model.init(jax.random.key(0), x)
    a, b = (model.apply(params, x, train=True, rngs={"dropout": jax.random.key(s)}) for s in (1, 2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(model.apply(params, x), model.apply(params, x, train=False))


@pytest.mark.parametrize("name", sorted(CLASSIFIERS) + ["cnn_sequence"])
def test_padded_content_never_changes_real_outputs(name):
    B, L, F = 2, 12, 2
    model, params, apply = _built(name, 3, (B, L, F))
    x = jax.random.normal(jax.random.key(1), (B, L, F))
    lengths = jnp.array([7, 12])
    pad = jnp.arange(L)[None, :, None] >= lengths[:, None, None]
    noisy = jnp.where(pad, 50.0 * jax.random.normal(jax.random.key(2), x.shape), x)
    out, out_noisy = apply(params, x, lengths), apply(params, noisy, lengths)
    if name == "cnn_sequence":
        out, out_noisy = out[0, :7], out_noisy[0, :7]
    np.testing.assert_allclose(out_noisy, out, rtol=1e-5, atol=1e-5)
    assert not np.allclose(apply(params, noisy), apply(params, x))  # without lengths, padding is data


@pytest.mark.parametrize("name", ["cnn_mean", "cnn_max", "cnn_sequence"])
def test_padded_example_equals_unpadded_sequence(name):
    """Masking before every convolution makes a padded example's output that of the sequence alone."""
    model, params, apply = _built(name, 3, (2, 12, 2))
    x = jax.random.normal(jax.random.key(1), (2, 12, 2))
    padded = apply(params, x, jnp.array([7, 12]))
    alone = model.apply(params, x[:1, :7])
    np.testing.assert_allclose(padded[:1, :7] if name == "cnn_sequence" else padded[:1], alone, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifiers_fit_a_separable_problem(name):
    """Two classes separated by a shift of the whole sequence: cross-entropy < 0.1 after 40 Adam steps."""
    B, L = 32, 12
    model, params, _ = _built(name, 2, (B, L))
    labels = jnp.arange(B) % 2
    x = 0.5 * jax.random.normal(jax.random.key(3), (B, L)) + jnp.where(labels[:, None] == 1, 1.0, -1.0)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), labels).mean()

    _, final = adam_fit(loss, params, steps=40, lr=0.03)
    assert final < 0.1, final


def test_cnn_sequence_model_fits_previous_token():
    """Per-position target = the previous token (a 3-wide kernel sees it): loss < 0.1 in 60 Adam steps."""
    B, L, V = 16, 10, 3
    model, params, _ = _built("cnn_sequence", V, (B, L, V))
    tokens = jax.random.randint(jax.random.key(4), (B, L), 0, V)
    targets = jnp.concatenate([tokens[:, :1], tokens[:, :-1]], axis=1)

    def loss(p):
        logits = model.apply(p, jax.nn.one_hot(tokens, V))
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    _, final = adam_fit(loss, params, steps=60, lr=0.03)
    assert final < 0.1, final


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
