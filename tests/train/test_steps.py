"""train_step/eval_step: trace once, learn, match across 1 and 8 devices, masked metrics."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from attnjax import data, nn as ann, train
from attnjax.parallel import data_mesh
from attnjax.train.steps import masked_loss_and_correct


def _setup(task_name="reverse_string", max_len=3, batch=8, model="lstm", cfg=None, lr=1e-2, seed=0):
    task = data.get_task(task_name)
    model = ann.build_model(model, task.output_size, cfg or dict(hidden_size=16))
    rng = np.random.default_rng(seed)
    example = jnp.zeros((1, data.padded_length(task, max_len), data.vocab_size(task)))
    state = train.create_train_state(model, jax.random.key(seed), example, train.make_optimizer(lr, 1.0))
    return task, state, lambda: data.training_batch(task, rng, batch, max_len)


def test_train_step_traces_once():
    _, state, next_batch = _setup()
    step = jax.jit(chex.assert_max_traces(train.train_step, n=1))
    key = jax.random.key(0)
    for _ in range(3):
        state, metrics = step(state, next_batch(), key)
    assert int(state.step) == 3
    assert set(metrics) == {"loss", "accuracy", "grad_norm", "param_norm", "update_norm"}
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_loss_decreases_on_tiny_task():
    _, state, next_batch = _setup()
    state, history = train.fit(state, lambda _: next_batch(), 150, rng=jax.random.key(1), log_every=25,
                               progress=False)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"], history
    assert history[-1]["accuracy"] > 0.9


def test_sharded_step_over_8_devices_equals_single_device():
    assert jax.device_count() == 8
    cfg = dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=16)
    _, state8, next_batch = _setup(model="transformer", cfg=cfg)
    _, state1, _ = _setup(model="transformer", cfg=cfg)
    # SGD, not Adam: Adam's first update is g / (|g| + eps), which turns last-bit differences in
    # near-zero gradients (summation order of the 8-way all-reduce) into O(lr) differences. SGD keeps
    # the comparison about what sharding can change: the gradient itself.
    state8, state1 = (s.replace(tx=optax.sgd(0.1), opt_state=optax.sgd(0.1).init(s.params)) for s in (state8, state1))
    batch, key = next_batch(), jax.random.key(3)
    out = {}
    for name, mesh, state in (("8", data_mesh(8), state8), ("1", data_mesh(1), state1)):
        step = train.make_train_step(parallel="jit", mesh=mesh)
        state = train.put_replicated(state, mesh)
        new_state, metrics = step(state, train.shard_batch(batch, mesh), key)
        out[name] = (jax.device_get(new_state.params), jax.device_get(metrics))
    assert len(train.shard_batch(batch, data_mesh(8))["inputs"].sharding.device_set) == 8
    chex.assert_trees_all_close(out["8"][1], out["1"][1], rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(out["8"][0], out["1"][0], rtol=1e-5, atol=1e-6)


def test_masked_loss_and_correct_counts_only_scored_positions():
    logits = jnp.log(jnp.array([[[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]]))
    targets = jnp.array([[0, 0, 1]])
    mask = jnp.array([[1.0, 1.0, 0.0]])
    loss_sum, loss_count, correct, count = masked_loss_and_correct(logits, targets, mask)
    np.testing.assert_allclose(loss_sum, -np.log(0.9) - np.log(0.2), rtol=1e-6)
    assert float(correct) == 1.0 and float(count) == float(loss_count) == 2.0
    # A termination token: accuracy stops at position 0, the loss still covers both scored positions.
    stop = jnp.array([[1.0, 0.0, 0.0]])
    loss_sum2, loss_count, correct, count = masked_loss_and_correct(logits, targets, mask, stop)
    assert float(loss_sum2) == float(loss_sum) and float(loss_count) == 2.0
    assert float(correct) == 1.0 and float(count) == 1.0


def test_eval_step_ignores_padding_and_aggregates():
    task, state, _ = _setup(task_name="duplicate_string", max_len=2)
    rng = np.random.default_rng(0)
    b = data.length_batch(task, rng, 4, 1, pad_to=6)
    m = train.eval_step(state, b)
    assert float(m["count"]) == 4 * 2  # two blanks per example, padding unscored
    agg = train.evaluate(state, [b, b])
    np.testing.assert_allclose(agg["accuracy"], float(m["accuracy"]), rtol=1e-6)
    assert agg["count"] == 16


def test_make_optimizer_is_cached_and_checks():
    assert train.make_optimizer(1e-3, 1.0) is train.make_optimizer(1e-3, 1.0)
    import pytest
    with pytest.raises(ValueError, match="learning_rate"):
        train.make_optimizer(0.0)


def test_step_rng_is_folded_with_the_step_number():
    cfg = dict(num_layers=1, d_model=8, num_heads=2, mlp_dim=8, dropout_rate=0.5)
    _, state, next_batch = _setup(model="transformer", cfg=cfg)
    step = jax.jit(train.train_step)
    batch, key = next_batch(), jax.random.key(7)
    loss = lambda s: float(step(s, batch, key)[1]["loss"])  # noqa: E731 - the step is not donated here
    assert loss(state) == loss(state)  # same state, batch and key: same dropout masks
    assert loss(state) != loss(state.replace(step=state.step + 1))  # next step: fresh dropout masks


def test_evaluation_without_rng_on_randomized_positions_names_the_callers_rng():
    """The fix is the evaluation function's own rng=, not apply's rngs= (which its caller never sees)."""
    import pytest

    cfg = dict(num_layers=1, d_model=8, num_heads=2, mlp_dim=8, randomized_positions=True, max_len=32)
    task, state, _ = _setup(task_name="parity_check", model="transformer", cfg=cfg)
    rng = np.random.default_rng(0)
    make_batches = lambda n: [data.length_batch(task, rng, 4, n, pad_to=data.padded_length(task, 3))]  # noqa: E731
    calls = {"evaluate_lengths": lambda **kw: train.evaluate_lengths(state, make_batches, [2, 3], **kw),
             "evaluate": lambda **kw: train.evaluate(state, make_batches(2), **kw),
             "eval_step": lambda **kw: train.eval_step(state, make_batches(2)[0], **kw)}
    for name, call in calls.items():
        with pytest.raises(ValueError, match=rf"{name} got rng=None.*pass rng=key to {name}") as info:
            call()
        assert "rngs=" not in str(info.value)
        call(rng=jax.random.key(0))  # the fix the message names works
