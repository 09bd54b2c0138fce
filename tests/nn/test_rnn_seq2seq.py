"""RNN encoder-decoder (none / additive / multiplicative attention): the Seq2SeqModel contract."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attnjax.nn.contract import begin_token
from attnjax.nn.rnn_seq2seq import RNNSeq2Seq, RNNSeq2SeqConfig, shift_right

KINDS = ("none", "additive", "multiplicative")
B, S, T, V, C = 2, 6, 5, 4, 4


def _source(seed=0, batch=B, length=S):
    return jax.nn.one_hot(jax.random.randint(jax.random.key(seed), (batch, length), 0, V), V)


def _targets(seed=1):
    return shift_right(jax.random.randint(jax.random.key(seed), (B, T), 0, C), C)


@functools.lru_cache(maxsize=None)
def _model(attention, cell="gru", bidirectional=True, sow=False):
    return RNNSeq2Seq(RNNSeq2SeqConfig(cell=cell, hidden_size=12, embed_dim=6, attention=attention, attention_dim=8,
                                       bidirectional_encoder=bidirectional, sow_attention_weights=sow), C)


@functools.lru_cache(maxsize=None)
def _params(attention, cell="gru", bidirectional=True):
    """Initial params; ``sow_attention_weights`` does not change them, so both flags share these."""
    return {"params": jax.jit(_model(attention, cell, bidirectional).init)(
        jax.random.key(0), _source(), _targets())["params"]}


@functools.lru_cache(maxsize=None)
def _probe(attention):
    """One compiled function per kind for most tests: ``(params, source, target_inputs, source_lengths,
    cotangent [B, T, C]) -> (logits, d<logits, cotangent>/d params, d<logits, cotangent>/d source)``."""
    model = _model(attention)

    def probe(params, source, target_inputs, lengths, cotangent):
        def inner(p, s):
            logits = model.apply(p, s, target_inputs, lengths)
            return jnp.sum(logits * cotangent), logits

        (grad_params, grad_source), logits = jax.grad(inner, argnums=(0, 1), has_aux=True)(params, source)
        return logits, grad_params, grad_source

    return jax.jit(probe)


@functools.lru_cache(maxsize=None)
def _generate(attention, sow=False):
    return jax.jit(functools.partial(_model(attention, sow=sow).apply, method="generate"),
                   static_argnames=("max_length", "mutable"))


def adam_fit(loss_fn, params, steps, lr):
    """``steps`` full-batch Adam steps in one jitted scan; returns (params, loss after the last step)."""
    opt = optax.adam(lr)

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            updates, s = opt.update(jax.grad(loss_fn)(p), s, p)
            return (optax.apply_updates(p, updates), s), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
        return params, loss_fn(params)

    return run(params)


@pytest.mark.parametrize("attention", KINDS)
@pytest.mark.parametrize("cell,layers,bidirectional", [("gru", 1, True), ("lstm", 2, False), ("rnn", 2, True)])
def test_shapes(attention, cell, layers, bidirectional):
    model = RNNSeq2Seq(RNNSeq2SeqConfig(cell=cell, hidden_size=6, embed_dim=4, attention=attention,
                                        attention_dim=5, num_layers=layers, bidirectional_encoder=bidirectional), C)
    src, tgt = _source(), _targets()
    params = jax.eval_shape(model.init, jax.random.key(0), src, tgt)
    logits = jax.eval_shape(model.apply, params, src, tgt, jnp.array([6, 2]))
    tokens = jax.eval_shape(functools.partial(model.apply, method="generate", max_length=7), params, src)
    assert logits.shape == (B, T, C) and logits.dtype == jnp.float32
    assert tokens.shape == (B, 7) and tokens.dtype == jnp.int32
    assert params["params"]["decoder"]["embed"]["embedding"].shape == (C + 1, 4)  # begin token = row C
    assert ("attention_params" in params["params"]["decoder"]) == (attention != "none")


@pytest.mark.parametrize("attention", KINDS)
def test_padded_source_is_invisible(attention):
    """Padded content changes neither logits nor anything's gradient (exactly zero w.r.t. padded source
    positions), and a padded example decodes exactly like its source alone: the summary is read at the
    real end (forward at length-1, backward starting there) and attention never reaches padding."""
    params, probe = _params(attention), _probe(attention)
    src, tgt, lengths = _source(), _targets(), jnp.array([3, 6])
    cotangent = jax.random.normal(jax.random.key(5), (B, T, C))
    noisy = jnp.where(jnp.arange(S)[None, :, None] >= lengths[:, None, None], 9.0, src)
    logits, _, grad = probe(params, src, tgt, lengths, cotangent)
    noisy_logits, _, noisy_grad = probe(params, noisy, tgt, lengths, cotangent)
    np.testing.assert_allclose(noisy_logits, logits, rtol=1e-5, atol=1e-6)
    for g in (grad, noisy_grad):
        np.testing.assert_array_equal(g[0, 3:], 0.0)
        assert np.all(np.abs(g[0, :3]).sum(-1) > 0) and np.all(np.abs(g[1]).sum(-1) > 0)
    alone = jax.jit(_model(attention).apply)(params, src[:1, :3], tgt[:1])
    np.testing.assert_allclose(logits[:1], alone, rtol=1e-5, atol=1e-5)
    # Told that everything is real, the model does read the padded content.
    assert not np.allclose(probe(params, noisy, tgt, jnp.array([S, S]), cotangent)[0][0], logits[0])


@pytest.mark.parametrize("attention", KINDS)
def test_position_t_never_sees_later_target_inputs(attention):
    """Positions 0..2 read token ids {C, 0} only and positions 3, 4 ids 1..3: the gradient of the
    early logits w.r.t. the embedding rows 1..3 is exactly zero, that of the late logits is not, and
    changing the late inputs leaves the early logits unchanged."""
    params, probe = _params(attention), _probe(attention)
    tgt = jnp.array([[C, 0, 0, 1, 2], [C, 0, 0, 3, 1]], jnp.int32)
    lengths = jnp.array([S, S])
    early_only = jnp.zeros((B, T, C)).at[:, :3].set(1.0)

    def embedding_grad(targets, cotangent):
        logits, grads, _ = probe(params, _source(), targets, lengths, cotangent)
        return logits, np.asarray(grads["params"]["decoder"]["embed"]["embedding"])

    logits, early = embedding_grad(tgt, early_only)
    _, late = embedding_grad(tgt, 1.0 - early_only)
    np.testing.assert_array_equal(early[1:4], 0.0)
    assert np.all(np.abs(early[[0, C]]).sum(-1) > 0) and np.all(np.abs(late[[1, 2, 3]]).sum(-1) > 0)
    changed, _ = embedding_grad(tgt.at[:, 3:].set(0), early_only)
    np.testing.assert_array_equal(changed[:, :3], logits[:, :3])
    assert not np.allclose(changed[:, 3:], logits[:, 3:])


@pytest.mark.parametrize("attention", KINDS)
def test_generate_is_greedy_teacher_forcing_on_its_own_output(attention):
    params = _params(attention)
    lengths = jnp.array([4, 6])
    tokens = _generate(attention)(params, _source(), lengths, max_length=T)
    assert tokens.shape == (B, T) and tokens.dtype == jnp.int32
    logits, _, _ = _probe(attention)(params, _source(), shift_right(tokens, C), lengths, jnp.zeros((B, T, C)))
    np.testing.assert_array_equal(jnp.argmax(logits, -1), tokens)
    assert int(tokens.min()) >= 0 and int(tokens.max()) < C  # never the begin token
    assert len(np.unique(np.asarray(tokens))) > 1  # not a constant output, which would prove little


@pytest.mark.parametrize("attention", ["additive", "multiplicative"])
def test_sown_attention_weights_cover_real_source_tokens_only(attention):
    params, model = _params(attention), _model(attention, sow=True)
    src, tgt, lengths = _source(), _targets(), jnp.array([3, 6])
    out, state = jax.jit(functools.partial(model.apply, mutable="intermediates"))(params, src, tgt, lengths)
    (weights,) = state["intermediates"]["attention_weights"]
    assert weights.shape == (B, T, S) and weights.dtype == jnp.float32
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(weights[0, :, 3:], 0.0)
    assert np.all(weights[0, :, :3] > 0)
    # The flag changes nothing but the sowing: the same logits as the model without it.
    np.testing.assert_allclose(out, _probe(attention)(params, src, tgt, lengths, jnp.zeros((B, T, C)))[0], rtol=1e-6)
    # Off by default: nothing is sown (checked by tracing alone, no compile).
    _, off = jax.eval_shape(functools.partial(_model(attention).apply, mutable="intermediates"), params, src, tgt)
    assert "intermediates" not in off


def test_generate_sows_attention_weights_per_produced_token():
    _, state = _generate("additive", sow=True)(_params("additive"), _source(), jnp.array([3, 6]), max_length=3,
                                                mutable="intermediates")
    (weights,) = state["intermediates"]["attention_weights"]
    assert weights.shape == (B, 3, S)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(weights[0, :, 3:], 0.0)


def test_one_trace_per_shape_under_jit():
    model, params = _model("none"), _params("none")

    @jax.jit
    @chex.assert_max_traces(n=2)
    def logits(params, src, tgt, lengths):
        return model.apply(params, src, tgt, lengths)

    chex.clear_trace_counter()
    for seed in range(3):  # new values, same shapes: one trace
        logits(params, _source(seed), _targets(seed), jnp.array([seed + 1, 6]))
    logits(params, _source(0, length=4), _targets(), jnp.array([4, 2]))  # a new source length: the second
    with pytest.raises(AssertionError, match="traced > 2 times"):
        logits(params, _source(0, length=5), _targets(), jnp.array([4, 2]))


@pytest.mark.parametrize("attention,bidirectional,cell", [("none", True, "gru"), ("additive", True, "gru"),
                                                          ("multiplicative", False, "lstm")])
def test_learns_to_reverse_short_sequences(attention, bidirectional, cell):
    """Reverse 3-4 token sequences (vocab 4): teacher-forced cross-entropy < 0.15 after 80 Adam steps."""
    N, L = 64, 4
    model, params = _model(attention, cell, bidirectional), _params(attention, cell, bidirectional)
    tokens = jax.random.randint(jax.random.key(7), (N, L), 0, C)
    lengths = 3 + jnp.arange(N) % 2
    real = jnp.arange(L)[None, :] < lengths[:, None]
    # reversed real part, then zeros in the padding (scored only on real positions)
    targets = jnp.take_along_axis(tokens, jnp.clip(lengths[:, None] - 1 - jnp.arange(L)[None, :], 0, L - 1), 1)
    src = jax.nn.one_hot(tokens, V)
    dec_in = shift_right(targets, C)

    def loss(p):
        ce = optax.softmax_cross_entropy_with_integer_labels(model.apply(p, src, dec_in, lengths), targets)
        return jnp.sum(ce * real) / jnp.sum(real)

    _, final = adam_fit(loss, params, steps=80, lr=0.03)
    assert final < 0.15, final


@pytest.mark.parametrize("kwargs,match", [
    (dict(attention="dot_product"), "attention must be one of .*got 'dot_product'"),
    (dict(cell="lstmx"), r"cell must be one of \['gru', 'lstm', 'rnn'\], got 'lstmx'"),
    (dict(hidden_size=0), "hidden_size must be an int >= 1, got 0"),
    (dict(attention_dim=-2), "attention_dim must be an int >= 1, got -2"),
    (dict(bidirectional_encoder=1), "bidirectional_encoder must be a bool, got 1"),
    (dict(dropout_rate=-0.1), r"dropout_rate must be in \[0, 1\), got -0.1"),
    (dict(sow_attention_weights=True), "sow_attention_weights=True needs attention"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RNNSeq2SeqConfig(**kwargs)


def test_input_errors():
    model, params = _model("none"), _params("none")
    src, tgt = _source(), _targets()
    cases = [
        ((src[..., 0], tgt), ValueError, r"source must have rank 3 \[B, S, V\], got shape \(2, 6\)"),
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
