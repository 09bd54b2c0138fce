"""BaseConv, Hyena and Based LMs: shapes, causality by gradient, FFT = direct long convolution (values and
gradients), the Based layers against their formulas, config errors, a real size, and training on tiny MQAR."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attnjax.nn import build_model
from attnjax.nn.mixer_lm import BaseConvConfig, BasedConfig, HyenaConfig
from attnjax.nn.mixers import BaseConv, Hyena, ImplicitFilter, SlidingWindowAttention, TaylorLinearAttention
from attnjax.ops.linear import taylor_exp_feature_map
from tests.nn.training import JIT

B, L, V = 2, 8, 5
# max_len > L: the long filters are laid out over 16 positions and cut to 8.
TINY = {
    "base_conv": dict(d_model=16, max_len=16, kernel_sizes=(3, -1)),
    "hyena": dict(d_model=16, max_len=16, filter_order=8),
    "based": dict(d_model=16, max_len=16, feature_dim=4, num_heads=2, window_size=2),
}
NAMES = sorted(TINY)


def _ids(length=L, seed=0, batch=B):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, V)


@functools.lru_cache(maxsize=None)
def _built(name):
    """The tiny model and its parameters, initialized once per name; variants built from the same fields
    (ids, tied read-out, the long-convolution method) reuse them."""
    model = build_model(name, V, TINY[name])
    return model, JIT(model.init)(jax.random.key(0), jax.nn.one_hot(_ids(), V))


def _variant(name, **fields):
    return build_model(name, V, {**TINY[name], **fields})


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtype_ids_and_tied_read_out(name):
    model, params = _built(name)
    ids_model, tied = _variant(name, vocab_size=V), _variant(name, tie_embeddings=True)
    tied_params = {"params": {k: v for k, v in params["params"].items() if k != "logits"}}
    assert jax.tree.structure(tied_params) == jax.tree.structure(jax.eval_shape(tied.init, jax.random.key(0),
                                                                                jax.nn.one_hot(_ids(), V)))

    def run(p, tp, ids):
        x = jax.nn.one_hot(ids, V)
        tied_out, state = tied.apply(tp, x, capture_intermediates=lambda m, _: m.name == "final_norm",
                                     mutable=["intermediates"])
        hidden = state["intermediates"]["final_norm"]["__call__"][0]  # [B, L, D]
        return model.apply(p, x), ids_model.apply(p, ids), tied_out, hidden

    out, from_ids, from_tied, hidden = JIT(run)(params, tied_params, _ids())
    assert out.shape == (B, L, V) and out.dtype == jnp.float32 and np.all(np.isfinite(out))
    np.testing.assert_allclose(from_ids, out, rtol=1e-6, atol=1e-6)  # ids embed as their one-hot vectors
    np.testing.assert_allclose(from_tied, hidden @ params["params"]["embed"].T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, method", [("base_conv", "direct"), ("hyena", "direct"), ("based", None),
                                          ("base_conv", "fft"), ("hyena", "fft")])
def test_position_t_never_sees_later_tokens(name, method):
    """Exactly zero gradient from later tokens (the direct long convolution, and Based, whose attentions mask
    exactly); the FFT lets them in at float32 rounding level only. Every earlier token is seen."""
    _, params = _built(name)
    model = _variant(name, **({} if method is None else {"long_conv_method": method}))
    x = jax.nn.one_hot(_ids(), V)
    # jacrev of one example's logits summed over classes: [L (output t), L (input s), V]
    jac = JIT(jax.jacrev(lambda inputs: model.apply(params, inputs)[0].sum(-1)))(x)[:, 0]
    size = np.abs(np.asarray(jac)).sum(-1)  # [t, s]
    later = np.triu(np.ones((L, L), bool), 1)
    if method == "fft":
        assert size[later].max() < 1e-5 * size[~later].min(), (size[later].max(), size[~later].min())
    else:
        np.testing.assert_array_equal(size[later], 0.0)
    assert np.all(size[~later] > 0), size


@pytest.mark.parametrize("name", ["base_conv", "hyena"])
def test_fft_long_convolution_equals_direct_values_and_gradients(name):
    fft, params = _built(name)
    direct = _variant(name, long_conv_method="direct")  # same parameters
    x = jax.nn.one_hot(_ids(), V)
    r = jax.random.normal(jax.random.key(3), (B, L, V))

    def value_and_grads(model, p, inputs):
        return jax.value_and_grad(lambda p, inputs: jnp.sum(model.apply(p, inputs) * r), (0, 1))(p, inputs)

    (out, grads), (want, want_grads) = JIT(lambda p, x: (value_and_grads(fft, p, x), value_and_grads(direct, p, x)))(
        params, x)
    np.testing.assert_allclose(out, want, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-5 * np.max(np.abs(w)))


def test_taylor_features_give_the_second_order_taylor_kernel():
    q, k = np.asarray(jax.random.normal(jax.random.key(0), (2, 5, 6)))
    z = np.sum(q * k, -1) / np.sqrt(6)
    phi_q, phi_k = JIT(lambda q, k: (taylor_exp_feature_map(q), taylor_exp_feature_map(k)))(q, k)
    dot = np.sum(np.asarray(phi_q) * np.asarray(phi_k), -1)
    assert phi_q.shape == (5, 1 + 6 + 36)
    np.testing.assert_allclose(dot, 1 + z + z ** 2 / 2, rtol=1e-5, atol=1e-5)


def test_based_layers_are_their_quadratic_formulas():
    """Taylor linear attention (``attnjax.ops`` linear attention, chunked) equals its causal quadratic form;
    the sliding window gives exactly zero gradient outside keys ``t - window .. t``."""
    u = jax.random.normal(jax.random.key(1), (1, 12, 8))
    layer = TaylorLinearAttention(feature_dim=3, num_heads=2, init_std=0.5)
    p = JIT(layer.init)(jax.random.key(2), u)["params"]
    q = (u @ p["query"]["kernel"]).reshape(1, 12, 2, 3)
    k = (u @ p["key"]["kernel"]).reshape(1, 12, 2, 3)
    v = (u @ p["value"]["kernel"]).reshape(1, 12, 2, 4)
    z = jnp.einsum("btnf,bsnf->bnts", q, k) / np.sqrt(3)
    w = jnp.tril(1 + z + z ** 2 / 2)
    y = jnp.einsum("bnts,bsnh->btnh", w / w.sum(-1, keepdims=True), v).reshape(1, 12, 8)
    np.testing.assert_allclose(JIT(layer.apply)({"params": p}, u), y @ p["out"]["kernel"], rtol=1e-4, atol=1e-5)

    window = SlidingWindowAttention(window_size=3, num_heads=2, init_std=0.5, out_std=0.5)
    wp = JIT(window.init)(jax.random.key(3), u)
    size = np.abs(np.asarray(JIT(jax.jacrev(lambda x: window.apply(wp, x)[0].sum(-1)))(u)[:, 0])).sum(-1)
    t, s = np.indices((12, 12))
    np.testing.assert_array_equal(size[(s > t) | (s < t - 3)], 0.0)
    assert np.all(size[(s <= t) & (s >= t - 3)] > 0)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"kernel_sizes must be .* each -1 .* or 1..max_len=16 taps, got \(3, 0\)"):
        BaseConvConfig(max_len=16, kernel_sizes=(3, 0))
    with pytest.raises(ValueError, match=r"kernel_sizes .* got \(32,\)"):
        BaseConvConfig(max_len=16, kernel_sizes=(32,))
    assert BaseConvConfig(kernel_sizes=[3, -1]).kernel_sizes == (3, -1)  # a list from a config file
    with pytest.raises(ValueError, match="filter_emb_dim must be odd"):
        HyenaConfig(filter_emb_dim=4)
    with pytest.raises(ValueError, match="filter_order must be an int >= 1, got 0"):
        HyenaConfig(filter_order=0)
    with pytest.raises(ValueError, match=r"long_conv_method must be one of \['direct', 'fft'\], got 'fast'"):
        HyenaConfig(long_conv_method="fast")
    with pytest.raises(ValueError, match="d_model=30 must be divisible by num_heads=4"):
        BasedConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match=r"layer_mixers must be .* from \('base_conv', 'linear', 'window'\), "
                                         r"got \('linear', 'softmax'\)"):
        BasedConfig(layer_mixers=("linear", "softmax"))
    with pytest.raises(ValueError, match="embed_dropout must be a number in"):
        BasedConfig(embed_dropout=1.0)
    with pytest.raises(TypeError, match=r"unknown config field\(s\) \['l_max'\] for model 'hyena'"):
        build_model("hyena", V, dict(l_max=64))
    with pytest.raises(ValueError, match="length L=20 > config max_len=16"):
        jax.eval_shape(_variant("hyena").init, jax.random.key(0), jax.nn.one_hot(_ids(20), V))
    with pytest.raises(ValueError, match="tie_embeddings needs output_size == V.*output_size=3, V=5"):
        jax.eval_shape(build_model("based", 3, {**TINY["based"], "tie_embeddings": True}).init, jax.random.key(0),
                       jax.nn.one_hot(_ids(), V))


def test_mixer_errors_name_the_argument():
    u = jnp.zeros((1, 20, 6))

    def init(layer, *args):
        return jax.eval_shape(layer.init, jax.random.key(0), *args)

    with pytest.raises(ValueError, match="sequence length L=20 exceeds max_len=16"):
        init(Hyena(max_len=16), u)
    with pytest.raises(ValueError, match=r"kernel_size \(or -1: a long convolution\) must be an int >= 1, got 0"):
        init(BaseConv(kernel_size=0, max_len=32), u)
    with pytest.raises(ValueError, match=r"width D=6 of u \[B, L, D\] must be divisible by num_heads=4"):
        init(TaylorLinearAttention(feature_dim=2, num_heads=4), u)
    with pytest.raises(ValueError, match="emb_dim must be odd"):
        ImplicitFilter(channels=4, order=8, emb_dim=4, max_len=32).init(jax.random.key(0), 8)  # a static length
    with pytest.raises(ValueError, match=r"u must have rank 3 \[B, L, D\], got shape \(20, 6\)"):
        init(SlidingWindowAttention(window_size=2), u[0])


def test_real_size_runs():
    """Length 256, width 128, vocabulary 8,192 as integer ids: every model runs, finite."""
    ids = jax.random.randint(jax.random.key(0), (1, 256), 0, 8192)
    for name in NAMES:
        model = build_model(name, 8192, dict(d_model=128, max_len=256, vocab_size=8192, tie_embeddings=True))
        out = JIT(lambda x, m=model: m.apply(m.init(jax.random.key(0), x), x))(ids)
        assert out.shape == (1, 256, 8192) and bool(jnp.all(jnp.isfinite(out))), name


def _mqar(n, pairs=4, keys=8, seed=0):
    """Tiny multi-query associative recall: ``k1 v1 .. kP vP`` then the P keys again in a random order; the
    targets are their values. Keys ``0..keys-1``, values ``keys..2 keys-1``; only the queries are scored."""
    r = np.random.default_rng(seed)
    k = np.stack([r.permutation(keys)[:pairs] for _ in range(n)])
    v = r.integers(keys, 2 * keys, (n, pairs))
    order = np.stack([r.permutation(pairs) for _ in range(n)])
    ids = np.concatenate([np.stack([k, v], -1).reshape(n, 2 * pairs), np.take_along_axis(k, order, 1)], 1)
    labels = np.concatenate([np.zeros((n, 2 * pairs), int), np.take_along_axis(v, order, 1)], 1)
    weights = np.concatenate([np.zeros((n, 2 * pairs)), np.ones((n, pairs))], 1)
    return jnp.asarray(ids), jnp.asarray(labels), jnp.asarray(weights, jnp.float32)


@pytest.mark.slow
@pytest.mark.parametrize("name, fields", [
    ("base_conv", {}),
    ("hyena", dict(filter_order=16)),
    ("based", dict(feature_dim=4, window_size=2)),  # a window of 2 cannot reach the pairs: linear attention must
])
def test_recalls_tiny_mqar_below_stated_loss(name, fields):
    """64 sequences of 4 key-value pairs and 4 queries (length 12, 16 tokens), width 32, 2 layers (Based: 3),
    150 full-batch Adam steps at 1e-2: the query cross-entropy falls from > 2.5 (chance over the 16 tokens is
    ln 16 = 2.77) to < 0.1."""
    ids, labels, weights = _mqar(64)
    model = build_model(name, 16, dict(d_model=32, max_len=12, vocab_size=16, embed_dropout=0.0, **fields))
    params = model.init(jax.random.key(0), ids)["params"]
    opt = optax.adam(1e-2)

    @JIT
    def step(params, state):
        def loss_fn(p):
            ce = optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, ids), labels)
            return jnp.sum(ce * weights) / jnp.sum(weights)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    state, losses = opt.init(params), []
    for _ in range(150):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    assert losses[0] > 2.5 and losses[-1] < 0.1, losses[::15]
