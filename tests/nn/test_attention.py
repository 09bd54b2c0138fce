"""MultiHeadAttention equals Flax's MultiHeadDotProductAttention with the same weights; GQA shapes."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn import MultiHeadAttention
from attnjax.ops import AttentionConfig


def _inputs(B=2, T=5, S=7, D=12, seed=0):
    kq, kk = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kq, (B, T, D)), jax.random.normal(kk, (B, S, D))


@pytest.mark.parametrize("self_attention", [True, False])
def test_matches_flax_mhdpa_with_same_params(self_attention):
    xq, xkv = _inputs()
    xkv = None if self_attention else xkv
    ref = nn.MultiHeadDotProductAttention(num_heads=3, qkv_features=12, deterministic=True)
    ours = MultiHeadAttention(num_heads=3, head_dim=4)
    params = ref.init(jax.random.key(1), xq, xkv)
    ours_params = ours.init(jax.random.key(2), xq, xkv)
    # Same tree and shapes, so Flax's weights load as-is (and ours were initialized independently).
    assert jax.tree.structure(params) == jax.tree.structure(ours_params)
    chex_shapes = jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ours_params)
    assert chex_shapes
    np.testing.assert_allclose(jax.jit(ours.apply)(params, xq, xkv), jax.jit(ref.apply)(params, xq, xkv),
                               rtol=1e-5, atol=1e-5)


def test_key_padding_matches_flax_mask_values_and_grads():
    xq, xkv = _inputs(T=6, S=6)
    lengths = jnp.array([6, 3])
    ref = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=12, deterministic=True)
    ours = MultiHeadAttention(num_heads=2, head_dim=6)
    params = ref.init(jax.random.key(1), xq)
    key_ok = jnp.arange(6)[None, :] < lengths[:, None]
    mask = nn.make_attention_mask(jnp.ones((2, 6), bool), key_ok)  # [B, 1, T, S]

    def loss_ref(p):
        return jnp.sum(ref.apply(p, xq, mask=mask) ** 2)

    def loss_ours(p):
        return jnp.sum(ours.apply(p, xq, key_value_seq_lengths=lengths) ** 2)

    np.testing.assert_allclose(jax.jit(loss_ours)(params), jax.jit(loss_ref)(params), rtol=1e-5)
    g_ref, g_ours = jax.jit(jax.grad(loss_ref))(params), jax.jit(jax.grad(loss_ours))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_ours, g_ref)


def test_padding_does_not_change_real_positions():
    xq, _ = _inputs(B=1, T=4)
    layer = MultiHeadAttention(num_heads=2, head_dim=6)
    params = layer.init(jax.random.key(0), xq)
    padded = jnp.concatenate([xq, 100.0 * jnp.ones((1, 3, 12))], axis=1)
    out = layer.apply(params, padded, key_value_seq_lengths=jnp.array([4]))
    np.testing.assert_allclose(out[:, :4], layer.apply(params, xq), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_gqa_shapes(kv_heads):
    xq, xkv = _inputs(D=16)
    layer = MultiHeadAttention(num_heads=4, num_kv_heads=kv_heads, head_dim=8, out_features=10)
    params = jax.jit(layer.init)(jax.random.key(0), xq, xkv)["params"]
    assert params["query"]["kernel"].shape == (16, 4, 8)
    assert params["key"]["kernel"].shape == (16, kv_heads, 8)
    assert params["value"]["kernel"].shape == (16, kv_heads, 8)
    assert params["out"]["kernel"].shape == (4, 8, 10)
    assert jax.eval_shape(layer.apply, {"params": params}, xq, xkv).shape == (2, 5, 10)


def test_gqa_equals_mha_with_repeated_kv_heads():
    xq, _ = _inputs(D=16)
    gqa = MultiHeadAttention(num_heads=4, num_kv_heads=2, head_dim=8)
    mha = MultiHeadAttention(num_heads=4, head_dim=8)
    p = gqa.init(jax.random.key(0), xq)["params"]
    rep = lambda x: jnp.repeat(x, 2, axis=-2)  # noqa: E731 - kv head k serves query heads 2k, 2k+1
    p_mha = dict(p, key={"kernel": rep(p["key"]["kernel"]), "bias": rep(p["key"]["bias"])},
                 value={"kernel": rep(p["value"]["kernel"]), "bias": rep(p["value"]["bias"])})
    np.testing.assert_allclose(gqa.apply({"params": p}, xq), mha.apply({"params": p_mha}, xq), rtol=1e-5, atol=1e-5)


def test_pluggable_attention_fn_and_bad_heads():
    xq, _ = _inputs()
    calls = []

    def spy(q, k, v, bias, mask, **kw):
        calls.append((q.shape, k.shape))
        return jax.nn.dot_product_attention(q, k, v, bias, mask)

    MultiHeadAttention(num_heads=3, head_dim=4, attention_fn=spy).init(jax.random.key(0), xq)
    assert calls == [((2, 5, 3, 4), (2, 5, 3, 4))]
    with pytest.raises(ValueError, match="num_heads=3 must be a multiple of num_kv_heads=2"):
        MultiHeadAttention(num_heads=3, num_kv_heads=2, head_dim=4).init(jax.random.key(0), xq)
    with pytest.raises(ValueError, match="inputs_q must have rank 3"):
        MultiHeadAttention(num_heads=3, head_dim=4).init(jax.random.key(0), xq[0])


def test_options_dropout_and_sown_weights():
    xq, _ = _inputs()
    # local_window_size=0 lets each query see only its own key: the sown weights are the identity.
    window = AttentionConfig("dot_product", options={"local_window_size": 0})
    layer = MultiHeadAttention(num_heads=3, head_dim=4, attention=window, sow_weights=True, dropout_rate=0.5)
    variables = layer.init(jax.random.key(0), xq)
    out, state = layer.apply(variables, xq, mutable=["intermediates"])
    (weights,) = state["intermediates"]["attention_weights"]
    np.testing.assert_allclose(weights, np.broadcast_to(np.eye(5), (2, 3, 5, 5)), atol=1e-6)
    # deterministic (the default) has no dropout and equals the layer without it; training needs 'dropout'.
    plain = MultiHeadAttention(num_heads=3, head_dim=4, attention=window)
    np.testing.assert_allclose(out, plain.apply(variables, xq), atol=1e-6)
    train = lambda seed: layer.apply(variables, xq, deterministic=False,  # noqa: E731
                                     rngs={"dropout": jax.random.key(seed)})
    np.testing.assert_array_equal(train(1), train(1))
    assert not np.allclose(train(1), train(2))
    with pytest.raises(ValueError, match="sow_weights needs a registered attention"):
        MultiHeadAttention(num_heads=3, head_dim=4, sow_weights=True,
                           attention_fn=lambda q, k, v, b, m, **kw: q).init(jax.random.key(0), xq)


def test_implementation_and_block_sizes_reach_the_op(monkeypatch):
    from attnjax.ops import BlockSizes, registry

    xq, xkv = _inputs()  # T=5, S=7: blocks of 2 queries and 3 keys leave padded blocks on both axes
    dense = MultiHeadAttention(num_heads=3, head_dim=4, attention=AttentionConfig(implementation="dense"))
    blocked_attention = AttentionConfig(implementation="blockwise", block_q=2, block_kv=3)
    blocked = MultiHeadAttention(num_heads=3, head_dim=4, attention=blocked_attention)
    variables = dense.init(jax.random.key(0), xq, xkv)
    np.testing.assert_allclose(blocked.apply(variables, xq, xkv, key_value_seq_lengths=jnp.array([7, 4])),
                               dense.apply(variables, xq, xkv, key_value_seq_lengths=jnp.array([7, 4])),
                               rtol=1e-5, atol=1e-5)
    # What the op receives: the spec's function is replaced by a recorder.
    seen = {}
    spec = registry.ATTENTION["dot_product"]
    recorder = dataclasses.replace(spec, fn=lambda q, k, v, b, m, **kw: seen.update(kw) or spec.fn(q, k, v, b, m, **kw))
    monkeypatch.setitem(registry.ATTENTION, "dot_product", recorder)
    blocked.apply(variables, xq, xkv)
    assert seen["implementation"] == "blockwise" and seen["block_sizes"] == BlockSizes(2, 3)
