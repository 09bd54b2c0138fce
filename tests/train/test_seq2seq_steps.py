"""Seq2seq train/eval steps against a plain reference: losses, gradients, greedy decoding, sequence accuracy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attnjax import nn as ann
from attnjax import train
from attnjax.data.seq2seq import make_seq2seq_batch
from attnjax.parallel import data_mesh
from attnjax.train.seq2seq_steps import evaluate_seq2seq, seq2seq_eval_step_jit

A = 4
# The Transformer's generate and cross-attention maps are exercised by tests/experiments/test_seq2seq_attention.py;
# the steps themselves are model-agnostic, so one small RNNsearch keeps compile time down.
MODELS = {"rnn": ("rnn_seq2seq", dict(attention="additive", hidden_size=8, embed_dim=4, attention_dim=8))}


def _state(kind, tx=None):
    name, fields = MODELS[kind]
    model = ann.build_model(name, A, fields)
    example = (jnp.zeros((1, 1, A)), jnp.zeros((1, 1), jnp.int32))
    return model, train.create_train_state(model, jax.random.key(0), example, tx or train.make_optimizer(1e-2, 1.0))


def _batch(pad=5):
    return make_seq2seq_batch("reverse", np.random.default_rng(0), np.array([1, 3, 5, 2]), pad, A)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _reference(model, params, b):
    """Teacher-forced logits, and greedy tokens from re-running the teacher-forced model on a buffer holding its
    own predictions (causality: buffer positions after ``t`` cannot change logits at ``t``). One compiled
    program, no ``generate``."""
    apply = jax.jit(lambda p, x, y, n: model.apply({"params": p}, x, y, source_lengths=n))
    logits = np.asarray(apply(params, b["source"], b["target_inputs"], b["source_lengths"]))
    B, T = b["targets"].shape
    buffer, greedy = np.full((B, T), A, np.int32), np.zeros((B, T), np.int32)
    for t in range(T):
        step = np.asarray(apply(params, b["source"], buffer, b["source_lengths"]))
        greedy[:, t] = step[:, t].argmax(-1)
        if t + 1 < T:
            buffer[:, t + 1] = greedy[:, t]
    return logits, greedy


def test_eval_step_matches_a_plain_reference():
    model, state = _state("rnn")
    b = _batch()
    got = jax.device_get(seq2seq_eval_step_jit(state, b))
    logits, greedy = _reference(model, state.params, b)
    mask, targets = b["target_mask"], b["targets"]
    xent = -np.take_along_axis(_log_softmax(logits.astype(np.float64)), targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(got["loss_sum"], (xent * mask).sum(), rtol=1e-5)
    assert got["loss_count"] == got["count"] == mask.sum() == 11
    tf_hit, g_hit = logits.argmax(-1) == targets, greedy == targets
    assert got["correct"] == (tf_hit * mask).sum()
    assert got["greedy_correct"] == (g_hit * mask).sum()
    assert got["sequences"] == 4
    row_ok = lambda hit: sum(bool(np.all(hit[i, :n])) for i, n in enumerate(b["source_lengths"]))  # noqa: E731
    assert got["sequences_correct"] == row_ok(tf_hit) and got["greedy_sequences_correct"] == row_ok(g_hit)
    # Reduction over batches: the ratios of the summed counts.
    r = train.seq2seq_steps.reduce_seq2seq_metrics([got, got])
    assert r["greedy_token_accuracy"] == pytest.approx((g_hit * mask).sum() / 11)
    assert r["greedy_sequence_accuracy"] == pytest.approx(row_ok(g_hit) / 4) and r["count"] == 22


def test_eval_metrics_do_not_depend_on_padding():
    _, state = _state("rnn")
    short, long = _batch(5), _batch(9)  # same rng, same lengths: the same examples padded differently
    a, b = (evaluate_seq2seq(state, [x]) for x in (short, long))
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
    # Every length padded to one shape: the per-length evaluation reuses the one compiled program.
    compiled = seq2seq_eval_step_jit._cache_size()
    per_length = train.evaluate_seq2seq_lengths(
        state, lambda n: [make_seq2seq_batch("copy", np.random.default_rng(n), np.full(4, n), 9, A)], range(1, 10))
    assert sorted(per_length) == list(range(1, 10)) and per_length[1]["count"] == 4
    assert seq2seq_eval_step_jit._cache_size() == compiled


def test_train_step_matches_a_plain_sgd_step_and_fit_takes_it():
    model, state = _state("rnn", optax.sgd(0.5))
    b = _batch()

    @jax.jit
    def loss_and_grad(params):
        def loss_fn(p):
            logits = model.apply({"params": p}, b["source"], b["target_inputs"], source_lengths=b["source_lengths"])
            xent = optax.softmax_cross_entropy_with_integer_labels(logits, b["targets"])
            return jnp.sum(xent * b["target_mask"]) / jnp.sum(b["target_mask"])

        return jax.value_and_grad(loss_fn)(params)

    loss, grads = loss_and_grad(state.params)
    expected = jax.device_get(jax.tree.map(lambda p, g: p - 0.5 * g, state.params, grads))
    mesh = data_mesh(1)
    # The jitted step fit uses (cached per mesh and step function): the state is donated.
    step = train.make_train_step(parallel="jit", mesh=mesh, step_fn=train.seq2seq_train_step)
    new, metrics = step(state, b, jax.random.key(0))
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-5)
    for x, y in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert int(new.step) == 1
    _, history = train.fit(new, lambda _: b, 2, rng=jax.random.key(0), mesh=mesh, log_every=2, progress=False,
                           step_fn=train.seq2seq_train_step)
    assert history[-1]["step"] == 3 and history[-1]["loss"] < float(loss)
