"""apply_with_attention_weights and greedy_attention_weights: a trained model's attention weights per layer, read
back from one call (the same parameters, no second model)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn import (Execution, apply_with_attention_weights, build_model, greedy_attention_weights,
                        sown_attention_weights)

B, L, V = 2, 5, 4
SMALL = dict(num_layers=3, d_model=8, num_heads=2, mlp_dim=8)


def _inputs():
    return jax.nn.one_hot(jax.random.randint(jax.random.key(1), (B, L), 0, V), V)


def test_same_output_and_weights_as_a_model_built_to_sow():
    model = build_model("transformer", V, SMALL, Execution(dtype="bfloat16"))
    params = model.init(jax.random.key(0), _inputs())["params"]
    output, weights = apply_with_attention_weights(model, params, _inputs(), train=False)
    sowing = build_model("transformer", V, SMALL, Execution(dtype="bfloat16", sow_attention_weights=True))
    expected, sown = sowing.apply({"params": params}, _inputs(), train=False, mutable=["intermediates"])
    np.testing.assert_array_equal(output, model.apply({"params": params}, _inputs(), train=False))
    np.testing.assert_array_equal(output, expected)
    assert len(weights) == 3 and all(w.shape == (B, 2, L, L) for w in weights)
    for w, e in zip(weights, sown_attention_weights(sown["intermediates"]), strict=True):
        np.testing.assert_array_equal(w, e)
    assert model.execution == Execution(dtype="bfloat16")  # the model given is left as built


def test_module_keeps_a_decoders_cross_attention_in_layer_order_under_jit():
    model = build_model("transformer_seq2seq", V, {**SMALL, "max_len": 16})
    source, targets, lengths = _inputs(), jnp.zeros((B, 3), jnp.int32), jnp.array([L, 2], jnp.int32)
    params = model.init(jax.random.key(0), source, targets)["params"]
    every = apply_with_attention_weights(model, params, source, targets, lengths)[1]
    cross = jax.jit(lambda p: apply_with_attention_weights(model, p, source, targets, lengths,
                                                           module="cross_attention")[1])(params)
    assert len(every) == 9 and len(cross) == 3  # encoder, decoder self- and cross-attention; cross only
    assert all(w.shape == (B, 2, 3, L) for w in cross)  # [B, N, T, S]: decoder queries over source keys
    np.testing.assert_allclose(np.asarray(cross[1][1]).sum(-1), 1.0, atol=1e-5)
    assert np.all(np.asarray(cross[0][1])[..., 2:] == 0)  # the second source has 2 tokens: padding unseen


def test_a_model_without_an_execution_is_refused():
    model = build_model("lstm", V, dict(hidden_size=4))
    params = model.init(jax.random.key(0), _inputs())["params"]
    with pytest.raises(ValueError, match="has no execution"):
        apply_with_attention_weights(model, params, _inputs())


@pytest.mark.parametrize("name, fields, module", [
    ("transformer_seq2seq", {**SMALL, "max_len": 16}, "cross_attention"),
    ("rnn_seq2seq", dict(hidden_size=8, embed_dim=4, attention_dim=8, attention="additive"), None)])
def test_greedy_weights_are_those_of_the_decoder_teacher_forced_on_its_own_tokens(name, fields, module):
    model = build_model(name, V, fields)
    source, lengths = _inputs(), jnp.array([L, 3], jnp.int32)
    params = model.init(jax.random.key(0), source, jnp.zeros((B, 1), jnp.int32))["params"]
    tokens, weights = jax.jit(lambda p: greedy_attention_weights(model, p, source, lengths, 4, module))(params)
    np.testing.assert_array_equal(tokens, model.apply({"params": params}, source, lengths, max_length=4,
                                                      method="generate"))
    inputs = jnp.concatenate([jnp.full((B, 1), V), tokens[:, :-1]], axis=1)  # the begin token, then its own tokens
    expected = apply_with_attention_weights(model, params, source, inputs, source_lengths=lengths, module=module)[1]
    assert len(weights) == len(expected) == (3 if module else 1)
    for w, e in zip(weights, expected, strict=True):
        np.testing.assert_allclose(w, e, atol=1e-6)
        assert w.shape[-2:] == (4, L)  # decoder steps over source tokens
