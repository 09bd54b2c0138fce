"""Integer token ids ``[B, L]`` embed exactly as their one-hot vectors ``[B, L, V]``: values and gradients,
in ``embed_tokens`` and in every sequence model that takes ``vocab_size``; float inputs are unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn import build_model
from attnjax.nn.blocks import Embedding
from attnjax.nn.recurrent import RecurrentConfig
from attnjax.nn.tokens import embed_tokens, token_input_size
from attnjax.nn.transformer_config import TransformerConfig
from tests.nn.training import JIT

B, L, V = 2, 6, 7
IDS = jnp.array([[0, 3, 6, 2, -1, 7], [5, 5, 1, 0, 4, 2]], jnp.int32)  # -1 and 7 (= V) are out of range
SMALL = dict(num_layers=1, d_model=8, num_heads=2, mlp_dim=8, max_len=16, vocab_size=V)


def test_embed_tokens_is_the_one_hot_product_values_and_gradients():
    table = jax.random.normal(jax.random.key(0), (V, 5))
    hot = jax.nn.one_hot(IDS, V)  # all-zero rows at -1 and 7
    np.testing.assert_array_equal(embed_tokens(IDS, table), embed_tokens(hot, table))
    np.testing.assert_array_equal(embed_tokens(IDS, table)[0, 4:], 0.0)
    cot = jax.random.normal(jax.random.key(1), (B, L, 5))
    g_ids = jax.grad(lambda t: jnp.sum(embed_tokens(IDS, t) * cot))(table)
    g_hot = jax.grad(lambda t: jnp.sum(embed_tokens(hot, t) * cot))(table)
    np.testing.assert_allclose(g_ids, g_hot, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name, fields", [
    ("transformer_lm", dict(SMALL)),
    ("transformer_lm", dict(SMALL, tie_embeddings=True, positional="rope")),
    ("transformer", dict(SMALL, causal=True)),
    ("lstm", dict(hidden_size=6, vocab_size=V)),
    ("gru", dict(hidden_size=6, num_layers=2, vocab_size=V)),
])
def test_models_give_equal_logits_and_gradients_for_ids_and_one_hot(name, fields):
    model = build_model(name, V, fields)
    params = JIT(model.init)(jax.random.key(0), IDS)
    hot = jax.nn.one_hot(IDS, V)
    cot = jax.random.normal(jax.random.key(2), (B, L, V))
    lengths = jnp.array([L, 4], jnp.int32)

    def loss(p, x):
        return jnp.sum(model.apply(p, x, lengths) * cot)

    f = JIT(jax.value_and_grad(loss))
    (v_ids, g_ids), (v_hot, g_hot) = f(params, IDS), f(params, hot)
    np.testing.assert_allclose(v_ids, v_hot, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), g_ids, g_hot)
    # The same parameters serve both inputs: a checkpoint trained on one-hot batches reads ids.
    shapes = jax.eval_shape(model.init, jax.random.key(0), hot)
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(lambda p: p.shape, params)


def test_float_inputs_unchanged_without_vocab_size():
    """``vocab_size=None`` keeps the float path as it was: kernel ``[F, D]`` from the input's last axis."""
    cfg = TransformerConfig(**{**SMALL, "vocab_size": None})
    x = jax.random.normal(jax.random.key(3), (B, L, 3))
    params = Embedding(cfg).init(jax.random.key(0), x)
    assert params["params"]["kernel"].shape == (3, 8)
    kernel, bias = params["params"]["kernel"], params["params"]["bias"]
    np.testing.assert_allclose(Embedding(cfg).apply(params, x), x @ kernel + bias, rtol=1e-6, atol=1e-6)


def test_errors_name_vocab_size():
    with pytest.raises(ValueError, match="set the model config's vocab_size"):
        token_input_size(IDS, None)
    with pytest.raises(ValueError, match=r"V == vocab_size=7, got shape \(2, 6, 5\)"):
        token_input_size(jnp.zeros((B, L, 5)), V)
    with pytest.raises(ValueError, match=r"rank 3 \[B, L, V\].*rank 2 \[B, L\].*float32 shape \(2, 6\)"):
        token_input_size(jnp.zeros((B, L)), V)
    lm = build_model("transformer_lm", V, dict(SMALL, vocab_size=None))
    with pytest.raises(ValueError, match="vocab_size"):
        lm.init(jax.random.key(0), IDS)
    with pytest.raises(ValueError, match="Embedding.vocab_size"):
        Embedding(TransformerConfig(**SMALL)).init(jax.random.key(0), IDS)
    with pytest.raises(ValueError, match="integer token ids need config vocab_size"):
        build_model("lstm", V, dict(hidden_size=4)).init(jax.random.key(0), IDS)
    with pytest.raises(ValueError, match="tie_embeddings needs output_size == V.*output_size=3, V=7"):
        build_model("transformer_lm", 3, dict(SMALL, tie_embeddings=True)).init(jax.random.key(0), IDS)
    with pytest.raises(ValueError, match="vocab_size must be None or an int >= 1, got 0"):
        TransformerConfig(vocab_size=0)
    with pytest.raises(ValueError, match="pooling must be None, got pooling='mean'"):
        TransformerConfig(vocab_size=V, pooling="mean")
    with pytest.raises(ValueError, match="pooling must be None, got pooling='last'"):
        RecurrentConfig(vocab_size=V, pooling="last")
    with pytest.raises(ValueError, match="vocab_size must be an int >= 1, got -2"):
        RecurrentConfig(vocab_size=-2)
