"""RNN encoder-decoder (none / additive / multiplicative attention): the Seq2SeqModel contract.

Compiles dominate the time, so each attention kind compiles one probe (loss, logits, gradients and
an Adam step on one fixed batch of the reversal task) that serves the padding, causality and
training tests; ``generate`` is compiled once per kind too.
"""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn.contract import Seq2SeqModel, begin_token
from attnjax.nn.execution import Execution
from attnjax.nn.rnn_seq2seq import RNNSeq2Seq, RNNSeq2SeqConfig, shift_right
from tests.nn.training import JIT, fit, make_probe, probe_once

KINDS = ("none", "additive", "multiplicative")
# Cell and encoder per kind: the Luong model also covers the LSTM carry and a unidirectional encoder.
SETUP = {"none": ("gru", True), "additive": ("gru", True), "multiplicative": ("lstm", False)}
B, L, V, C = 32, 5, 4, 4  # batch, source = target length, source vocab, output classes


def _reversal_batch():
    """Sources of 3-5 tokens padded to ``L``; targets are the real tokens reversed (padding scores 0)."""
    tokens = jax.random.randint(jax.random.key(7), (B, L), 0, V)
    lengths = 3 + jnp.arange(B) % 3
    mask = jnp.arange(L)[None, :] < lengths[:, None]
    targets = jnp.take_along_axis(tokens, jnp.clip(lengths[:, None] - 1 - jnp.arange(L)[None, :], 0, L - 1), 1)
    targets = jnp.where(mask, targets, 0)
    return dict(source=jax.nn.one_hot(tokens, V), lengths=lengths, targets=targets, mask=mask.astype(jnp.float32),
                decoder_inputs=shift_right(targets, C))


DATA = _reversal_batch()
PADDED = DATA["mask"] == 0  # [B, L] source positions >= lengths (source and target lengths are equal here)


@functools.lru_cache(maxsize=None)
def _model(attention, sow=False):
    cell, bidirectional = SETUP[attention]
    return RNNSeq2Seq(RNNSeq2SeqConfig(cell=cell, hidden_size=16, embed_dim=8, attention=attention, attention_dim=8,
                                       bidirectional_encoder=bidirectional), C,
                      Execution(sow_attention_weights=sow))


@functools.lru_cache(maxsize=None)
def _params(attention):
    """Initial params; sowing the attention weights does not change them, so both settings share these."""
    variables = JIT(_model(attention).init)(jax.random.key(0), DATA["source"], DATA["decoder_inputs"])
    return {"params": variables["params"]}


@functools.lru_cache(maxsize=None)
def _probe(attention):
    """The shared probe; its ``extra`` argument is ``(decoder_inputs, source_lengths)``."""
    model = _model(attention)
    return make_probe(lambda p, source, extra: model.apply(p, source, *extra), lr=0.03)


def _probe_data(attention, params=None, source=None, decoder_inputs=None, lengths=None, loss_mask=None):
    """The probe's outputs on the reversal batch, with any argument replaced."""
    pick = lambda x, default: DATA[default] if x is None else x  # noqa: E731
    extra = (pick(decoder_inputs, "decoder_inputs"), pick(lengths, "lengths"))
    return probe_once(_probe(attention), _params(attention) if params is None else params, pick(source, "source"),
                      extra, DATA["targets"], pick(loss_mask, "mask"))


STEPS, LOSS_BOUND = 80, 0.15


@functools.lru_cache(maxsize=None)
def _trained(attention):
    """(params, losses) after ``STEPS`` full-batch Adam steps (lr 0.03) on the reversal batch."""
    batch = (DATA["source"], (DATA["decoder_inputs"], DATA["lengths"]), DATA["targets"], DATA["mask"])
    return fit(_probe(attention), _params(attention), batch, steps=STEPS)


@functools.lru_cache(maxsize=None)
def _generate(attention, sow=False):
    return JIT(functools.partial(_model(attention, sow=sow).apply, method="generate"),
               static_argnames=("max_length", "mutable"))


@pytest.mark.parametrize("attention,cell,layers,bidirectional", [
    ("none", "lstm", 2, True), ("additive", "rnn", 2, False), ("multiplicative", "gru", 2, True)])
def test_shapes(attention, cell, layers, bidirectional):
    """Stacked layers and the cells the probed models do not use (those are gru/bi and lstm/uni)."""
    model = RNNSeq2Seq(RNNSeq2SeqConfig(cell=cell, hidden_size=6, embed_dim=4, attention=attention,
                                        attention_dim=5, num_layers=layers, bidirectional_encoder=bidirectional), C)
    src, tgt = DATA["source"][:2, :4], DATA["decoder_inputs"][:2, :3]
    params = jax.eval_shape(model.init, jax.random.key(0), src, tgt)
    logits = jax.eval_shape(model.apply, params, src, tgt, jnp.array([4, 2]))
    tokens = jax.eval_shape(functools.partial(model.apply, method="generate", max_length=7), params, src)
    assert logits.shape == (2, 3, C) and logits.dtype == jnp.float32
    assert tokens.shape == (2, 7) and tokens.dtype == jnp.int32
    assert params["params"]["decoder"]["embed"]["embedding"].shape == (C + 1, 4)  # begin token = row C
    assert ("attention_params" in params["params"]["decoder"]) == (attention != "none")
    assert ("backward_layers_1" in params["params"]) == (bidirectional and layers == 2)
    assert isinstance(model, Seq2SeqModel)


