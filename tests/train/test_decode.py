"""Greedy decoding on the autoregressive layout (attnjax.train.decode): the key/value cache equals recomputing the
sequence at every step, token for token and logit for logit, for every positional encoding and mechanism the
study runs and the recurrent controls; causal masking by gradient; the loss only on answer and END; the scores
on a hand-made case; one compiled program per shape."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attnjax.data import autoregressive as ar
from attnjax.data import get_task
from attnjax.nn import build_model
from attnjax.nn.mixer_lm import BaseConvConfig, BaseConvLM
from attnjax.nn.transformer_config import TransformerConfig
from attnjax.nn.transformer_lm import TransformerLM
from attnjax.train import TrainState, decode
from attnjax.train.seq2seq_steps import reduce_seq2seq_metrics
from attnjax.train.steps import eval_step, masked_loss_and_correct

B, V, STEPS = 2, 6, 4
PROMPTS = np.array([5, 3], np.int32)  # one batch, two prompt lengths: the longer row reads its own prompt on
SMALL = dict(num_layers=1, d_model=8, num_heads=2, mlp_dim=8, max_len=32)  # two layers: tests/nn/test_kv_cache.py


def _batch():
    tokens = np.random.default_rng(0).integers(0, V, (B, PROMPTS.max() + STEPS - 1))
    return {"inputs": jax.nn.one_hot(tokens, V), "prompt_lengths": PROMPTS}


def random_params(model, inputs, scale=0.5, seed=1):
    """Every parameter drawn N(0, scale^2) (no zero-initialized table, CoPE's or FIRE's sign weights, hides a bug),
    with NumPy: nothing to compile."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), inputs)["params"]
    draw = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * draw.standard_normal(s.shape), s.dtype), shapes)


LM_CASES = {  # name: TransformerConfig fields; every encoding and mechanism at least once
    "nope+stick_breaking": dict(positional="nope", attention="stick_breaking"),
    "sinusoidal+ssmax": dict(positional="sinusoidal", attention="ssmax"),
    "randomized_learned_consecutive+fire": dict(positional="learned", randomized_positions=True,
                                                randomized_eval="consecutive", attention="fire"),
    "rope+forgetting+mqa": dict(positional="rope", attention="forgetting", num_kv_heads=1),
    "alibi_bias+cope": dict(positional="alibi", attention="cope"),
    "t5_bias+sigmoid_with_bias": dict(positional="t5", attention={"name": "sigmoid",
                                                                  "options": {"sigmoid_bias": -1.0}}),
    "randomized_rope": dict(positional="rope", randomized_positions=True),
    "randomized_alibi_hook": dict(positional="alibi", randomized_positions=True),  # the hook at explicit positions
}


def _model(case):
    if case in ("lstm", "gru"):
        return build_model(case, V, dict(hidden_size=8)), None
    fields = LM_CASES[case]
    random_eval = fields.get("randomized_positions") and fields.get("randomized_eval", "random") == "random"
    return TransformerLM(TransformerConfig(**SMALL, **fields), V), jax.random.key(7) if random_eval else None


@pytest.mark.parametrize("case", [*LM_CASES, "lstm", "gru"])
def test_cached_decoding_equals_recomputing_every_step(case):
    """Same tokens and the same logits (float32 tolerance) with the cache as with a forward pass over the whole
    sequence at every step, with prompts of two lengths in one batch; randomized encodings read the same
    positions (one subset for the decoded sequence, from one key) either way."""
    model, rng = _model(case)
    batch = _batch()
    params = random_params(model, batch["inputs"])
    cached, cached_logits = decode.greedy_decode(model, params, batch, STEPS, rng=rng, return_logits=True)
    full, full_logits = decode.greedy_decode(model, params, batch, STEPS, rng=rng, cached=False, return_logits=True)
    assert cached.shape == (B, STEPS) and cached_logits.shape == (B, STEPS, V)
    np.testing.assert_array_equal(cached, full)
    np.testing.assert_allclose(cached_logits, full_logits, atol=2e-5, rtol=2e-5)
    assert np.ptp(np.asarray(cached_logits), axis=1).max() > 0.1  # the context moves the logits


