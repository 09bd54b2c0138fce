"""jit, shard_map and pmap train steps on 8 fake CPU devices equal the 1-device step; clear divisibility errors.

Tolerance: the three steps compute the same float32 math as the 1-device step, only the summation order
differs (per-device partial sums of 2 of the 16 rows, then an 8-way all-reduce, against one reduction).
Each reordered float32 sum is off by a few ulps (~1e-7 relative); through 3 SGD steps at lr 0.1 that
leaves parameter differences around 1e-7 (measured: < 1e-6). rtol 1e-5 / atol 1e-6 keeps an order of
magnitude of margin while staying far below what a wrong reduction gives: a mean of per-shard means
instead of the per-token mean changes the loss by > 1e-2 on these batches (checked below).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attnjax import nn as ann, train
from attnjax.parallel import data_mesh, mesh_from_config, replicated

B, L, V, C = 16, 8, 5, 3
TOL = dict(rtol=1e-5, atol=1e-6)


def _state():
    model = ann.build_model("transformer", C, dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=16))
    # SGD, not Adam: Adam's first update is g / (|g| + eps), which turns last-bit differences in near-zero
    # gradients into O(lr) parameter differences; SGD keeps the comparison about the gradient itself.
    return train.create_train_state(model, jax.random.key(0), jnp.zeros((1, L, V)), optax.sgd(0.1))


def _batch(seed):
    """Rows with different numbers of scored tokens, so per-device token counts differ."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, L + 1, B)
    real = np.arange(L)[None] < lengths[:, None]
    scored = real & (rng.random((B, L)) < 0.6)
    scored[:2] = False
    scored[:2, 0] = True  # device 0's two rows score one token each
    return {"inputs": (np.eye(V, dtype=np.float32)[rng.integers(0, V, (B, L))] * real[..., None]),
            "targets": rng.integers(0, C, (B, L)).astype(np.int32), "loss_mask": scored.astype(np.float32),
            "seq_lengths": lengths.astype(np.int32)}


BATCHES = [_batch(seed) for seed in range(3)]
RNG = jax.random.key(7)


def _reference():
    step, state, losses = jax.jit(train.train_step), _state(), []
    for batch in BATCHES:
        state, metrics = step(state, batch, RNG)
        losses.append(float(metrics["loss"]))
    return jax.device_get(state.params), losses


def _run_mesh_step(step, mesh):
    state, rng, losses = jax.device_put(_state(), replicated(mesh)), jax.device_put(RNG, replicated(mesh)), []
    for batch in BATCHES:
        state, metrics = step(state, train.shard_batch(batch, mesh), rng)
        losses.append(float(metrics["loss"]))
    return jax.device_get(state.params), losses


def _run_pmap():
    step, state, losses = train.pmap_train_step(), train.replicate(_state()), []
    for batch in BATCHES:
        state, metrics = step(state, train.split_batch(batch, jax.local_device_count()), RNG)
        assert np.ptp(np.asarray(metrics["loss"])) == 0  # every device reports the same global loss
        losses.append(float(metrics["loss"][0]))
    return jax.device_get(train.unreplicate(state).params), losses


def test_jit_shard_map_and_pmap_steps_equal_one_device_step_after_3_steps():
    assert jax.device_count() == 8
    want_params, want_losses = _reference()
    mesh = mesh_from_config()  # every device on "data"
    assert dict(mesh.shape) == {"data": 8, "seq": 1, "model": 1}
    runs = {"jit": _run_mesh_step(train.jit_step(mesh), mesh),
            "shard_map": _run_mesh_step(train.shard_map_train_step(mesh), mesh),
            "pmap": _run_pmap()}
    for name, (params, losses) in runs.items():
        np.testing.assert_allclose(losses, want_losses, **TOL, err_msg=name)
        chex.assert_trees_all_close(params, want_params, **TOL, custom_message=name)
    # The test can tell the right reduction from a mean of per-device means.
    batch = BATCHES[0]
    logits = _state().apply_fn({"params": _state().params}, batch["inputs"], seq_lengths=batch["seq_lengths"])
    xent = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]))
    mask = batch["loss_mask"].reshape(8, 2, L)
    per_device = (xent.reshape(8, 2, L) * mask).sum((1, 2)) / mask.sum((1, 2))
    assert abs(per_device.mean() - want_losses[0]) > 1e-2


def test_indivisible_batch_is_a_clear_error():
    mesh = data_mesh(8)
    batch = {k: v[:12] for k, v in BATCHES[0].items()}
    state = jax.device_put(_state(), replicated(mesh))
    with pytest.raises(ValueError, match="divisible by mesh axis 'data' of size 8"):
        train.shard_map_train_step(mesh)(state, jax.device_put(batch, replicated(mesh)), RNG)
    with pytest.raises(ValueError, match="divisible by mesh axis 'data' of size 8"):
        train.shard_batch(batch, mesh)  # the jit step's placement
    with pytest.raises(ValueError, match="divisible by mesh axis 'pmap devices' of size 8"):
        train.split_batch(batch, 8)
