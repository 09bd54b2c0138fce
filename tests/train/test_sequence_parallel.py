"""A 4-way sequence-parallel Transformer (ring attention over ``seq``, batch over ``data``) equals the
unsharded model: loss, accuracy and gradients of one train step of
``make_train_step(parallel="shard_map", seq_axis="seq")``, non-causal and causal, and with micro-batches.

Tolerance: the sharded step computes the same float32 function with a different summation order (ring
attention's online softmax over 4 key blocks instead of one softmax; loss sums over 8 shards). Each
changes results by a few ulps; the loss and gradients agree to ~1e-6 (measured: < 2e-7). rtol/atol 1e-5
leave margin, while giving each shard its local instead of its global positions moves the loss by 2e-2
to 3e-2 and the gradients by 0.1 to 0.2 (measured).
"""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attnjax import nn as ann, train
from attnjax.parallel import mesh_from_config, replicated

B, L, V, C = 4, 16, 5, 3
TOL = dict(rtol=1e-5, atol=1e-5)
# Non-causal: sinusoidal embeddings, contiguous layout, padded rows. Causal LM: RoPE at randomized
# positions (one random subset per step, indexed per shard), zigzag layout.
CASES = {
    "encoder": ("transformer", dict(positional="sinusoidal"), "contiguous"),
    "causal-lm": ("transformer_lm", dict(positional="rope", randomized_positions=True, max_len=64), "zigzag"),
}


def _batch():
    rng = np.random.default_rng(0)
    lengths = np.array([L, 11, 5, L], np.int32)
    real = np.arange(L)[None] < lengths[:, None]
    return {"inputs": np.eye(V, dtype=np.float32)[rng.integers(0, V, (B, L))] * real[..., None],
            "targets": rng.integers(0, C, (B, L)).astype(np.int32),
            "loss_mask": (real & (rng.random((B, L)) < 0.8)).astype(np.float32), "seq_lengths": lengths}


def _state(name, fields, **execution):
    cfg = dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=16, **fields)
    model = ann.build_model(name, C, cfg, ann.Execution(**execution))
    # SGD with lr 1: the update is the gradient itself, so parameters after one step compare gradients.
    return train.create_train_state(model, jax.random.key(0), jnp.zeros((1, L, V)), optax.sgd(1.0))


def _step(mesh, micro_batches=1):
    return train.make_train_step(parallel="shard_map", mesh=mesh, seq_axis="seq", micro_batches=micro_batches)


@pytest.mark.parametrize("case, micro_batches", [("causal-lm", 1), ("causal-lm", 2), ("encoder", 1)])
def test_sequence_parallel_step_equals_unsharded_loss_and_gradients(case, micro_batches):
    name, fields, layout = CASES[case]
    batch, rng = _batch(), jax.random.key(3)
    plain = _state(name, fields)
    sharded = _state(name, fields, sequence_parallel_axis="seq", sequence_parallel_layout=layout)
    chex.assert_trees_all_equal(sharded.params, plain.params)  # the flag changes no parameter
    before = jax.device_get(plain.params)

    want_state, want = jax.jit(train.train_step)(plain, batch, rng)
    mesh = mesh_from_config({"data": 2, "seq": 4})
    step = _step(mesh, micro_batches)  # micro-batches: each device's 2 rows run one at a time
    got_state, got = step(jax.device_put(sharded, replicated(mesh)), train.shard_batch(batch, mesh),
                          jax.device_put(rng, replicated(mesh)))
    for key in ("loss", "accuracy", "grad_norm"):
        np.testing.assert_allclose(got[key], want[key], **TOL, err_msg=key)
    grads = lambda state: jax.tree.map(lambda p, q: np.float64(p) - np.float64(q), before,  # noqa: E731
                                       jax.device_get(state.params))
    chex.assert_trees_all_close(grads(got_state), grads(want_state), **TOL)
    # The check is sensitive: the loss depends on the positions the sharded model must get right.
    assert float(want["grad_norm"]) > 0.1


