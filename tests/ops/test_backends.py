"""Back-end dispatch: the selection rule, clear errors for unavailable back ends, and the Pallas
GPU kernel run by the Pallas interpreter on CPU against the dense reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.ops import BlockSizes, dot_product_attention, select_implementation
from attnjax.ops import backends
from attnjax.ops.dense import dense_attention

F32, BF16 = jnp.float32, jnp.bfloat16


def _shapes(T, S, N=8, K=8, H=64):
    return (1, T, N, H), (1, S, K, H), (1, S, K, H)


@pytest.mark.parametrize("platform, T, dtype, options, expected", [
    ("cpu", 128, F32, {}, "dense"),
    ("cpu", 511, F32, {}, "dense"),
    ("cpu", 512, F32, {}, "blockwise"),
    ("cpu", 4096, BF16, {"has_mask": True, "is_causal": True}, "blockwise"),
    ("cpu", 4096, F32, {"dropout_rate": 0.1}, "blockwise"),
    ("cpu", 256, F32, {"dropout_rate": 0.1}, "dense"),
    ("gpu", 256, BF16, {"is_causal": True, "has_seq_lengths": True}, "cudnn"),
    ("gpu", 4096, F32, {}, "blockwise"),  # cuDNN flash attention has no float32 mode
    ("gpu", 4096, BF16, {"logit_softcap": 30.0}, "blockwise"),
    ("gpu", 4096, BF16, {"window": (8, 8)}, "blockwise"),
    ("gpu", 4096, BF16, {"window": (8, 8), "is_causal": True}, "cudnn"),
    ("gpu", 4096, BF16, {"dropout_rate": 0.1}, "blockwise"),
    ("tpu", 2048, BF16, {"is_causal": True, "dropout_rate": 0.1}, "blockwise"),
    ("rocm", 4096, BF16, {}, "blockwise"),
    ("tpu", 2048, BF16, {"is_causal": True}, "pallas"),
    ("tpu", 2048, BF16, {"has_mask": True}, "blockwise"),
    ("tpu", 1000, BF16, {}, "blockwise"),
    ("tpu", 256, BF16, {}, "dense"),
])
def test_select_implementation(platform, T, dtype, options, expected):
    assert select_implementation(platform, *_shapes(T, T), dtype, **options) == expected


def test_select_implementation_head_dims():
    q, k, v = _shapes(1024, 1024, H=72)
    assert select_implementation("gpu", q, k, v, BF16) == "cudnn"
    q, k, v = _shapes(1024, 1024, H=20)
    assert select_implementation("gpu", q, k, v, BF16) == "blockwise"
    q, k, _ = _shapes(1024, 1024)
    assert select_implementation("gpu", q, k, (1, 1024, 8, 32), BF16) == "blockwise"


def _qkv(T=16, S=16, N=2, K=2, H=8, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (jax.random.normal(ks[0], (2, T, N, H)), jax.random.normal(ks[1], (2, S, K, H)),
            jax.random.normal(ks[2], (2, S, K, H)))


def test_none_on_cpu_uses_blockwise_for_long_sequences(monkeypatch):
    q, k, v = _qkv(T=8, S=8)
    chosen = []
    original = backends.select_implementation

    def spy(*args, **kwargs):
        chosen.append(original(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(backends, "select_implementation", spy)
    dot_product_attention(q, k, v)
    big = jax.ShapeDtypeStruct((1, 512, 2, 8), jnp.float32)
    jax.eval_shape(lambda q: dot_product_attention(q, q, q, is_causal=True), big)
    assert chosen == (["dense", "blockwise"] if jax.default_backend() == "cpu" else chosen)


@pytest.mark.skipif(jax.default_backend() in ("gpu", "cuda"), reason="tests the error raised without a GPU")
def test_cudnn_without_gpu_is_a_clear_error():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=f"cudnn.*GPU.*{jax.default_backend()}"):
        dot_product_attention(q.astype(BF16), k.astype(BF16), v.astype(BF16), implementation="cudnn")


def test_cudnn_unsupported_options_are_named():
    q, k, v = _qkv()
    reason = backends.cudnn_unsupported_reason("gpu", q.shape, v.shape, F32)
    assert "float16 or bfloat16" in reason and "float32" in reason
    assert "logit_softcap" in backends.cudnn_unsupported_reason("gpu", q.shape, v.shape, BF16, logit_softcap=5.0)
    assert backends.cudnn_unsupported_reason("gpu", q.shape, v.shape, BF16, window=(4, 4), is_causal=True) is None
    assert "(left, 0)" in backends.cudnn_unsupported_reason("gpu", q.shape, v.shape, BF16, window=(4, 4))
    assert "dropout" in backends.cudnn_unsupported_reason("gpu", q.shape, v.shape, BF16, dropout_rate=0.5)


@pytest.mark.skipif(jax.default_backend() in ("gpu", "cuda", "rocm", "tpu"), reason="tests the CPU error")
def test_pallas_without_accelerator_is_a_clear_error():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="pallas.*GPU or TPU.*'cpu'.*pallas_interpret"):
        dot_product_attention(q, k, v, implementation="pallas")


@pytest.mark.parametrize("option, value", [("mask", jnp.ones((1, 1, 16, 16), bool)),
                                           ("bias", jnp.zeros((1, 1, 16, 16))),
                                           ("local_window_size", 3), ("logit_softcap", 2.0),
                                           ("key_value_seq_lengths", jnp.array([3, 16]))])
def test_pallas_unsupported_options_are_named(option, value):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=f"pallas_interpret.*{option.split('_seq')[0]}"):
        dot_product_attention(q, k, v, implementation="pallas_interpret", **{option: value})


def test_jax_nn_translation_matches_dense():
    """The cuDNN wrapper's argument translation and its zeroing of rows without keys, run through
    ``jax.nn``'s XLA implementation (the same call as on GPU, with implementation='xla')."""
    q, k, v = _qkv(T=12, S=12, N=4, K=2, seed=1)
    mask = jnp.ones((2, 1, 12, 12), bool).at[0, :, 5].set(False)
    bias = jax.random.normal(jax.random.PRNGKey(2), (1, 4, 12, 12))
    base = {"bias": None, "mask": None, "scale": None, "is_causal": False, "query_seq_lengths": None,
            "key_value_seq_lengths": None, "window": None}
    for options in [dict(is_causal=True, window=(3, 2), mask=mask),
                    dict(window=(4, 0), key_value_seq_lengths=jnp.array([0, 7])),  # batch 0: no key at all
                    dict(query_seq_lengths=jnp.array([5, 12]), key_value_seq_lengths=jnp.array([12, 6]), bias=bias)]:
        options = {**base, **options}
        got, want = jax.jit(lambda q, k, v: (backends._jax_nn_attention(q, k, v, jax_implementation="xla", **options),
                                             dense_attention(q, k, v, **options)))(q, k, v)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=str(options))


