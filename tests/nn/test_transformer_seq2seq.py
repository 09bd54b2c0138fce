"""TransformerSeq2Seq: shapes, causal decoder, source padding never seen, greedy generation, training."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn.contract import Seq2SeqModel, begin_token
from attnjax.nn.execution import Execution
from attnjax.nn.transformer_seq2seq import TransformerSeq2Seq, TransformerSeq2SeqConfig
from tests.nn.training import adam_losses

B, S, T, V, C = 2, 7, 5, 4, 3
SOURCE_LENGTHS = jnp.array([S, 4], jnp.int32)
SMALL = dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=16, max_len=64)


def _source(seed=0, length=S):
    return jax.nn.one_hot(jax.random.randint(jax.random.key(seed), (B, length), 0, V), V)


def _targets(seed=1):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, C + 1)  # may hold the begin token C


@functools.lru_cache(maxsize=None)
def _model(output_size=C, execution=Execution(), **fields):
    return TransformerSeq2Seq(config=TransformerSeq2SeqConfig(**{**SMALL, **fields}), output_size=output_size,
                              execution=execution)


@functools.lru_cache(maxsize=None)
def _params(**fields):
    return _model(**fields).init(jax.random.key(0), _source(), _targets())


def test_shapes_dtypes_and_the_contract():
    model, params = _model(), _params()
    assert isinstance(model, Seq2SeqModel)
    out = model.apply(params, _source(), _targets(), SOURCE_LENGTHS)
    assert out.shape == (B, T, C) and out.dtype == jnp.float32
    with pytest.raises(ValueError, match=r"target_inputs must be an int array \[B, T\]"):
        model.apply(params, _source(), _targets().astype(jnp.float32))
    with pytest.raises(ValueError, match=r"source must have rank 3 \[B, S, V\]"):
        model.apply(params, _source()[..., 0], _targets())
    with pytest.raises(ValueError, match="pooling must be None, got 'cls'"):
        TransformerSeq2SeqConfig(pooling="cls")


def test_decoder_never_sees_later_targets_nor_source_padding():
    """Exactly zero gradient from later target positions and from padded source positions, and the
    sown attention weights are zero there and sum to 1 over what is visible."""
    model, params, source = _model(), _params(), _source()

    def logits(m, source, embedded_targets):
        memory = m.encode(source, SOURCE_LENGTHS)
        return m.logits(m.decoder(embedded_targets, None, False, memory=memory, memory_lengths=SOURCE_LENGTHS))

    embedded = jax.random.normal(jax.random.key(2), (B, T, 16))
    # d sum_b(logits[b, t]) / d inputs for every t: one compiled Jacobian, summed over the output batch.
    jacobians = jax.jit(jax.jacrev(lambda s, e: model.apply(params, s, e, method=logits).sum((0, 2)),
                                   argnums=(0, 1)))(source, embedded)
    for t in range(T):
        d_source, d_targets = jacobians[0][t], jacobians[1][t]
        np.testing.assert_array_equal(d_targets[:, t + 1:], 0.0)
        assert np.all(np.abs(d_targets[:, : t + 1]).sum(-1) > 0), t  # every earlier target is seen
        np.testing.assert_array_equal(d_source[1, 4:], 0.0)
        assert np.all(np.abs(d_source[1, :4]).sum(-1) > 0) and np.all(np.abs(d_source[0]).sum(-1) > 0), t
    # The same through the token path: later tokens never change earlier logits.
    changed = _targets().at[:, 3:].set(0)
    np.testing.assert_allclose(model.apply(params, source, changed)[:, :3],
                               model.apply(params, source, _targets())[:, :3], atol=1e-6)
    sowing = _model(execution=Execution(sow_attention_weights=True))
    _, state = sowing.apply(params, source, _targets(), SOURCE_LENGTHS, mutable=["intermediates"])
    block = state["intermediates"]["decoder"]["block_0"]
    cross = block["cross_attention"]["attention_weights"][0]  # [B, N, T, S]
    assert cross.shape == (B, 2, T, S)
    np.testing.assert_allclose(cross[1, ..., :4].sum(-1), 1.0, rtol=1e-5)  # over the real source tokens
    np.testing.assert_array_equal(cross[1, ..., 4:], 0.0)
    np.testing.assert_allclose(cross[0].sum(-1), 1.0, rtol=1e-5)
    causal_self = block["attention"]["attention_weights"][0]  # [B, N, T, T], lower triangular
    np.testing.assert_array_equal(np.triu(np.ones((T, T)), 1) * causal_self, 0.0)
    encoder = state["intermediates"]["encoder"]["block_0"]["attention"]["attention_weights"][0]
    np.testing.assert_array_equal(encoder[1, ..., 4:], 0.0)


def test_generate_is_greedy_teacher_forcing_on_its_own_predictions_with_one_trace():
    model, params, source = _model(), _params(), _source()
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def generate(params, source, lengths):
        return model.apply(params, source, lengths, max_length=T, method=model.generate)

    tokens = generate(params, source, SOURCE_LENGTHS)
    generate(params, _source(seed=5), jnp.array([3, 7]))  # same shapes: no retrace
    assert tokens.shape == (B, T) and tokens.dtype == jnp.int32
    inputs = jnp.concatenate([jnp.full((B, 1), begin_token(C)), tokens[:, :-1]], axis=1)
    forced = model.apply(params, source, inputs, SOURCE_LENGTHS)
    np.testing.assert_array_equal(jnp.argmax(forced, -1), tokens)
    with pytest.raises(ValueError, match="max_length must be an int >= 1, got 0"):
        model.apply(params, source, max_length=0, method=model.generate)


@pytest.mark.slow
def test_trains_below_stated_loss():
    """Copy the source (4 symbols, length 5): teacher-forced cross-entropy falls from ~ln 4 = 1.39 to
    < 0.1 in 80 Adam steps (generation equals teacher forcing on its own outputs, tested above)."""
    model = _model(output_size=V)
    ids = jax.random.randint(jax.random.key(11), (32, T), 0, V)
    source = jax.nn.one_hot(ids, V)
    inputs = jnp.concatenate([jnp.full((32, 1), begin_token(V)), ids[:, :-1]], axis=1)
    params = model.init(jax.random.key(0), source, inputs)["params"]
    losses = adam_losses(model.apply, params, (source, inputs), ids, steps=80)
    assert losses[0] > 1.0 and losses[-1] < 0.1, losses[::10]
