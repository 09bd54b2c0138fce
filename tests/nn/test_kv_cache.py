"""decode=True (attnjax.nn.kv_cache): the cache in Flax's 'cache' collection, the same parameters as a normal call,
a prompt then one token per call equal to the normal forward pass, the ops' cached forms against the plain ones,
and clear errors where a cache cannot be used."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn import build_model
from attnjax.nn.transformer_config import TransformerConfig
from attnjax.nn.transformer_lm import TransformerLM
from attnjax.ops import cope, forgetting, stick_breaking
from attnjax.train.decode import init_cache

B, L, V = 2, 7, 5
SMALL = dict(num_layers=2, d_model=8, num_heads=2, mlp_dim=8, max_len=32)
X = jax.nn.one_hot(jax.random.randint(jax.random.key(1), (B, L), 0, V), V)


def _decode_in_pieces(model, variables, x, pieces):
    """Logits of ``x`` read with decode=True in consecutive pieces of the given lengths (a prompt, then tokens)."""
    step = jax.jit(lambda params, cache, x: model.apply({"params": params, "cache": cache}, x, decode=True,
                                                        mutable=["cache"]))
    cache, outs, start = variables["cache"], [], 0
    for n in pieces:
        out, mutated = step(variables["params"], cache, x[:, start:start + n])
        cache, start = mutated["cache"], start + n
        outs.append(out)
    return jnp.concatenate(outs, axis=1), cache


def test_one_set_of_parameters_and_the_normal_logits():
    """init(decode=True) gives the parameters of init() (FoX's gates and T5's table included) and a zero cache;
    reading a prompt of 3 then 1, then 3 tokens (two layers, grouped heads) gives the normal forward pass's logits;
    init_cache builds the same cache without running the model."""
    fields = dict(positional="t5", attention="forgetting", num_kv_heads=1)
    model = build_model("transformer_lm", V, {**SMALL, **fields})
    params, variables = jax.jit(lambda rng: (model.init(rng, X)["params"], model.init(rng, X, decode=True)))(
        jax.random.key(0, impl="unsafe_rbg"))
    chex_equal = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, variables["params"])
    assert all(jax.tree.leaves(chex_equal))
    draw = np.random.default_rng(2)
    params = jax.tree.map(lambda p: p + 0.3 * draw.standard_normal(p.shape).astype(np.float32), params)
    cache = init_cache(model, B, L, V)
    assert jax.tree.structure(cache) == jax.tree.structure(variables["cache"])
    assert all(not jnp.any(c) for c in jax.tree.leaves(cache))
    decoded, final = _decode_in_pieces(model, {"params": params, "cache": cache}, X, (3, 1, 3))
    np.testing.assert_allclose(decoded, jax.jit(model.apply)({"params": params}, X), atol=2e-5, rtol=2e-5)
    block = final["decoder"]["block_1"]["attention"]
    assert block["cached_key"].shape == (B, L, 1, 4) and int(block["cache_index"]) == L
    np.testing.assert_array_equal(final["decoder"]["positional"]["positions"], [np.arange(L)])


def test_cached_ops_equal_the_plain_ones():
    """query_offset (stick-breaking on dense rows and query tiles, CoPE) and forget_cumsums (FoX): the last T queries
    against all S keys equal the last T rows of the full causal attention."""
    S, T, N, H = 6, 2, 2, 4
    q, k, v = (jax.random.normal(jax.random.key(i), (B, S, N, H)) for i in range(3))
    table = jax.random.normal(jax.random.key(4), (5, H))
    for fn, kw in ((stick_breaking.stick_breaking_attention, {}),
                   (cope.cope_attention, dict(position_embeddings=table))):
        full = jax.jit(lambda q, k, v: fn(q, k, v, is_causal=True, **kw))(q, k, v)[:, -T:]
        for impl in ("dense", "blockwise") if fn is stick_breaking.stick_breaking_attention else ("dense",):
            out = jax.jit(lambda q, k, v, offset: fn(q, k, v, is_causal=True, query_offset=offset, implementation=impl,
                                                     block_sizes=(1, 1), **kw))(q[:, -T:], k, v, S - T)
            np.testing.assert_allclose(out, full, atol=1e-5, rtol=1e-5)
    log_f = jax.nn.log_sigmoid(jax.random.normal(jax.random.key(5), (B, S, N)))
    cumsum = jnp.cumsum(log_f, axis=1)
    full = jax.jit(lambda q, k, v: forgetting.forgetting_attention(q, k, v, is_causal=True, log_forget=log_f))(q, k, v)
    visible = (jnp.arange(S)[None, :] <= (S - T + jnp.arange(T))[:, None])[None, None]
    out = jax.jit(lambda q, k, v: forgetting.forgetting_attention(q, k, v, None, visible, forget_cumsums=(
        cumsum[:, -T:], cumsum)))(q[:, -T:], k, v)
    full = full[:, -T:]
    np.testing.assert_allclose(out, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        forgetting.forgetting_attention(q, k, v, log_forget=log_f, forget_cumsums=(cumsum, cumsum))
    with pytest.raises(ValueError, match="query_offset must be >= 0"):
        stick_breaking.stick_breaking_attention(q, k, v, query_offset=-1)


def _lm(**fields):
    return TransformerLM(TransformerConfig(**{**SMALL, **fields}), V)


def test_decoding_past_the_cache_or_without_one_is_an_error():
    model = _lm(positional="rope", num_layers=1)
    params = jax.tree.map(jnp.ones_like, jax.eval_shape(model.init, jax.random.key(0), X)["params"])
    cache = init_cache(model, B, 4, V)  # 4 tokens
    with pytest.raises(ValueError, match="needs the 'cache' collection"):
        model.apply({"params": params}, X[:, :2], decode=True, mutable=["cache"])
    with pytest.raises(ValueError, match=r"pass mutable=\['cache'\]"):
        model.apply({"params": params, "cache": cache}, X[:, :2], decode=True)
    with pytest.raises(ValueError, match="5 new tokens, more than the cache's max length 4"):
        model.apply({"params": params, "cache": cache}, X[:, :5], decode=True, mutable=["cache"])
    step = jax.jit(lambda c, x: model.apply({"params": params, "cache": c}, x, decode=True, mutable=["cache"]))
    _, state = step(cache, X[:, :3])
    with pytest.raises(ValueError, match="decoding past the cache: it holds 3 of max length 4 tokens and got 2"):
        model.apply({"params": params, "cache": state["cache"]}, X[:, 3:5], decode=True, mutable=["cache"])
    ok, state = step(state["cache"], X[:, 3:4])
    past, _ = step(state["cache"], X[:, 4:5])  # under jit the index is traced: the overflow shows as NaN, never wrong
    assert np.isfinite(ok).all() and np.isnan(past).all()
    with pytest.raises(ValueError, match="build the cache for batch size 1"):
        model.apply({"params": params, "cache": cache}, X[:1, :2], decode=True, mutable=["cache"])


@pytest.mark.parametrize("fields, match", [
    (dict(attention="local"), "attention 'local' cannot decode with a key/value cache: its window"),
    (dict(attention="linear", positional="nope"), "attention 'linear' cannot decode"),
    (dict(attention="sigmoid"), r"attention 'sigmoid' cannot decode .*-log\(S\)"),
    (dict(attention={"name": "dot_product", "options": {"local_window_size": 2}}), r"\['local_window_size'\]"),
    (dict(positional="sinusoidal", positions_from_end=True), "got positions_from_end"),
])
def test_what_cannot_decode_says_so(fields, match):
    model = _lm(**fields)
    with pytest.raises(ValueError, match=match):
        init_cache(model, B, L, V)


def test_decode_rejects_training_lengths_and_bidirectional_models():
    model = _lm()
    variables = {"params": jax.eval_shape(model.init, jax.random.key(0), X)["params"],
                 "cache": init_cache(model, B, L, V)}
    with pytest.raises(ValueError, match="got seq_lengths, train"):
        jax.eval_shape(lambda v: model.apply(v, X, jnp.array([L, L]), train=True, decode=True, mutable=["cache"]),
                       variables)
    rnn = build_model("gru", V, dict(hidden_size=4, bidirectional=True))
    with pytest.raises(ValueError, match="bidirectional=False"):
        init_cache(rnn, B, L, V)
