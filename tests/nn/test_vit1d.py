"""ViT1D: patches of a 1-D signal, CLS or mean pooling; shapes, padding, errors, training."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn.contract import Classifier
from attnjax.nn.vit1d import ViT1D, ViT1DConfig
from tests.nn.training import adam_losses

B, L, C = 2, 16, 4
SMALL = dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=16, max_len=64, patch_size=4)


def _signal(features=None, seed=0):
    shape = (B, L) if features is None else (B, L, features)
    return jax.random.normal(jax.random.key(seed), shape)


@functools.lru_cache(maxsize=None)
def _model(**fields):
    return ViT1D(config=ViT1DConfig(**{**SMALL, **fields}), output_size=C)


@functools.lru_cache(maxsize=None)
def _params(features=None, **fields):
    return _model(**fields).init(jax.random.key(0), _signal(features))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("features", [None, 3])
def test_shapes_dtypes_and_patches(pooling, features):
    model, params = _model(pooling=pooling), _params(features, pooling=pooling)
    assert isinstance(model, Classifier)
    out = model.apply(params, _signal(features))
    assert out.shape == (B, C) and out.dtype == jnp.float32
    # A linear embedding of each patch of 4 positions x F features; a CLS token only with "cls".
    F = features or 1
    assert params["params"]["patch_embed"]["kernel"].shape == (4 * F, 16)
    assert ("cls" in params["params"]["encoder"]) == (pooling == "cls")


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_never_changes_the_logits(pooling):
    model, params, x = _model(pooling=pooling), _params(pooling=pooling), _signal()
    lengths = jnp.array([L, 6])  # example 1 ends inside its second patch
    out = model.apply(params, x, lengths)
    garbage = x.at[1, 6:].set(25.0)
    np.testing.assert_allclose(model.apply(params, garbage, lengths)[1], out[1], atol=1e-5)
    np.testing.assert_allclose(model.apply(params, garbage, lengths)[0], out[0], atol=1e-6)
    assert not np.allclose(model.apply(params, garbage)[1], model.apply(params, x)[1], atol=1e-3)


def test_errors():
    model, params = _model(), _params()
    with pytest.raises(ValueError, match="input length L=18 must be divisible by patch_size=4"):
        model.apply(params, jnp.zeros((B, 18)))
    with pytest.raises(ValueError, match=r"rank 2 \[B, L\] or 3"):
        model.apply(params, jnp.zeros((B, L, 1, 1)))
    with pytest.raises(ValueError, match="pooling must be 'cls' or 'mean', got None"):
        ViT1DConfig(pooling=None)
    with pytest.raises(ValueError, match="patch_size must be an int >= 1, got 0"):
        ViT1DConfig(patch_size=0)


@pytest.mark.slow
def test_trains_below_stated_loss_with_one_trace():
    """Which of the 4 patches holds a bump (an MNIST-1D-like toy): cross-entropy falls from ~ln 4 = 1.39
    to < 0.1 within 50 Adam steps, compiled once."""
    model = _model()
    labels = jnp.arange(32) % C
    bumps = jax.nn.one_hot(labels * 4 + 1, L) * 3.0
    x = bumps + 0.3 * jax.random.normal(jax.random.key(5), (32, L))
    params = model.init(jax.random.key(0), x)["params"]
    losses = adam_losses(model.apply, params, (x,), labels, steps=50)
    assert losses[0] > 1.0 and losses[-1] < 0.1, losses[::10]