def test_dropout_only_when_training():
    """train=True draws a fresh dropout mask from the 'dropout' rng stream; the probe runs train=False."""
    model, params = RNNSeq2Seq(dataclasses.replace(_model("none").config, dropout_rate=0.5), C), _params("none")
    apply = JIT(lambda rng: model.apply(params, DATA["source"], DATA["decoder_inputs"], DATA["lengths"], train=True,
                                        rngs={"dropout": rng}))
    first, second = apply(jax.random.key(1)), apply(jax.random.key(2))
    assert not np.allclose(first, second) and not np.allclose(first, _probe_data("none")["logits"])


@pytest.mark.parametrize("attention", KINDS)
def test_padded_source_is_invisible(attention):
    """Padded content changes neither the logits nor any gradient, the gradient w.r.t. padded source
    positions is exactly zero, and a padded example decodes exactly like its source alone: the summary
    is read at the real end (forward at length-1, backward starting there) and attention never
    reaches padding."""
    noisy = jnp.where(PADDED[..., None], 9.0, DATA["source"])
    out, noisy_out = _probe_data(attention), _probe_data(attention, source=noisy)
    logits, grad, noisy_grad = out["logits"], out["input_grads"], noisy_out["input_grads"]
    np.testing.assert_allclose(noisy_out["logits"], logits, rtol=1e-5, atol=1e-6)
    for g in (grad, noisy_grad):
        np.testing.assert_array_equal(g[PADDED], 0.0)
        assert np.all(np.abs(g[~PADDED]).sum(-1) > 0)
    assert int(DATA["lengths"][0]) == 3
    alone = JIT(_model(attention).apply)(_params(attention), DATA["source"][:1, :3], DATA["decoder_inputs"][:1])
    np.testing.assert_allclose(logits[:1], alone, rtol=1e-5, atol=1e-5)
    # Told that everything is real, the model does read the padded content.
    everything = jnp.full((B,), L)
    assert not np.allclose(_probe_data(attention, source=noisy, lengths=everything)["logits"][0], logits[0])


@pytest.mark.parametrize("attention", KINDS)
def test_position_t_never_sees_later_target_inputs(attention):
    """Decoder inputs 0..2 are ids {C, 0} and inputs 3, 4 ids 1..3: the loss on positions 0..2 has
    exactly zero gradient w.r.t. the embedding rows 1..3, the loss on positions 3, 4 does not, and
    changing the later inputs leaves the early logits unchanged."""
    late_ids = 1 + jax.random.randint(jax.random.key(3), (B, 2), 0, 3)
    dec_in = jnp.concatenate([jnp.full((B, 1), C), jnp.zeros((B, 2), jnp.int32), late_ids], axis=1)
    early = jnp.broadcast_to(jnp.arange(L) < 3, (B, L)).astype(jnp.float32)

    def embedding_grad(decoder_inputs, loss_mask):
        out = _probe_data(attention, decoder_inputs=decoder_inputs, loss_mask=loss_mask)
        return out["logits"], np.asarray(out["grads"]["params"]["decoder"]["embed"]["embedding"])

    logits, early_grad = embedding_grad(dec_in, early)
    _, late_grad = embedding_grad(dec_in, 1.0 - early)
    np.testing.assert_array_equal(early_grad[1:4], 0.0)
    assert np.all(np.abs(early_grad[[0, C]]).sum(-1) > 0) and np.all(np.abs(late_grad[1:4]).sum(-1) > 0)
    changed, _ = embedding_grad(dec_in.at[:, 3:].set(0), early)
    np.testing.assert_array_equal(changed[:, :3], logits[:, :3])
    assert not np.allclose(changed[:, 3:], logits[:, 3:])


@pytest.mark.parametrize("attention", KINDS)
def test_learns_to_reverse_short_sequences(attention):
    """Reversal of 3-5 tokens (vocab 4, 32 examples): masked cross-entropy below LOSS_BOUND = 0.15
    after STEPS = 80 full-batch Adam steps (lr 0.03), from about log 4 = 1.39 at the start."""
    _, losses = _trained(attention)
    assert losses[0] > 1.0 and losses[-1] < LOSS_BOUND, (losses[0], losses[-1])


