"""Gradient accumulation (``make_train_step(micro_batches=k)``) equals the one-batch step; the micro-batch split.

(Accumulation inside the jit, shard_map and pmap forms on 8 devices: tests/train/test_parallel_steps.py.)

Tolerance: the accumulating step computes the same float32 sums as the one-batch step in another order
(per-micro-batch partial sums, then their sum, then one division by the global token count). Each
reordered float32 sum is off by a few ulps (~1e-7 relative); through 3 SGD steps that leaves parameter
differences around 1e-7. rtol 1e-5 / atol 1e-6 keeps an order of magnitude of margin while staying far
below what a wrong reduction gives: a mean of per-micro-batch means (what ``optax.MultiSteps`` would
average) changes the loss by > 1e-2 on these batches (checked below). SGD, not Adam: Adam's first update
``g / (|g| + eps)`` turns last-bit differences in near-zero gradients into O(lr) parameter differences.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attnjax import nn as ann, train

B, L, V, C = 16, 8, 5, 3
TOL = dict(rtol=1e-5, atol=1e-6)


def _state():
    # Randomized positions: the micro-batches must share the one-batch step's single draw of positions.
    model = ann.build_model("transformer", C, dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=16,
                                                   randomized_positions=True, max_len=64))
    return train.create_train_state(model, jax.random.key(0), jnp.zeros((1, L, V)), optax.sgd(0.1))


def _batch(seed):
    """Rows with very different numbers of scored tokens, so micro-batch token counts differ."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, L + 1, B)
    real = np.arange(L)[None] < lengths[:, None]
    scored = real & (rng.random((B, L)) < 0.6)
    scored[::4] = False
    scored[::4, 0] = True  # every 4th row scores one token
    return {"inputs": (np.eye(V, dtype=np.float32)[rng.integers(0, V, (B, L))] * real[..., None]),
            "targets": rng.integers(0, C, (B, L)).astype(np.int32), "loss_mask": scored.astype(np.float32),
            "seq_lengths": lengths.astype(np.int32)}


BATCHES = [_batch(seed) for seed in range(3)]
RNG = jax.random.key(11)


def _train(step):
    state, metrics = _state(), []
    for batch in BATCHES:
        state, m = step(state, batch, RNG)
        metrics.append(m)
    return jax.device_get(state.params), jax.device_get(metrics)


@pytest.fixture(scope="module")
def one_batch():
    return _train(jax.jit(train.train_step))


def test_accumulated_step_equals_one_batch_step(one_batch):
    got = _train(jax.jit(train.make_train_step(micro_batches=4)))
    chex.assert_trees_all_close(got, one_batch, **TOL)


def test_a_mean_of_micro_batch_means_would_be_caught():
    # What averaging per-micro-batch mean losses gives on the first batch: far outside TOL.
    state, batch, loss = _state(), BATCHES[0], jax.jit(lambda s, b: train.eval_step(s, b, RNG)["loss"])
    split = train.accumulate.split_micro_batches(batch, 4)
    means = [float(loss(state, {k: v[i] for k, v in split.items()})) for i in range(4)]
    assert abs(np.mean(means) - float(loss(state, batch))) > 1e-2


def test_micro_batch_split_is_strided_and_checked():
    batch = {"x": np.arange(8)[:, None] * np.ones((1, 3)), "n": np.arange(8)}
    split = train.accumulate.split_micro_batches(batch, 2)
    np.testing.assert_array_equal(split["n"], [[0, 2, 4, 6], [1, 3, 5, 7]])
    assert split["x"].shape == (2, 4, 3)
    with pytest.raises(ValueError, match="divisible by micro_batches=3"):
        train.accumulate.split_micro_batches(batch, 3)
    with pytest.raises(ValueError, match="micro_batches must be an int >= 1, got 0"):
        train.make_train_step(micro_batches=0)
    assert train.make_train_step(micro_batches=1) is train.train_step
    # One object per k, so fit's jit (cached per step function) compiles once.
    assert train.make_train_step(micro_batches=2) is train.make_train_step(parallel=None, micro_batches=2)
