"""nnx_attention_fn under flax NNX's ``attention_fn`` convention, and the zoo inside NNX code via ``nnx.bridge``.

The first part is flax's own NNX attention tests (google/flax ``tests/nnx/nn/attention_test.py`` at v0.12.8,
the installed version; Apache-2.0), ported to pytest with ``attnjax.nn.nnx_attention_fn`` substituted for
``nnx.dot_product_attention``: passed as ``attention_fn`` to every ``nnx.MultiHeadAttention``, and called where
the flax tests call the function directly. Each keeps flax's assertions and tolerances. Differences:

* ``test_causal_mask_equivalence`` with ``use_padding`` and self-attention masks every key of every row. It
  compares two calls of the same function (fast path and weights path), which agree for attnjax too: both
  give zeros where flax's give the mean of the values (attnjax's documented rule for fully masked rows).
  ``test_fully_masked_row_is_zeros_where_flax_gives_the_mean`` below states that difference directly.
* Nothing else had to change, and no flax test is skipped.

The second part compares values and gradients with ``nnx.dot_product_attention`` itself (masks, bias,
``is_causal``, grouped-query heads, extra batch dims, sown weights, dropout draws).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx
from flax.nnx.nn.attention import combine_masks
from jax.lax import Precision

from attnjax.nn import build_model, flax_attention_fn, nnx_attention_fn

try:
    from jax import enable_x64
except ImportError:  # JAX < 0.8
    from jax.experimental import enable_x64

TOL = dict(rtol=1e-5, atol=1e-5)


def _mha(**kwargs):
    return nnx.MultiHeadAttention(attention_fn=nnx_attention_fn, **kwargs)


# ---------------------------------------------------------------- flax's tests/nnx/nn/attention_test.py, ported


def test_basic():
    module = _mha(num_heads=2, in_features=3, qkv_features=6, out_features=6, rngs=nnx.Rngs(0))
    y = module(jnp.ones((1, 7, 3)), decode=False)
    assert y.shape == (1, 7, 6)


def test_multihead_sow_attention_weights():
    class Model(nnx.Module):
        def __init__(self, attention_kwargs, rng):
            self.attention_layers = nnx.data([_mha(**attention_kwargs, rngs=rng) for _ in range(3)])

        def __call__(self, x, sow_weights=False):
            x = self.attention_layers[0](x, sow_weights=sow_weights)
            x = self.attention_layers[1](x)
            x = self.attention_layers[2](x, sow_weights=sow_weights)
            return x

    x = jnp.ones((4, 6, 8))
    module = Model(dict(in_features=8, num_heads=8, kernel_init=nnx.initializers.ones_init(),
                        bias_init=nnx.initializers.zeros_init(), deterministic=False), nnx.Rngs(0))
    module.set_attributes(decode=False)

    _, intermediates = nnx.capture(module, nnx.Intermediate)(x, True)
    assert intermediates["attention_layers"][0]["attention_weights"][0].shape == (4, 8, 6, 6)
    assert 1 not in intermediates["attention_layers"]
    assert intermediates["attention_layers"][2]["attention_weights"][0].shape == (4, 8, 6, 6)

    _, intermediates = nnx.capture(module, nnx.Intermediate)(x)
    assert not intermediates  # empty


def test_autoregressive_decode_with_x64():
    with enable_x64():
        x = jnp.ones((1, 4, 4))
        module = _mha(in_features=4, num_heads=2, qkv_features=4, decode=True, rngs=nnx.Rngs(0))
        module.init_cache(x.shape, dtype=x.dtype)
        assert module.cached_key.shape == (1, 4, 2, 2)
        assert module.cached_value.shape == (1, 4, 2, 2)

        y1 = module(x[:, :1, :])
        y2 = module(x[:, 1:2, :])

        assert y1.shape == (1, 1, 4)
        assert y2.shape == (1, 1, 4)


@pytest.mark.parametrize("keep_rngs", [True, False])
def test_keep_rngs(keep_rngs):
    module = _mha(in_features=4, num_heads=2, qkv_features=4, decode=True, rngs=nnx.Rngs(42), dropout_rate=0.5,
                  keep_rngs=keep_rngs)
    if keep_rngs:
        assert module.rngs is not None
        _, _, nondiff = nnx.split(module, nnx.Param, ...)
        assert isinstance(nondiff["rngs"]["count"], nnx.RngCount)
        assert isinstance(nondiff["rngs"]["key"], nnx.RngKey)
    else:
        assert module.rngs is None
        nnx.split(module, nnx.Param)


@pytest.mark.parametrize("is_cross_attention", [True, False])
@pytest.mark.parametrize("use_padding", [True, False])
def test_causal_mask_equivalence(use_padding, is_cross_attention):
    batch_size, num_heads, q_len, head_dim = 1, 2, 2, 4
    kv_len = 4 if is_cross_attention else q_len
    q = jax.random.normal(jax.random.key(0), (batch_size, 1, q_len, num_heads, head_dim))
    k = jax.random.normal(jax.random.key(1), (batch_size, 1, kv_len, num_heads, head_dim))
    v = jax.random.normal(jax.random.key(2), (batch_size, 1, kv_len, num_heads, head_dim))
    causal_mask = jnp.broadcast_to(jnp.tril(jnp.ones((q_len, kv_len), jnp.bool_)),
                                   (batch_size, 1, num_heads, q_len, kv_len))
    padding_mask = None
    if use_padding:
        padding_mask = jnp.ones((batch_size, 1, 1, q_len, kv_len), jnp.bool_).at[..., -2:].set(False)
    manual_mask = combine_masks(padding_mask, causal_mask, dtype=q.dtype)

    # The fused path, with the mask combined by hand.
    attn_fused = nnx_attention_fn(query=q, key=k, value=v, mask=manual_mask, is_causal=False, deterministic=True,
                                  module=None)

    class DummyModule(nnx.Module):
        pass

    # The weights path (a module to sow into), combining the padding mask with is_causal itself.
    def _run(m):
        return nnx_attention_fn(query=q, key=k, value=v, mask=padding_mask, is_causal=True, deterministic=True,
                                module=m)

    attn_manual, _ = nnx.capture(_run, nnx.Intermediate)(DummyModule())
    np.testing.assert_allclose(attn_fused, attn_manual, atol=1e-6)


# flax's test_nnx_attention_equivalence (class TestLinenConsistency): every product of these.
_CONSISTENCY = list(itertools.product([True, False], [jnp.float32, jnp.float16], [jnp.float32, jnp.float16],
                                      [Precision.DEFAULT, Precision.HIGH, Precision.HIGHEST], [True, False],
                                      [True, False]))


@pytest.mark.parametrize("use_bias,dtype,param_dtype,precision,decode,normalize_qk", _CONSISTENCY)
def test_nnx_attention_equivalence(use_bias, dtype, param_dtype, precision, decode, normalize_qk):
    num_heads, in_features, qkv_features, out_features = 2, 3, 6, 6
    x = jnp.ones((1, in_features))
    kwargs = dict(num_heads=num_heads, qkv_features=qkv_features, out_features=out_features, use_bias=use_bias,
                  dtype=dtype, param_dtype=param_dtype, precision=precision, decode=decode,
                  normalize_qk=normalize_qk)
    model_nnx = _mha(in_features=in_features, rngs=nnx.Rngs(42), **kwargs)
    model = linen.MultiHeadDotProductAttention(**kwargs)  # flax's own linen attention: the reference
    variables = model.init(jax.random.key(42), x)
    for qkvo in ("query", "key", "value", "out"):
        getattr(model_nnx, qkvo).kernel[...] = variables["params"][qkvo]["kernel"]
        if use_bias:
            getattr(model_nnx, qkvo).bias[...] = variables["params"][qkvo]["bias"]
    if decode:
        model_nnx.init_cache(x.shape, dtype=dtype)

    out_nnx = model_nnx(x)
    out, _ = model.apply(variables, x, mutable=["cache"])
    np.testing.assert_array_equal(out, out_nnx)


def test_varying_num_features():
    x = jnp.ones((1, 3))
    y = jax.random.normal(jax.random.key(42), (1, 4))
    layer = _mha(num_heads=2, in_features=3, qkv_features=6, out_features=6, in_kv_features=4, rngs=nnx.Rngs(42),
                 decode=False)
    assert layer(x, y) is not None


def test_gqa_shapes():
    B, T, S, D = 2, 4, 5, 8
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    query = jax.random.normal(k1, (B, T, 6, D))
    key = jax.random.normal(k2, (B, S, 3, D))
    value = jax.random.normal(k3, (B, S, 3, D))
    assert nnx_attention_fn(query, key, value).shape == (B, T, 6, D)


def test_gqa_invalid_heads():
    query = jnp.ones((1, 4, 5, 8))
    key = jnp.ones((1, 4, 2, 8))
    with pytest.raises(ValueError, match="must be a multiple"):
        nnx_attention_fn(query, key, key)


def test_gqa_multihead_attention():
    in_feat, n_heads, n_kv_heads, qkv_feat = 128, 32, 8, 2048
    head_dim = qkv_feat // n_heads
    model = _mha(num_heads=n_heads, in_features=in_feat, qkv_features=qkv_feat, num_kv_heads=n_kv_heads,
                 rngs=nnx.Rngs(0))
    assert model.query.kernel.shape == (in_feat, n_heads, head_dim)
    assert model.key.kernel.shape == (in_feat, n_kv_heads, head_dim)
    assert model.value.kernel.shape == (in_feat, n_kv_heads, head_dim)

    y = model(jnp.ones((1, 10, in_feat)), decode=False)
    assert y.shape == (1, 10, in_feat)

    model.init_cache((1, 10, in_feat))
    assert model.cached_key.shape == (1, 10, n_kv_heads, head_dim)
    y_token = model(jnp.ones((1, 1, in_feat)), decode=True)
    assert y_token.shape == (1, 1, in_feat)
    assert model.cache_index == 1


def test_gqa_parity_with_jax():
    class DummyModule(nnx.Module):
        pass

    B, T, S, D = 2, 8, 8, 16
    k1, k2, k3 = jax.random.split(jax.random.key(42), 3)
    query = jax.random.normal(k1, (B, T, 4, D))
    key = jax.random.normal(k2, (B, S, 2, D))
    value = jax.random.normal(k3, (B, S, 2, D))
    jax_out = jax.nn.dot_product_attention(query, key, value)
    nnx_out, _ = nnx.capture(lambda m: nnx_attention_fn(query, key, value, module=m), nnx.Intermediate)(DummyModule())
    np.testing.assert_allclose(nnx_out, jax_out, atol=1e-3, rtol=1e-3)


# ---------------------------------------------------------------- against nnx.dot_product_attention itself


def _qkv(batch=(2,), T=5, S=6, N=4, K=None, H=4, seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    K = K or N
    return (jax.random.normal(kq, (*batch, T, N, H)), jax.random.normal(kk, (*batch, S, K, H)),
            jax.random.normal(kv, (*batch, S, K, H)))


def _case(name):
    """``(q, k, v), kwargs``; every query row sees at least one key."""
    if name == "extra_batch_dims_gqa":
        q, k, v = _qkv(batch=(2, 3), K=2)
        keys_ok = jnp.arange(6) < (1 + jnp.arange(6) % 6).reshape(2, 3, 1)
        return (q, k, v), dict(mask=nnx.make_attention_mask(jnp.ones((2, 3, 5), bool), keys_ok))
    q, k, v = _qkv(K=2 if "gqa" in name else None)
    lengths = jnp.array([6, 3])
    padding = nnx.make_attention_mask(jnp.ones((2, 5), bool), jnp.arange(6) < lengths[:, None])  # float 0/1
    return (q, k, v), {
        "no_mask": {},
        "padding_mask": dict(mask=padding),
        "causal_and_padding": dict(is_causal=True, mask=padding.astype(bool)),
        "bias_mask_causal_gqa": dict(bias=jax.random.normal(jax.random.key(7), (2, 4, 5, 6)), mask=padding,
                                     is_causal=True),
    }[name]


class _Recorder:
    """Duck-typed stand-in for the module to sow into (selects the weights path of both functions)."""

    def __init__(self):
        self.sown = []

    def sow(self, col, name, value):
        self.sown.append((col, name, value))
        return True


class _Sink(nnx.Module):
    """An NNX module to sow into, under ``nnx.capture``."""


@pytest.mark.parametrize("sow", [False, True], ids=["fused_path", "weights_path"])
@pytest.mark.parametrize("case", ["no_mask", "padding_mask", "causal_and_padding", "bias_mask_causal_gqa",
                                  "extra_batch_dims_gqa"])
def test_values_and_grads_match_nnx(case, sow):
    (q, k, v), kwargs = _case(case)

    def loss(fn, q, k, v):
        module = _Recorder() if sow else None
        out = fn(q, k, v, dropout_rate=0.5, deterministic=True, module=module, **kwargs)
        return jnp.sum(jnp.sin(out)), out

    grad = jax.jit(jax.value_and_grad(loss, argnums=(1, 2, 3), has_aux=True), static_argnums=0)
    (l_ours, out_ours), g_ours = grad(nnx_attention_fn, q, k, v)
    (l_ref, out_ref), g_ref = grad(nnx.dot_product_attention, q, k, v)
    assert out_ours.shape == out_ref.shape == q.shape and out_ours.dtype == out_ref.dtype
    np.testing.assert_allclose(out_ours, out_ref, **TOL)
    np.testing.assert_allclose(l_ours, l_ref, **TOL)
    for a, b in zip(g_ours, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_sown_weights_equal_flaxs():
    (q, k, v), kwargs = _case("bias_mask_causal_gqa")
    run = lambda fn: nnx.capture(lambda m: fn(q, k, v, module=m, **kwargs), nnx.Intermediate)(_Sink())  # noqa: E731
    (out, ours), (out_ref, ref) = run(nnx_attention_fn), run(nnx.dot_product_attention)
    (w,), (w_ref,) = ours["attention_weights"], ref["attention_weights"]
    assert w.shape == w_ref.shape == (2, 4, 5, 6) and w.dtype == w_ref.dtype
    np.testing.assert_allclose(w, w_ref, **TOL)
    np.testing.assert_allclose(out, out_ref, **TOL)


def test_is_causal_through_multihead_attention():
    """The call that fails with the linen adapter: MultiHeadAttention passes is_causal to its attention_fn."""
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    kwargs = dict(num_heads=4, in_features=8, num_kv_heads=2, decode=False)
    ours, ref = _mha(rngs=nnx.Rngs(0), **kwargs), nnx.MultiHeadAttention(rngs=nnx.Rngs(0), **kwargs)
    with pytest.raises(TypeError, match="is_causal"):
        nnx.MultiHeadAttention(attention_fn=flax_attention_fn, rngs=nnx.Rngs(0), **kwargs)(x, is_causal=True)
    np.testing.assert_allclose(ours(x, is_causal=True), ref(x, is_causal=True), **TOL)
    # Causal: the output at position 2 does not depend on later inputs.
    changed = x.at[:, 3:].set(0.0)
    np.testing.assert_allclose(ours(changed, is_causal=True)[:, :3], ours(x, is_causal=True)[:, :3], **TOL)


@pytest.mark.parametrize("broadcast_dropout", [True, False])
def test_dropout_draws_flaxs_keep_mask(broadcast_dropout):
    """Same rngs, same bernoulli draw as flax: equal outputs in training, and dropout is really on."""
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    kwargs = dict(num_heads=4, in_features=8, num_kv_heads=2, decode=False, dropout_rate=0.5,
                  broadcast_dropout=broadcast_dropout)
    ours, ref = _mha(rngs=nnx.Rngs(0), **kwargs), nnx.MultiHeadAttention(rngs=nnx.Rngs(0), **kwargs)
    train, train_ref = ours(x, deterministic=False), ref(x, deterministic=False)
    np.testing.assert_allclose(train, train_ref, **TOL)
    assert not np.allclose(train, ours(x, deterministic=True), atol=1e-3)
    np.testing.assert_allclose(ours(x, deterministic=True), ref(x, deterministic=True), **TOL)


def test_fully_masked_row_is_zeros_where_flax_gives_the_mean():
    q, k, v = _qkv(batch=(1,))
    mask = jnp.ones((1, 1, 5, 6), bool).at[:, :, 2].set(False)  # query 2 sees no key
    out = nnx_attention_fn(q, k, v, mask=mask)
    ref = nnx.dot_product_attention(q, k, v, mask=mask)
    np.testing.assert_array_equal(out[:, 2], 0.0)
    np.testing.assert_allclose(ref[:, 2], v.mean(axis=1), **TOL)
    rows = np.array([0, 1, 3, 4])
    np.testing.assert_allclose(out[:, rows], ref[:, rows], **TOL)


def test_bad_arguments_name_themselves():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"mask must be broadcastable to .*\(2, 4, 5, 6\).*got shape"):
        nnx_attention_fn(q, k, v, mask=jnp.ones((2, 4, 6, 5), bool))
    with pytest.raises(ValueError, match=r"key and value lengths"):
        nnx_attention_fn(q, k, v[:, :5])
    with pytest.raises(ValueError, match=r"needs a dropout_rng"):
        nnx_attention_fn(q, k, v, dropout_rate=0.1, deterministic=False)
    with pytest.raises(ValueError, match=r"precision must be"):
        nnx_attention_fn(q, k, v, precision=("highest", "default"))


# ---------------------------------------------------------------- the zoo inside NNX code, through nnx.bridge


def _tokens():
    x = jax.nn.one_hot(jnp.array([[0, 1, 2, 3, 4, 0], [1, 1, 2, 0, 0, 0]]), 5)  # [B, L, V]
    return x, jnp.array([6, 3])


def test_zoo_transformer_inside_nnx_equals_linen_apply():
    model = build_model("transformer", 3, dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=32))
    x, lengths = _tokens()
    encoder = nnx.bridge.ToNNX(model, rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(encoder, x, seq_lengths=lengths)
    params = nnx.to_pure_dict(nnx.state(encoder, nnx.Param))  # the linen params tree, as NNX holds it
    ref = model.apply({"params": params}, x, seq_lengths=lengths)
    np.testing.assert_array_equal(encoder(x, seq_lengths=lengths), ref)
    np.testing.assert_allclose(nnx.jit(lambda m, x, n: m(x, seq_lengths=n))(encoder, x, lengths), ref, **TOL)


def test_zoo_transformer_trains_as_an_nnx_submodule():
    """Dropout and randomized positions draw from the NNX Rngs streams of the same names."""

    class Tagger(nnx.Module):
        def __init__(self, rngs):
            config = dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=32, dropout_rate=0.1,
                          randomized_positions=True, max_len=64)
            self.encoder = nnx.bridge.ToNNX(build_model("transformer", 8, config), rngs=rngs)
            self.head = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x, seq_lengths, train=False):
            return self.head(jax.nn.relu(self.encoder(x, seq_lengths=seq_lengths, train=train)))

    x, lengths = _tokens()
    targets = jnp.argmax(x, -1) % 3
    net = Tagger(nnx.Rngs(params=0, dropout=1, positions=2))
    nnx.bridge.lazy_init(net, x, lengths)
    optimizer = nnx.Optimizer(net, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(net, optimizer):
        def loss_fn(net):
            logits = net(x, lengths, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(net)
        optimizer.update(net, grads)
        return loss

    losses = [float(step(net, optimizer)) for _ in range(30)]
    assert all(np.isfinite(losses)) and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
