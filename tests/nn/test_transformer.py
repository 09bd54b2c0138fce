"""TransformerEncoder, the shared block and its config: shapes, padding, options, the Delétang preset."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn.blocks import Embedding, TransformerBlock
from attnjax.nn.execution import Execution
from attnjax.nn.transformer_config import KERNEL_INITS
from attnjax.nn.transformer import TRANSFORMER_PRESETS, TransformerConfig, TransformerEncoder, transformer_config
from attnjax.ops import AttentionConfig
from tests.nn.training import adam_losses

B, L, V, C = 2, 8, 4, 3
LENGTHS = jnp.array([L, 5], jnp.int32)
SMALL = dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=16, max_len=64)
# One-off evaluations run eagerly: once JAX's per-op kernels are warm, a tiny model's eager init or
# forward takes ~50 ms against ~1 s to compile it; jit is kept for the trace count and the training loops.


def _cfg(**fields) -> TransformerConfig:
    return TransformerConfig(**{**SMALL, **fields})


def _tokens(length=L, seed=0):
    return jax.nn.one_hot(jax.random.randint(jax.random.key(seed), (B, length), 0, V), V)


def _inputs(config, length=L, seed=0):
    if config.pooling is None:
        return _tokens(length, seed)
    return jax.random.normal(jax.random.key(seed), (B, length))  # Classifier: one feature per position


@functools.lru_cache(maxsize=None)
def _model(config, output_size=C, execution=Execution()):
    return TransformerEncoder(config=config, output_size=output_size, execution=execution)


SOW = Execution(sow_attention_weights=True)


@functools.lru_cache(maxsize=None)
def _params(config, length=L):
    return _model(config).init(jax.random.key(0), _inputs(config, length))


def _apply(config):
    """``(variables, inputs, seq_lengths, rngs) -> logits``; train mode iff rngs is given."""
    model = _model(config)

    def apply(variables, inputs, seq_lengths=None, rngs=None):
        return model.apply(variables, inputs, seq_lengths, train=rngs is not None, rngs=rngs)

    return apply


@pytest.mark.parametrize("pooling", [None, "cls", "mean"])
def test_shapes_dtypes_and_padding_invariance(pooling):
    config = _cfg(pooling=pooling)
    x, params = _inputs(config), _params(config)
    out = _apply(config)(params, x, LENGTHS)
    assert out.shape == ((B, L, C) if pooling is None else (B, C)) and out.dtype == jnp.float32
    # Anything in the padded tail of example 1 (positions >= 5) leaves its real outputs unchanged.
    garbage = x.at[1, 5:].set(50.0)
    real = slice(0, 5) if pooling is None else slice(None)  # real positions, or the whole class vector
    np.testing.assert_allclose(_apply(config)(params, garbage, LENGTHS)[1, real], out[1, real], atol=1e-5)
    # Without lengths the tail is real and does change the outputs: the check above can fail.
    assert not np.allclose(_apply(config)(params, garbage)[1], _apply(config)(params, x)[1], atol=1e-3)


def test_pooled_encoder_takes_rank_2_and_rank_3_inputs():
    config = _cfg(pooling="mean")
    x = _inputs(config)
    params = _params(config)
    np.testing.assert_allclose(_apply(config)(params, x[..., None]), _apply(config)(params, x), atol=1e-6)
    with pytest.raises(ValueError, match=r"rank 2 \[B, L\] or 3"):
        _model(config).apply(params, x[..., None, None])
    with pytest.raises(ValueError, match=r"rank 3 \[B, L, V\]"):
        _model(_cfg()).apply(_params(_cfg()), x)


def test_one_trace_per_shape():
    config = _cfg()
    model, params = _model(config), _params(config)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=2)
    def apply(variables, x, lengths):
        return model.apply(variables, x, lengths)

    apply(params, _tokens(seed=1), LENGTHS)
    apply(params, _tokens(seed=2), jnp.array([3, 4]))  # new values, same shapes: no retrace
    apply(params, _tokens(length=L + 2), LENGTHS)  # a new length traces once more
    with pytest.raises(AssertionError, match="traced > 2"):
        apply(params, _tokens(length=L + 4), LENGTHS)


@pytest.mark.slow
def test_trains_below_stated_loss():
    """Output the count of token 1 so far, mod 3 (needs attention over the prefix, with positions):
    cross-entropy falls from ~ln 3 = 1.10 to < 0.25 in 60 Adam steps. (The pooled path trains in
    test_vit1d, which shares the stack, CLS token and pooling.)"""
    config = _cfg()
    model = _model(config)
    ids = jax.random.randint(jax.random.key(3), (16, L), 0, V)
    x, y = jax.nn.one_hot(ids, V), jnp.cumsum(ids == 1, axis=1) % C
    params = model.init(jax.random.key(0), x)["params"]
    losses = adam_losses(model.apply, params, (x,), y, steps=60)
    assert losses[0] > 0.7 and losses[-1] < 0.25, losses[::10]


def test_post_layernorm_normalizes_and_pre_layernorm_does_not():
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (B, L, 16))
    for norm in ("pre", "post"):
        block = TransformerBlock(_cfg(norm=norm))
        out = block.apply(block.init(jax.random.key(1), x), x)
        normalized = np.allclose(out.mean(-1), 0.0, atol=1e-4) and np.allclose(out.std(-1), 1.0, atol=1e-2)
        assert normalized == (norm == "post"), norm


def test_norm_activation_and_embed_scale_change_the_function():
    base = _cfg()
    x, params = _tokens(), _params(base)
    out = _apply(base)(params, x)
    # Same parameters (post-LN simply has no final_norm to read), different function.
    for change in (dict(norm="post"), dict(activation="relu"), dict(embed_scale=True)):
        assert not np.allclose(_apply(_cfg(**change))(params, x), out, atol=1e-3), change
    embed = Embedding(_cfg(embed_scale=True))
    variables = embed.init(jax.random.key(0), x)
    unscaled = Embedding(_cfg()).apply(variables, x)
    np.testing.assert_allclose(embed.apply(variables, x), math.sqrt(16) * unscaled, rtol=1e-6)


def test_attention_dropout_only_in_training_and_reproducible_per_rng():
    config = _cfg(attention_dropout_rate=0.5)
    x, params = _tokens(), _params(config)
    apply = _apply(config)
    # Evaluation is the dropout-free model (same parameters).
    np.testing.assert_allclose(apply(params, x), _apply(_cfg())(params, x), atol=1e-6)
    rngs = lambda seed: {"dropout": jax.random.key(seed)}  # noqa: E731
    np.testing.assert_array_equal(apply(params, x, rngs=rngs(1)), apply(params, x, rngs=rngs(1)))
    assert not np.allclose(apply(params, x, rngs=rngs(1)), apply(params, x, rngs=rngs(2)), atol=1e-3)
    # Residual dropout is off (dropout_rate=0), so the training difference is the attention's own dropout.
    assert not np.allclose(apply(params, x, rngs=rngs(1)), apply(params, x), atol=1e-3)
    np.testing.assert_allclose(_apply(_cfg())(params, x, rngs=rngs(1)), apply(params, x), atol=1e-6)


@pytest.mark.slow
def test_blockwise_equals_dense_in_the_model():
    # Blocks of 3 queries and 3 keys over T = S = 8 with key lengths 8 and 5: padded, partly and fully masked
    # blocks.
    dense = _cfg(attention=dict(implementation="dense"))
    blockwise = _cfg(attention=dict(implementation="blockwise", block_q=3, block_kv=3))
    x, params = _tokens(), _params(dense)

    def loss(config):
        model = _model(config)
        return jax.value_and_grad(lambda p: jnp.sum(jnp.sin(model.apply(p, x, LENGTHS))))

    (v_dense, g_dense), (v_block, g_block) = loss(dense)(params), loss(blockwise)(params)
    np.testing.assert_allclose(v_block, v_dense, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_block, g_dense)


def test_sown_attention_weights_per_layer_and_nothing_when_off():
    config = _cfg(num_layers=2)
    model, x, params = _model(config, C, SOW), _tokens(), _params(config)
    out, state = model.apply(params, x, LENGTHS, mutable=["intermediates"])
    weights = [state["intermediates"]["encoder"][f"block_{i}"]["attention"]["attention_weights"][0] for i in range(2)]
    for w in weights:
        assert w.shape == (B, 2, L, L) and w.dtype == jnp.float32
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(w[1, :, :, 5:], 0.0)  # padded keys get no weight
    np.testing.assert_allclose(out, _apply(config)(params, x, LENGTHS), atol=1e-6)  # sowing changes nothing
    _, state = _model(_cfg(num_layers=2)).apply(params, x, LENGTHS, mutable=["intermediates"])
    assert "intermediates" not in state or not jax.tree.leaves(state["intermediates"])


def test_attention_options_reach_the_op_and_are_normalized():
    config = _cfg(attention=dict(options={"local_window_size": 1}))
    assert config.attention.options == (("local_window_size", 1),) and hash(config) == hash(
        _cfg(attention=AttentionConfig(options=[("local_window_size", 1)])))
    _, state = _model(config, C, SOW).apply(_params(config), _tokens(), mutable=["intermediates"])
    w = state["intermediates"]["encoder"]["block_0"]["attention"]["attention_weights"][0]
    far = np.abs(np.arange(L)[:, None] - np.arange(L)[None, :]) > 1
    np.testing.assert_array_equal(np.asarray(w)[..., far], 0.0)
    hot = _cfg(attention="softmax_temperature")
    cold = _cfg(attention=AttentionConfig("softmax_temperature", options={"temperature": 0.1}))
    x, params = _tokens(), _params(hot)
    assert not np.allclose(_apply(hot)(params, x), _apply(cold)(params, x), atol=1e-3)


def test_grouped_query_heads_and_randomized_positions_are_wired():
    config = _cfg(num_heads=4, num_kv_heads=2)
    block = _params(config)["params"]["encoder"]["block_0"]["attention"]
    assert block["query"]["kernel"].shape == (16, 4, 4) and block["key"]["kernel"].shape == (16, 2, 4)
    rand = _cfg(randomized_positions=True, randomized_eval="consecutive")
    x, params = _tokens(), _params(rand)
    np.testing.assert_allclose(_apply(rand)(params, x), _apply(_cfg())(params, x), atol=1e-6)
    train = lambda seed: _apply(rand)(params, x, rngs={"positions": jax.random.key(seed)})  # noqa: E731
    assert not np.allclose(train(1), train(2), atol=1e-3)


@pytest.mark.parametrize("fields, message", [
    (dict(norm="mid"), r"norm must be one of \('pre', 'post'\), got 'mid'"),
    (dict(activation="tanh"), r"activation must be one of \('relu', 'gelu'\), got 'tanh'"),
    (dict(pooling="max"), r"pooling must be one of \(None, 'cls', 'mean'\), got 'max'"),
    (dict(pooling="cls", causal=True), "pooling='cls' needs causal=False"),
    (dict(d_model=15), "d_model=15 must be divisible by num_heads=2"),
    (dict(num_kv_heads=3, num_heads=2), "num_kv_heads must divide num_heads=2, got 3"),
    (dict(num_layers=0), "num_layers must be an int >= 1, got 0"),
    (dict(dropout_rate=1.0), r"dropout_rate must be in \[0, 1\), got 1.0"),
    (dict(attention="cosine", attention_dropout_rate=0.1), "attention 'cosine' does not"),
    (dict(attention=dict(name="cosine", implementation="blockwise")),
     r"implementation='blockwise' is not a path of attention 'cosine'; it has \['dense', 'xla'\]"),
    (dict(attention=dict(implementation="fast")), "implementation='fast' is not a path of attention 'dot_product'"),
    (dict(attention=dict(implementation="dense", block_q=4)), "block_q/block_kv are used by attention 'dot_product'"),
    (dict(attention=dict(block_q=0)), "block_q must be"),
    (dict(attention=dict(options={"window": 3})), r"options are \[.*\]; got option 'window', which is not one"),
    (dict(attention=dict(options={"is_causal": True})), "got option 'is_causal', which is set per call"),
    (dict(attention=dict(name="additive", options={"w_query": 1.0})), r"\['w_query'\] of 'additive' are learned"),
    (dict(attention=dict(options={"scale": [1.0]})), None),  # lists become tuples, and tuples hash: accepted
    (dict(attention=dict(options={"scale": {"a": 1}})), "must be hashable"),
    (dict(attention=dict(implementaton="dense")), r"unknown attention field\(s\) \['implementaton'\]"),
    (dict(attention=3), "attention must be an AttentionConfig, a variant name or a mapping"),
    (dict(positional="alibi", attention="linear"), "cannot take"),
    (dict(positional="nope", randomized_positions=True), "nothing to randomize"),
    (dict(randomized_positions=True, randomized_eval="never"), "randomized_eval must be one of"),
    (dict(positions_from_end=True, positional="rope"), "positions_from_end needs positional='sinusoidal'"),
    (dict(kernel_init="he"), "kernel_init must be one of"),
])
def test_config_errors(fields, message):
    if message is None:
        assert _cfg(**fields).attention.options == (("scale", (1.0,)),)
        return
    with pytest.raises(ValueError, match=message):
        _cfg(**fields)


def test_presets():
    assert transformer_config() == TransformerConfig()
    cfg = transformer_config("deletang2022", positional="rope", positions_from_end=False)
    assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.mlp_dim, cfg.positional) == (5, 64, 8, 256, "rope")
    assert TRANSFORMER_PRESETS["deletang2022"]["dropout_rate"] == 0.1
    with pytest.raises(ValueError, match=r"preset must be one of \['deletang2022'\] or None, got 'gpt2'"):
        transformer_config("gpt2")
    with pytest.raises(TypeError):
        transformer_config("deletang2022", widening_factor=4)


@pytest.mark.parametrize("V, C", [(4, 3), (11, 2)])
def test_deletang_preset_parameter_count(V, C):
    config = transformer_config("deletang2022")
    shapes = jax.eval_shape(_model(config, C).init, jax.random.key(0), jnp.zeros((1, 6, V)))
    D, F, layers = 64, 256, 5
    embedding = V * D  # bias-free linear embedding of the one-hot tokens
    attention = 4 * D * D  # bias-free q, k, v (8 heads x 8) and output projections
    layer_norms = 2 * 2 * D  # two LayerNorms with scale and offset
    feed_forward = D * F + F + F * D + D  # two biased linear layers
    readout = D * C + C  # biased, no final LayerNorm
    expected = embedding + layers * (attention + layer_norms + feed_forward) + readout
    assert expected == 64 * V + 248_640 + 65 * C
    assert sum(x.size for x in jax.tree.leaves(shapes)) == expected


def _deletang_reference(params, x: np.ndarray, config: TransformerConfig) -> np.ndarray:
    """The forward pass of Delétang et al.'s encoder (evaluation, no dropout), in float64 NumPy."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    D, N = config.d_model, config.num_heads
    length = x.shape[1]
    inv_freq = 10_000.0 ** (-np.arange(0, D, 2) / D)
    angles = np.arange(length, 0, -1.0)[:, None] * inv_freq  # positions L, L-1, .., 1
    h = x @ p["embed"]["kernel"] * np.sqrt(D) + np.concatenate([np.sin(angles), np.cos(angles)], -1)

    def layer_norm(z, ln):
        return (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-5) * ln["scale"] + ln["bias"]

    for i in range(config.num_layers):
        b = p["encoder"][f"block_{i}"]
        att = b["attention"]
        q, k, v = (np.einsum("BLD,DNH->BLNH", h, att[n]["kernel"]) for n in ("query", "key", "value"))
        logits = np.einsum("BTNH,BSNH->BNTS", q, k) / np.sqrt(D // N)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        heads = np.einsum("BNTS,BSNH->BTNH", probs, v)
        a = layer_norm(h + np.einsum("BTNH,NHD->BTD", heads, att["out"]["kernel"]), b["attention_norm"])
        hidden = np.maximum(a @ b["mlp_in"]["kernel"] + b["mlp_in"]["bias"], 0)  # ReLU
        ff = hidden @ b["mlp_out"]["kernel"] + b["mlp_out"]["bias"]
        h = layer_norm(a + ff, b["mlp_norm"])
    return h @ p["logits"]["kernel"] + p["logits"]["bias"]


def test_deletang_preset_matches_an_independent_reference_forward_pass():
    # The preset's arrangement at this file's small sizes (the sizes themselves: the parameter count above).
    config = transformer_config("deletang2022", num_layers=2, **{k: SMALL[k] for k in ("d_model", "num_heads",
                                                                                      "mlp_dim")})
    model, x = _model(config), _tokens()
    params = _params(config)
    assert "final_norm" not in params["params"]["encoder"]
    np.testing.assert_allclose(model.apply(params, x), _deletang_reference(params, np.asarray(x), config),
                               rtol=1e-4, atol=1e-4)
    # Haiku's initializers: embeddings N(0, 0.02^2) truncated at 2 std; kernels N(0, 1/fan_in) truncated at
    # 2 std without variance correction (std 0.88 / sqrt(fan_in)).
    assert float(jnp.abs(params["params"]["embed"]["kernel"]).max()) <= 0.04
    w = KERNEL_INITS["haiku"](jax.random.key(0), (256, 256))
    assert float(jnp.abs(w).max()) <= 2 / 16
    np.testing.assert_allclose(float(w.std()), 0.8796 / 16, rtol=0.02)


def test_positions_from_end_count_down_from_each_real_end():
    config = _cfg(positional="sinusoidal", positions_from_end=True, num_layers=1)
    x, params = _tokens(), _params(config)
    out = _apply(config)(params, x, LENGTHS)
    # Example 1 (length 5) alone, unpadded, has its positions 5..1: the same as inside the padded batch.
    alone = _apply(config)(params, x[1:, :5])
    np.testing.assert_allclose(out[1, :5], alone[0], atol=1e-5)
    ascending = _cfg(positional="sinusoidal", num_layers=1)
    assert not np.allclose(_apply(ascending)(params, x, LENGTHS)[1, :5], out[1, :5], atol=1e-3)
