"""Every form of ``make_train_step`` (jit, shard_map, pmap, each with and without micro-batches) on 8 fake CPU
devices equals the 1-device ``train_step``; invalid combinations and indivisible batches are clear errors.

Tolerance: the forms compute the same float32 math as the 1-device step, only the summation order differs
(per-device partial sums of 2 of the 16 rows, or of 1 row per micro-batch, then an 8-way all-reduce, against
one reduction).
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
from attnjax.train.parallel_steps import replicate, split_batch, unreplicate

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


def _run(step, place=lambda x: x, shard=lambda batch: batch, unplace=lambda x: x, place_rng=None):
    """3 steps from the same state: the parameters and every step's metrics, on the host."""
    state, rng, metrics = place(_state()), (place_rng or place)(RNG), []
    for batch in BATCHES:
        state, m = step(state, shard(batch), rng)
        metrics.append(unplace(m))
    return jax.device_get(unplace(state).params), jax.device_get(metrics)


@pytest.fixture(scope="module")
def reference():
    """The plain single-device step."""
    return _run(jax.jit(train.train_step))


def _pmap_metrics(metrics):
    assert all(np.ptp(np.asarray(v)) == 0 for v in metrics.values())  # every device reports the global value
    return {k: v[0] for k, v in metrics.items()}


@pytest.mark.parametrize("micro_batches", [1, 2])
@pytest.mark.parametrize("parallel", ["jit", "shard_map", "pmap"])
def test_every_form_of_make_train_step_equals_the_one_device_step(parallel, micro_batches, reference):
    """Parameters and metrics (loss, accuracy, grad/param/update norms) after each of 3 steps. The pure form
    (``parallel=None``, what fit compiles) with micro-batches: tests/train/test_accumulate.py."""
    assert jax.device_count() == 8
    mesh = mesh_from_config()  # every device on "data"
    assert dict(mesh.shape) == {"data": 8, "seq": 1, "model": 1}
    if parallel == "pmap":
        got = _run(train.make_train_step(parallel="pmap", micro_batches=micro_batches), place=replicate,
                   place_rng=lambda rng: rng, shard=lambda batch: split_batch(batch, jax.local_device_count()),
                   unplace=lambda x: _pmap_metrics(x) if isinstance(x, dict) else unreplicate(x))
    else:
        step = train.make_train_step(parallel=parallel, mesh=mesh, micro_batches=micro_batches)
        got = _run(step, place=lambda x: jax.device_put(x, replicated(mesh)),
                   shard=lambda batch: train.shard_batch(batch, mesh))
    chex.assert_trees_all_close(got, reference, **TOL)


def test_the_check_tells_the_right_reduction_from_a_mean_of_per_device_means(reference):
    want_losses = [float(m["loss"]) for m in reference[1]]
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
        train.make_train_step(parallel="shard_map", mesh=mesh)(state, jax.device_put(batch, replicated(mesh)), RNG)
    with pytest.raises(ValueError, match="micro_batches=4 splits each device's rows: a batch of 16 over mesh axis "
                                         "'data' of size 8 leaves 2 rows per device; use a batch size divisible by 32"):
        train.make_train_step(parallel="shard_map", mesh=mesh, micro_batches=4)(state, BATCHES[0], RNG)
    with pytest.raises(ValueError, match="divisible by mesh axis 'data' of size 8"):
        train.shard_batch(batch, mesh)  # the jit step's placement
    with pytest.raises(ValueError, match="divisible by mesh axis 'pmap devices' of size 8"):
        split_batch(batch, 8)


@pytest.mark.parametrize("kwargs, message", [
    (dict(parallel="vmap"), "parallel must be one of .* got parallel='vmap'"),
    (dict(micro_batches=0), "micro_batches must be an int >= 1, got 0"),
    (dict(micro_batches=2.0), "micro_batches must be an int >= 1, got 2.0"),
    (dict(micro_batches=2, step_fn=train.seq2seq_train_step),
     "micro_batches=2 accumulates .*step_fn=seq2seq_train_step"),
    (dict(parallel="shard_map", mesh="MESH", step_fn=train.seq2seq_train_step),
     "parallel='shard_map' runs attnjax.train.train_step .*step_fn=seq2seq_train_step"),
    (dict(parallel="pmap", step_fn=train.seq2seq_train_step), "parallel='pmap' runs .*step_fn=seq2seq_train_step"),
    (dict(parallel="jit", mesh="MESH", seq_axis="seq"),
     "seq_axis='seq' .*needs parallel='shard_map', got parallel='jit'"),
    (dict(seq_axis="seq"), "seq_axis='seq' .*needs parallel='shard_map', got parallel=None"),
    (dict(parallel="pmap", mesh="MESH"), r"a mesh \(axes .*\) needs parallel='jit' or 'shard_map', got "
                                         r"parallel='pmap' \(pmap maps over the local devices"),
    (dict(mesh="MESH"), r"a mesh \(axes .*\) needs parallel='jit' or 'shard_map', got parallel=None"),
    (dict(parallel="shard_map"), "parallel='shard_map' needs a mesh, got mesh=None"),
    (dict(parallel="shard_map", mesh="MESH", data_axis="batch"), "data_axis='batch' is not an axis of the mesh"),
    (dict(parallel="shard_map", mesh="MESH", seq_axis="tokens"), "seq_axis='tokens' is not an axis of the mesh"),
    (dict(parallel="shard_map", mesh="MESH", seq_axis="data"), "seq_axis='data' is also data_axis"),
])
def test_make_train_step_rejects_combinations_that_do_not_exist(kwargs, message):
    kwargs = {k: mesh_from_config() if v == "MESH" else v for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=message):
        train.make_train_step(**kwargs)


def test_make_train_step_returns_one_object_per_configuration():
    mesh = mesh_from_config()
    for kwargs in (dict(micro_batches=2), dict(parallel="jit"), dict(parallel="jit", mesh=mesh, micro_batches=2),
                   dict(parallel="shard_map", mesh=mesh), dict(parallel="pmap", micro_batches=2)):
        assert train.make_train_step(**kwargs) is train.make_train_step(**kwargs), kwargs
    assert train.make_train_step() is train.train_step
    assert train.make_train_step(step_fn=train.seq2seq_train_step) is train.seq2seq_train_step