@pytest.mark.parametrize("attention", KINDS)
def test_generate_is_greedy_teacher_forcing_on_its_own_output(attention):
    """On the trained model: generate's tokens are the argmax of the teacher-forced logits on
    ``[begin, tokens[:-1]]``, and they are mostly the reversed sources."""
    params, _ = _trained(attention)
    tokens = _generate(attention)(params, DATA["source"], DATA["lengths"], max_length=L)
    assert tokens.shape == (B, L) and tokens.dtype == jnp.int32
    logits = _probe_data(attention, params=params, decoder_inputs=shift_right(tokens, C))["logits"]
    np.testing.assert_array_equal(jnp.argmax(logits, -1), tokens)
    accuracy = jnp.sum((tokens == DATA["targets"]) * DATA["mask"]) / jnp.sum(DATA["mask"])
    assert accuracy > 0.9, accuracy


@pytest.mark.parametrize("attention", ["additive", "multiplicative"])
def test_sown_attention_weights_cover_real_source_tokens_only(attention):
    params, model = _params(attention), _model(attention, sow=True)
    args = (DATA["source"], DATA["decoder_inputs"], DATA["lengths"])
    out, state = JIT(functools.partial(model.apply, mutable="intermediates"))(params, *args)
    (weights,) = state["intermediates"]["attention_weights"]
    assert weights.shape == (B, L, L) and weights.dtype == jnp.float32
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(weights * PADDED[:, None, :], 0.0)
    assert np.all(weights[~jnp.broadcast_to(PADDED[:, None, :], weights.shape)] > 0)
    # The flag changes nothing but the sowing: the same logits as the model without it.
    np.testing.assert_allclose(out, _probe_data(attention)["logits"], rtol=1e-5, atol=1e-6)
    # Off by default: nothing is sown (checked by tracing alone, no compile).
    _, off = jax.eval_shape(functools.partial(_model(attention).apply, mutable="intermediates"), params, *args)
    assert "intermediates" not in off


def test_generate_sows_attention_weights_per_produced_token():
    _, state = _generate("additive", sow=True)(_params("additive"), DATA["source"], DATA["lengths"], max_length=3,
                                                mutable="intermediates")
    (weights,) = state["intermediates"]["attention_weights"]
    assert weights.shape == (B, 3, L)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(weights * PADDED[:, None, :], 0.0)


def test_one_trace_per_shape_under_jit():
    model, params = _model("none"), _params("none")

    @JIT
    @chex.assert_max_traces(n=2)
    def logits(params, src, tgt, lengths):
        return model.apply(params, src, tgt, lengths)

    chex.clear_trace_counter()
    tgt = DATA["decoder_inputs"][:2, :3]
    for seed in range(3):  # new values, same shapes: one trace
        logits(params, DATA["source"][2 * seed:2 * seed + 2, :4], tgt, jnp.array([seed + 1, 4]))
    logits(params, DATA["source"][:2, :3], tgt, jnp.array([3, 2]))  # a new source length: the second
    with pytest.raises(AssertionError, match="traced > 2 times"):
        logits(params, DATA["source"][:2, :2], tgt, jnp.array([2, 2]))


@pytest.mark.parametrize("kwargs,match", [
    (dict(attention="dot_product"), "attention must be one of .*got 'dot_product'"),
    (dict(cell="lstmx"), r"cell must be one of \['gru', 'lstm', 'rnn'\], got 'lstmx'"),
    (dict(hidden_size=0), "hidden_size must be an int >= 1, got 0"),
    (dict(attention_dim=-2), "attention_dim must be an int >= 1, got -2"),
    (dict(bidirectional_encoder=1), "bidirectional_encoder must be a bool, got 1"),
    (dict(dropout_rate=-0.1), r"dropout_rate must be in \[0, 1\), got -0.1"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RNNSeq2SeqConfig(**kwargs)


@pytest.mark.parametrize("execution,match", [
    (Execution(sow_attention_weights=True), "sow_attention_weights=True needs attention"),
    (Execution(dtype="bfloat16"), "its execution may set only sow_attention_weights"),
])
def test_execution_errors(execution, match):
    model = RNNSeq2Seq(RNNSeq2SeqConfig(attention="none"), C, execution)
    with pytest.raises(ValueError, match=match):
        model.init(jax.random.key(0), DATA["source"], DATA["decoder_inputs"])


def test_input_errors():
    model, params = _model("none"), _params("none")
    src, tgt = DATA["source"][:2, :4], DATA["decoder_inputs"][:2]
    cases = [
        ((src[..., 0], tgt), ValueError, r"source must have rank 3 \[B, S, V\], got shape \(2, 4\)"),
        ((src.astype(jnp.int32), tgt), TypeError, "source must be floating"),
        ((src, tgt[..., None]), ValueError, r"target_inputs must have rank 2 \[B, T\], got shape \(2, 5, 1\)"),
        ((src, tgt.astype(jnp.float32)), TypeError, "target_inputs must be integer token ids"),
        ((src[:1], tgt), ValueError, "source and target_inputs must share the batch size"),
        ((src, tgt, jnp.array([1, 2, 3])), ValueError, r"source_lengths must have shape \[B\] = \(2,\), got \(3,\)"),
    ]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            model.apply(params, *args)
    with pytest.raises(ValueError, match="max_length must be an int >= 1, got 0"):
        model.apply(params, src, method="generate", max_length=0)
    assert begin_token(C) == C