@pytest.mark.parametrize("fields", [dict(positional="nope"), dict(positional="nope", attention="stick_breaking"),
                                    dict(positional="alibi", attention="forgetting"),
                                    dict(positional="t5", attention="cope")])
def test_logits_depend_on_earlier_tokens_only(fields):
    """Causal masking by gradient on an autoregressive batch: d logits[t] / d inputs[t + 1:] == 0, and every
    earlier token matters."""
    model = TransformerLM(TransformerConfig(**SMALL, **fields), V)
    batch = ar.length_batch(get_task("reverse_string"), np.random.default_rng(0), 1, 3)
    x = jnp.asarray(batch["inputs"])
    params = random_params(model, x)
    cot = jnp.asarray(np.random.default_rng(2).standard_normal(V), jnp.float32)  # a random direction of logits[t]
    grad = jax.jit(jax.grad(lambda x, t: jnp.vdot(model.apply({"params": params}, x)[0, t], cot)))
    L = x.shape[1]
    influence = np.stack([np.abs(np.asarray(grad(x, t)))[0].sum(-1) for t in range(L)])  # [t, s]
    future = np.triu(np.ones((L, L), bool), k=1)
    assert influence[future].max() == 0.0 and influence[~future].min() > 0


def test_loss_is_on_the_answer_and_end_only():
    """The train step's loss (eval_step, masked_loss_and_correct) on an autoregressive batch: a gradient at the
    answer and END positions only, unchanged by any logit of the prompt; its value is the mean cross-entropy of
    the answer and END tokens; accuracy is over the answer tokens only."""
    task = get_task("binary_addition")
    batch = ar.make_batch(task, np.random.default_rng(1), np.array([2, 4, 3]), ar.padded_length(task, 4))
    logits = jax.random.normal(jax.random.key(0), batch["targets"].shape + (ar.vocab_size(task),))

    def loss(z):
        return masked_loss_and_correct(z, batch["targets"], batch["loss_mask"], batch["accuracy_mask"])

    grad = jax.jit(jax.grad(lambda z: loss(z)[0]))(logits)
    has_grad = np.abs(np.asarray(grad)).sum(-1) > 0
    np.testing.assert_array_equal(has_grad, batch["loss_mask"] > 0)
    for row in range(3):  # exactly the answer and END: positions prompt - 1 .. seq_length - 1
        np.testing.assert_array_equal(np.nonzero(has_grad[row])[0],
                                      np.arange(batch["prompt_lengths"][row] - 1, batch["seq_lengths"][row]))
    prompt = (batch["loss_mask"] == 0)[..., None]
    assert loss(jnp.where(prompt, 100.0 * logits, logits))[0] == loss(logits)[0]
    # The train step's forward pass on a model whose logits are ``logits``.
    state = TrainState.create(apply_fn=lambda variables, x, **kw: logits + 0 * variables["params"]["w"],
                              params={"w": jnp.zeros(())}, tx=optax.sgd(0.1))
    metrics = jax.jit(eval_step)(state, {k: jnp.asarray(v) for k, v in batch.items()})
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    np.testing.assert_allclose(metrics["loss"], np.sum(xent * batch["loss_mask"]) / batch["loss_mask"].sum(), rtol=1e-5)
    assert metrics["count"] == batch["accuracy_mask"].sum() < batch["loss_mask"].sum()  # END is not scored


class Successor(nn.Module):
    """Predicts ``token + 1 (mod V)`` after every token; stateless, so it decodes with or without a cache."""

    @nn.compact
    def __call__(self, inputs, seq_lengths=None, train=False, decode=False):
        return 10.0 * jax.nn.one_hot((jnp.argmax(inputs, -1) + 1) % V, V)