@pytest.mark.parametrize("T, S, N, K, causal, sizes", [
    (32, 32, 2, 2, True, BlockSizes(16, 16)),
    # T == S not a block multiple: padded keys hidden by segment ids.
    pytest.param(24, 24, 4, 2, False, BlockSizes(16, 16), marks=pytest.mark.slow),
    pytest.param(16, 32, 2, 1, False, BlockSizes(16, 16), marks=pytest.mark.slow),
])
def test_pallas_interpret_matches_dense(T, S, N, K, causal, sizes):
    """The GPU Pallas kernel (forward and its backward kernels) in the interpreter, against dense.

    The interpreter runs every grid step through JAX ops (~10 s per case here), hence one fast case."""
    q, k, v = _qkv(T=T, S=S, N=N, K=K, H=16, seed=3)
    cot = jax.random.normal(jax.random.PRNGKey(4), q.shape)

    def run(implementation, extra):
        f = lambda q, k, v: jnp.sum(dot_product_attention(q, k, v, is_causal=causal,
                                                          implementation=implementation, **extra) * cot)
        return jax.value_and_grad(f, argnums=(0, 1, 2))(q, k, v)

    (val_p, grads_p), (val_d, grads_d) = run("pallas_interpret", {"block_sizes": sizes}), run("dense", {})
    np.testing.assert_allclose(val_p, val_d, rtol=1e-5)
    for gp, gd in zip(grads_p, grads_d):
        np.testing.assert_allclose(gp, gd, atol=1e-4)


def test_pallas_interpret_needs_divisible_keys_when_lengths_differ():
    q, k, v = _qkv(T=16, S=24)
    with pytest.raises(ValueError, match="multiple of block_k"):
        dot_product_attention(q, k, v, implementation="pallas_interpret", block_sizes=BlockSizes(16, 16))