def test_sequence_parallel_errors():
    mesh = mesh_from_config({"data": 2, "seq": 4})
    batch = _batch()
    plain = jax.device_put(_state("transformer", {}), replicated(mesh))
    with pytest.raises(ValueError, match="splits mesh axis 'seq' 4 ways, but the model is not sequence-parallel"):
        _step(mesh)(plain, train.shard_batch(batch, mesh), jax.random.key(0))
    sharded = _state("transformer", {}, sequence_parallel_axis="seq")
    with pytest.raises(ValueError, match="must run inside jax.shard_map"):
        sharded.apply_fn({"params": sharded.params}, batch["inputs"])
    odd = {k: v[:, :12] if v.ndim > 1 else v for k, v in batch.items()}  # 12 tokens: not 2 x 4 zigzag chunks
    with pytest.raises(ValueError, match="divisible by 8"):
        _step(mesh)(jax.device_put(sharded, replicated(mesh)), train.shard_batch(odd, mesh), jax.random.key(0))
    with pytest.raises(ValueError, match="sequence_parallel_axis is 'seq', but the step shards the sequence over "
                                         "seq_axis=None"):
        train.make_train_step(parallel="shard_map", mesh=mesh)(jax.device_put(sharded, replicated(mesh)),
                                                               train.shard_batch(batch, mesh), jax.random.key(0))
    with pytest.raises(ValueError, match="ring attention, which needs .*'attention.name': 'cosine', "
                                         "'positional': 'alibi'"):
        _state("transformer", {"positional": "alibi", "attention": "cosine"}, sequence_parallel_axis="seq")
    with pytest.raises(ValueError, match="sequence_parallel_layout must be one of"):
        ann.Execution(sequence_parallel_axis="seq", sequence_parallel_layout="spiral")


def test_fit_trains_a_sequence_parallel_model_like_the_unsharded_one():
    """``fit`` picks the shard_map step for a sequence-parallel model on a ``data x seq`` mesh: 3 steps
    give the unsharded run's logged losses and parameters (same tolerance as one step: 3 SGD steps at
    lr 1 of few-ulp differences)."""
    name, fields, _ = CASES["encoder"]
    batches = lambda step: _batch()  # noqa: E731 - one fixed batch: the run is about placement, not data
    runs = {}
    for label, extra, mesh in (("plain", {}, mesh_from_config({"data": 1}, jax.devices()[:1])),
                               ("ring", dict(sequence_parallel_axis="seq"), mesh_from_config({"data": 2, "seq": 4}))):
        state, history = train.fit(_state(name, fields, **extra), batches, 3, rng=jax.random.key(3), mesh=mesh,
                                   log_every=1)
        runs[label] = ([h["loss"] for h in history], jax.device_get(state.params))
    np.testing.assert_allclose(runs["ring"][0], runs["plain"][0], **TOL)
    chex.assert_trees_all_close(runs["ring"][1], runs["plain"][1], **TOL)
    assert abs(runs["plain"][0][0] - runs["plain"][0][-1]) > 1e-2  # the steps changed the model (lr 1: not down)


def test_fit_rejects_a_mesh_and_model_that_disagree_on_sequence_parallelism():
    mesh = mesh_from_config({"data": 2, "seq": 4})
    with pytest.raises(ValueError, match="splits mesh axis 'seq' 4 ways, but the model is not sequence-parallel"):
        train.fit(_state("transformer", {}), lambda step: _batch(), 1, rng=jax.random.key(0), mesh=mesh)
    with pytest.raises(ValueError, match="sequence-parallel model trains with step_fn=attnjax.train.train_step"):
        train.fit(_state("transformer", {}, sequence_parallel_axis="seq"), lambda step: _batch(), 1,
                  rng=jax.random.key(0), mesh=mesh, step_fn=train.make_train_step(micro_batches=2))