@pytest.mark.parametrize("cached", [True, False])
def test_scores_on_a_hand_made_batch(cached):
    """Row 0 is right throughout; row 1 gets its first answer token and misses the second both ways; row 2
    (a prompt of one token) misses its first answer token, so teacher forcing gets the next two right while
    free running, continuing from its own mistake, gets none."""
    tokens = np.array([[0, 1, 2, 3, 4],    # prompt 0 1 | answer 2 3 | END 4
                       [3, 0, 1, 5, 2],    # prompt 3 0 | answer 1 5 | END 2
                       [0, 2, 3, 4, 5]])   # prompt 0   | answer 2 3 4 | END 5
    prompts, seq = np.array([2, 2, 1]), np.array([4, 4, 4])
    P = tokens.shape[1] - 1
    pos = np.arange(P)[None, :]
    loss_mask = (pos >= prompts[:, None] - 1) & (pos < seq[:, None])
    accuracy_mask = loss_mask & (pos < seq[:, None] - 1)  # the answer, not END
    batch = {"inputs": jax.nn.one_hot(tokens[:, :-1], V), "targets": np.where(loss_mask, tokens[:, 1:], 0),
             "loss_mask": loss_mask.astype(np.float32), "accuracy_mask": accuracy_mask.astype(np.float32),
             "seq_lengths": seq.astype(np.int32), "prompt_lengths": prompts.astype(np.int32)}
    generated = decode.greedy_decode(Successor(), {}, batch, cached=cached)
    np.testing.assert_array_equal(generated, [[2, 3, 4, 5], [1, 2, 3, 4], [1, 2, 3, 4]])
    sums = decode.decoder_eval_step(Successor(), {}, batch, cached=cached)
    assert {k: float(sums[k]) for k in ("correct", "greedy_correct", "count", "sequences", "sequences_correct",
                                        "greedy_sequences_correct")} == {
        "correct": 2 + 1 + 2, "greedy_correct": 2 + 1 + 0, "count": 7, "sequences": 3, "sequences_correct": 1,
        "greedy_sequences_correct": 1}
    rows = decode.decoder_eval_rows(Successor(), {}, batch, cached=cached)  # the same sums, row by row
    assert {k: np.asarray(rows[k]).tolist() for k in ("correct", "greedy_correct", "count", "sequences_correct",
                                                      "greedy_sequences_correct")} == {
        "correct": [2, 1, 2], "greedy_correct": [2, 1, 0], "count": [2, 2, 3], "sequences_correct": [1, 0, 0],
        "greedy_sequences_correct": [1, 0, 0]}
    for k in decode.SUM_KEYS:
        np.testing.assert_allclose(np.sum(rows[k]), sums[k], rtol=1e-6, err_msg=k)
    scores = reduce_seq2seq_metrics([sums])
    assert scores["token_accuracy"] == 5 / 7 and scores["greedy_token_accuracy"] == 3 / 7
    assert scores["sequence_accuracy"] == scores["greedy_sequence_accuracy"] == 1 / 3


def test_one_compiled_program_per_shape_and_clear_errors():
    model, _ = _model("sinusoidal+ssmax")
    batch = _batch()
    params = random_params(model, batch["inputs"])
    decode.greedy_decode(model, params, batch, STEPS)
    before = decode.greedy_jit._cache_size()
    other = {**batch, "inputs": batch["inputs"][::-1]}
    decode.greedy_decode(model, params, other, STEPS)
    assert decode.greedy_jit._cache_size() == before
    with pytest.raises(ValueError, match="prompt_lengths is traced"):
        jax.jit(lambda p: decode.greedy_decode(model, params, {**batch, "prompt_lengths": p}))(batch["prompt_lengths"])
    with pytest.raises(ValueError, match=r"prompt_lengths must be in 1\.\.8"):
        decode.greedy_decode(model, params, {**batch, "prompt_lengths": np.array([0, 3])})
    with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
        decode.greedy_decode(model, params, batch, 0)
    with pytest.raises(ValueError, match="BaseConvLM has no decode mode"):
        decode.greedy_decode(BaseConvLM(BaseConvConfig(d_model=8), V), {}, batch)
    randomized, rng = _model("randomized_rope")
    with pytest.raises(ValueError, match="greedy_decode got rng=None"):
        decode.greedy_decode(randomized, random_params(randomized, batch["inputs"]), batch, STEPS)
