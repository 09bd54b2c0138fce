"""Blockwise (flash-style) attention against the dense reference: values, gradients, memory.

Compiling (dense + blockwise, forward + backward) dominates every case, so a core set runs by default
and the remaining option combinations are marked ``slow`` (they still run in CI: ``pytest -m slow``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.ops import BlockSizes, Visibility, attention_weights, dot_product_attention, segment_mask
from attnjax.ops.primitives import weighted_values
from attnjax.ops import blockwise_kernels as kernels

SMALL = BlockSizes(block_q=8, block_k=16)


def _inputs(seed, B, T, S, N, K, H, Hv=None, dtype=jnp.float32):
    ks = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = jax.random.normal(ks[0], (B, T, N, H), jnp.float32).astype(dtype)
    k = jax.random.normal(ks[1], (B, S, K, H), jnp.float32).astype(dtype)
    v = jax.random.normal(ks[2], (B, S, K, Hv or H), jnp.float32).astype(dtype)
    # A fixed random cotangent, so gradients test every output entry with its own weight.
    cot = jax.random.normal(ks[3], (B, T, N, Hv or H), jnp.float32)
    return q, k, v, cot


def _value_and_grads(implementation, q, k, v, cot, bias=None, block_sizes=None, **kwargs):
    extra = {} if block_sizes is None else {"block_sizes": block_sizes}

    def loss(q, k, v, bias):
        out = dot_product_attention(q, k, v, bias, implementation=implementation, **extra, **kwargs)
        return jnp.sum(out.astype(jnp.float32) * cot), out

    argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
    (_, out), grads = jax.value_and_grad(loss, argnums=argnums, has_aux=True)(q, k, v, bias)
    return out, grads


def _assert_matches_dense(q, k, v, cot, bias=None, block_sizes=SMALL, atol=1e-5, grad_atol=1e-4, **kwargs):
    # One jitted program computes both paths: compiling dominates these tests' run time.
    @jax.jit
    def both(q, k, v, cot, bias):
        return (_value_and_grads("dense", q, k, v, cot, bias, **kwargs),
                _value_and_grads("blockwise", q, k, v, cot, bias, block_sizes=block_sizes, **kwargs))

    (out_d, grads_d), (out_b, grads_b) = both(q, k, v, cot, bias)
    assert out_b.shape == out_d.shape and out_b.dtype == out_d.dtype
    np.testing.assert_allclose(np.asarray(out_b, np.float32), np.asarray(out_d, np.float32), atol=atol, rtol=0)
    for name, gb, gd in zip("qkv" + "b", grads_b, grads_d):
        assert gb.shape == gd.shape, name
        assert np.all(np.isfinite(np.asarray(gb, np.float32))), name
        np.testing.assert_allclose(np.asarray(gb, np.float32), np.asarray(gd, np.float32), atol=grad_atol, rtol=0,
                                   err_msg=f"gradient wrt {name}")


# (T, S, N, K, options): T and S are deliberately not multiples of the 8/16 blocks.
CASES = {
    "gqa_4_2": (37, 29, 4, 2, {}),
    "causal_T_gt_S_mqa": (40, 21, 4, 1, {"is_causal": True}),
    "causal_T_lt_S_softcap_scale": (13, 35, 2, 2, {"is_causal": True, "logit_softcap": 1.5, "scale": 0.3}),
    "window": (33, 27, 2, 2, {"local_window_size": (5, 3)}),
    "window_causal_seq_lengths": (30, 30, 4, 2, {"local_window_size": 6, "is_causal": True,
                                                 "query_seq_lengths": np.array([17, 30]),
                                                 "key_value_seq_lengths": np.array([30, 9])}),
    "seq_lengths": (29, 38, 2, 2, {"query_seq_lengths": np.array([29, 7]),
                                    "key_value_seq_lengths": np.array([20, 38])}),
}
FAST_CASES = ("gqa_4_2", "window_causal_seq_lengths")


@pytest.mark.parametrize("case", [c if c in FAST_CASES else pytest.param(c, marks=pytest.mark.slow)
                                  for c in sorted(CASES)])
def test_matches_dense(case):
    T, S, N, K, options = CASES[case]
    q, k, v, cot = _inputs(0, 2, T, S, N, K, 8)
    _assert_matches_dense(q, k, v, cot, **options)


@pytest.mark.parametrize("bias_shape, mask_shape", [
    ((2, 4, 27, 33), None),
    pytest.param((1, 4, 27, 1), (2, 1, 1, 33), marks=pytest.mark.slow),
    pytest.param((2, 1, 1, 33), (1, 4, 27, 1), marks=pytest.mark.slow),
    pytest.param(None, (2, 4, 27, 33), marks=pytest.mark.slow),
])
def test_bias_and_mask_shapes(bias_shape, mask_shape):
    """Bias gradients come back in the bias's own broadcast shape; masks broadcast along any axis."""
    q, k, v, cot = _inputs(1, 2, 27, 33, 4, 2, 8)
    bias = None if bias_shape is None else jax.random.normal(jax.random.PRNGKey(7), bias_shape)
    mask = None if mask_shape is None else jax.random.bernoulli(jax.random.PRNGKey(3), 0.7, mask_shape)
    _assert_matches_dense(q, k, v, cot, bias=bias, mask=mask, is_causal=bias_shape is not None,
                          local_window_size=(12, 4) if mask_shape is not None else None)


def test_bias_mask_softcap_window_together():
    q, k, v, cot = _inputs(3, 1, 34, 34, 4, 2, 8)
    bias = jax.random.normal(jax.random.PRNGKey(4), (1, 4, 34, 34))
    mask = jax.random.bernoulli(jax.random.PRNGKey(5), 0.8, (1, 1, 34, 34))
    _assert_matches_dense(q, k, v, cot, bias=bias, mask=mask, logit_softcap=2.0, local_window_size=(7, 2),
                          query_seq_lengths=np.array([30]), key_value_seq_lengths=np.array([31]))


def test_fully_masked_rows_are_zero_with_zero_finite_gradients():
    q, k, v, cot = _inputs(4, 2, 20, 20, 2, 2, 8)
    mask = jnp.ones((2, 1, 20, 20), bool).at[:, :, 3].set(False).at[1, :, 10:].set(False)
    lengths = np.array([20, 0])  # batch 1 has no key at all
    out, grads = jax.jit(lambda q, k, v, cot: _value_and_grads(
        "blockwise", q, k, v, cot, mask=mask, block_sizes=SMALL, key_value_seq_lengths=lengths))(q, k, v, cot)
    assert np.all(np.asarray(out[:, 3]) == 0) and np.all(np.asarray(out[1]) == 0)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    assert np.all(np.asarray(grads[0][:, 3]) == 0) and np.all(np.asarray(grads[0][1]) == 0)
    assert np.all(np.asarray(grads[1][1]) == 0) and np.all(np.asarray(grads[2][1]) == 0)


@pytest.mark.slow
def test_window_rows_without_keys():
    """T > S with a tight window: late queries see no key at all (their key-block range is empty)."""
    q, k, v, cot = _inputs(5, 1, 40, 12, 2, 2, 8)
    _assert_matches_dense(q, k, v, cot, local_window_size=(3, 1))


@pytest.mark.slow
@pytest.mark.parametrize("sizes", [BlockSizes(7, 5), BlockSizes()])
def test_block_sizes(sizes):
    q, k, v, cot = _inputs(6, 1, 26, 19, 4, 2, 8)
    _assert_matches_dense(q, k, v, cot, block_sizes=sizes, is_causal=True)


@pytest.mark.slow
def test_default_block_sizes_on_several_blocks():
    """Default blocks with T, S past one block and not multiples of it."""
    q, k, v, cot = _inputs(11, 1, 600, 530, 2, 1, 16)
    _assert_matches_dense(q, k, v, cot, block_sizes=BlockSizes(), is_causal=True)


@pytest.mark.slow
def test_value_head_dim_differs():
    q, k, v, cot = _inputs(7, 1, 18, 22, 2, 1, 8, Hv=12)
    _assert_matches_dense(q, k, v, cot)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_no_worse_than_dense(dtype):
    """bf16/f16 inputs: both paths round the probabilities to the input dtype before the PV matmul, in
    different orders, so they cannot agree to float32 accuracy. Each is compared with the float32
    result on the same (rounded) inputs: the blockwise error must stay within 2x the dense error
    (plus one ulp-scale slack), and the output keeps the input dtype."""
    q, k, v, cot = _inputs(8, 1, 37, 29, 4, 2, 16, dtype=dtype)

    @jax.jit
    def three(q, k, v, cot):
        opts = {"is_causal": True}
        return (_value_and_grads("dense", *(x.astype(jnp.float32) for x in (q, k, v)), cot, **opts),
                _value_and_grads("dense", q, k, v, cot, **opts),
                _value_and_grads("blockwise", q, k, v, cot, block_sizes=SMALL, **opts))

    (ref, ref_grads), (out_d, grads_d), (out_b, grads_b) = three(q, k, v, cot)
    assert out_b.dtype == dtype
    eps = float(jnp.finfo(dtype).eps)
    err = lambda a, b: float(jnp.max(jnp.abs(a.astype(jnp.float32) - b)))
    assert err(out_b, ref) <= 2 * err(out_d, ref) + eps
    for gb, gd, gr in zip(grads_b, grads_d, ref_grads):
        scale = float(jnp.max(jnp.abs(gr)))
        assert err(gb, gr) <= 2 * err(gd, gr) + eps * scale


def _blockwise_dropout_multiplier(rate, rng, B, T, S, N, K, block_sizes):
    """The ``[B, N, T, S]`` keep / (1 - rate) that the blockwise path draws, assembled block by block."""
    G, bq, bk = N // K, min(block_sizes.block_q, T), min(block_sizes.block_k, S)
    nq, nk = -(-T // bq), -(-S // bk)
    rows = [[kernels.dropout_multiplier(rate, rng, i, j, (B, K, G * bq, bk)).reshape(B, K, G, bq, bk)
             for j in range(nk)] for i in range(nq)]
    full = jnp.concatenate([jnp.concatenate(row, axis=-1) for row in rows], axis=-2)  # [B, K, G, Tp, Sp]
    return full.reshape(B, N, nq * bq, nk * bk)[:, :, :T, :S]


@pytest.mark.parametrize("kwargs", [{}, {"is_causal": True, "key_value_seq_lengths": jnp.array([13, 6])}])
def test_dropout_equals_the_reference_with_the_same_keep_mask(kwargs):
    """Values and gradients equal ``(softmax weights * Z) V`` for the multiplier ``Z`` that the blocks
    draw; T, S not multiples of the blocks, grouped-query heads."""
    B, T, S, N, K, H, rate = 2, 10, 13, 4, 2, 8, 0.3
    q, k, v, cot = _inputs(21, B, T, S, N, K, H)
    rng = jax.random.PRNGKey(5)
    z = _blockwise_dropout_multiplier(rate, rng, B, T, S, N, K, SMALL)

    def blockwise(q, k, v):
        return dot_product_attention(q, k, v, implementation="blockwise", block_sizes=SMALL, dropout_rate=rate,
                                     dropout_rng=rng, **kwargs)

    def reference(q, k, v):
        weights = attention_weights(q, k, **kwargs) * z
        return weighted_values(weights, v).astype(q.dtype)

    out, pull = jax.vjp(blockwise, q, k, v)
    ref, ref_pull = jax.vjp(reference, q, k, v)
    grads, ref_grads = pull(cot), ref_pull(cot)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, atol=1e-4, rtol=1e-4)
    assert 0.2 < float(jnp.mean(z == 0)) < 0.4  # about `rate` of the weights dropped
    no_dropout = dot_product_attention(q, k, v, implementation="blockwise", block_sizes=SMALL, **kwargs)
    assert float(jnp.max(jnp.abs(out - no_dropout))) > 1e-2


def test_dropout_needs_a_key():
    q, k, v, _ = _inputs(9, 1, 8, 8, 2, 2, 8)
    with pytest.raises(ValueError, match="dropout_rng"):
        dot_product_attention(q, k, v, implementation="blockwise", dropout_rate=0.1)


@pytest.mark.parametrize("bad", [0, -4, 2.5, True])
def test_bad_block_sizes(bad):
    with pytest.raises(ValueError, match="block_q"):
        BlockSizes(block_q=bad)


def test_block_sizes_as_a_pair_equal_block_sizes():
    q, k, v, _ = _inputs(9, 1, 20, 20, 2, 2, 8)
    pair = dot_product_attention(q, k, v, implementation="blockwise", block_sizes=(8, 16), is_causal=True)
    named = dot_product_attention(q, k, v, implementation="blockwise", block_sizes=SMALL, is_causal=True)
    np.testing.assert_array_equal(pair, named)


@pytest.mark.parametrize("implementation", ["dense", "xla", "blockwise", None])
def test_one_partial_sweeps_every_implementation(implementation):
    """Paths without tiles ignore block_sizes, so a partial with it runs on every implementation."""
    import functools

    q, k, v, _ = _inputs(9, 1, 8, 8, 2, 2, 8)
    attend = functools.partial(dot_product_attention, block_sizes=(8, 8), is_causal=True)
    np.testing.assert_allclose(attend(q, k, v, implementation=implementation),
                               dot_product_attention(q, k, v, implementation="dense", is_causal=True), atol=1e-6)


@pytest.mark.parametrize("bad", [(8,), (0, 8), (8, 2.5), "8x8", BlockSizes])
@pytest.mark.parametrize("implementation", ["dense", "blockwise"])
def test_bad_block_sizes_are_named_on_every_path(bad, implementation):
    q, k, v, _ = _inputs(9, 1, 8, 8, 2, 2, 8)
    with pytest.raises(ValueError, match=r"block_sizes must be an attnjax.ops.BlockSizes or a \(block_q, block_k\) "
                                         r"pair of ints >= 1, got "):
        dot_product_attention(q, k, v, implementation=implementation, block_sizes=bad)


def test_jit_compiles_once_and_block_sizes_are_static():
    q, k, v, _ = _inputs(10, 1, 24, 24, 2, 2, 8)
    f = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, implementation="blockwise", block_sizes=SMALL,
                                                      is_causal=True))
    f(q, k, v)
    out = f(2.0 * q, k, v)
    assert f._cache_size() == 1
    np.testing.assert_allclose(out, dot_product_attention(2.0 * q, k, v, is_causal=True), atol=1e-5)


def _config(T, S, bq, bk, is_causal=False, window=None):
    return kernels.Config(T=T, S=S, G=1, bq=bq, bk=bk, scale=1.0, visibility=Visibility(is_causal, window),
                          logit_softcap=None)


def test_causal_skips_blocks_above_the_diagonal():
    cfg = _config(64, 64, 16, 16, is_causal=True)
    ranges = [tuple(int(x) for x in kernels.key_block_range(cfg, i, None)) for i in range(4)]
    assert ranges == [(0, 1), (0, 2), (0, 3), (0, 4)]  # 10 of 16 blocks visited
    ranges = [tuple(int(x) for x in kernels.query_block_range(cfg, j, None, None)) for j in range(4)]
    assert ranges == [(0, 4), (1, 4), (2, 4), (3, 4)]


def test_window_and_lengths_skip_blocks():
    cfg = _config(64, 64, 16, 16, window=(16, 0))
    assert [tuple(int(x) for x in kernels.key_block_range(cfg, i, None)) for i in range(4)] == [
        (0, 1), (0, 2), (1, 3), (2, 4)]
    cfg = _config(64, 64, 16, 16)
    assert tuple(int(x) for x in kernels.key_block_range(cfg, 2, jnp.array([5, 20]))) == (0, 2)
    assert tuple(int(x) for x in kernels.query_block_range(cfg, 3, jnp.array([40, 3]), jnp.array([64, 64]))) == (0, 3)
    lo, hi = kernels.query_block_range(cfg, 3, None, jnp.array([30, 40]))
    assert int(hi) == int(lo)  # no sequence reaches key block 3


def _temp_bytes(fn, *args):
    return fn.lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_compiled_temporary_memory_is_far_below_dense():
    """Forward+backward at T=S=2048, N=4: dense holds several [B, N, T, S] float32 buffers (64 MiB each);
    blockwise must stay O(T) (compile only, nothing is executed)."""
    shape = jax.ShapeDtypeStruct((1, 2048, 4, 32), jnp.float32)

    def grad_fn(implementation):
        def loss(q, k, v):
            return jnp.sum(dot_product_attention(q, k, v, implementation=implementation, is_causal=True))
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))

    dense = _temp_bytes(grad_fn("dense"), shape, shape, shape)
    blockwise = _temp_bytes(grad_fn("blockwise"), shape, shape, shape)
    assert dense >= 64 * 2**20
    assert blockwise * 16 <= dense, (blockwise, dense)


@pytest.mark.slow
def test_inside_shard_map_with_replicated_bias():
    """Under jax.shard_map (VMA check on): loop carries must carry the inputs' varying axes, and the
    gradient of a replicated bias is the sum of the per-device gradients."""
    from jax.sharding import Mesh, PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
    q, k, v, cot = _inputs(12, 4, 20, 20, 2, 1, 8)
    bias = jax.random.normal(jax.random.PRNGKey(13), (1, 2, 20, 20))

    def attend(q, k, v, bias):
        return dot_product_attention(q, k, v, bias, implementation="blockwise", block_sizes=SMALL, is_causal=True)

    sharded = jax.shard_map(attend, mesh=mesh, in_specs=(P("data"), P("data"), P("data"), P()), out_specs=P("data"))
    loss = lambda f: (lambda q, k, v, bias: jnp.sum(f(q, k, v, bias) * cot))
    got = jax.jit(jax.value_and_grad(loss(sharded), argnums=(0, 1, 2, 3)))(q, k, v, bias)
    want = jax.jit(jax.value_and_grad(loss(attend), argnums=(0, 1, 2, 3)))(q, k, v, bias)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_vmap_with_batched_lengths():
    """Per-example key lengths under vmap make the loop bounds batched; results must still match dense."""
    q = jax.random.normal(jax.random.PRNGKey(14), (3, 1, 20, 2, 8))
    lengths = jnp.array([[5], [20], [0]])

    def loss(implementation, **extra):
        return lambda q, n: jnp.sum(dot_product_attention(q, q, q, is_causal=True, key_value_seq_lengths=n,
                                                          implementation=implementation, **extra) ** 2)

    got = jax.jit(jax.vmap(jax.value_and_grad(loss("blockwise", block_sizes=SMALL))))(q, lengths)
    want = jax.jit(jax.vmap(jax.value_and_grad(loss("dense"))))(q, lengths)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4)


@pytest.mark.slow
def test_blockwise_passes_the_conformance_kit():
    """The kit's shapes (T, S <= 4) with 2x3 blocks cover several query and key blocks, padded ones
    included, for every property: masks, causality, extreme logits, masked rows, bf16/f16, and
    equality with the dense path in values and jacobians."""
    import functools

    from attnjax.testing import check_attention

    check_attention(functools.partial(dot_product_attention, implementation="blockwise",
                                      block_sizes=BlockSizes(block_q=2, block_k=3)),
                    exact_softmax=True, mask_kind="full")


# --------------------------------------------------------------------------- forward mode (issue 24)

def _jvp_both(q, k, v, bias, tangents, block_sizes=SMALL, **kwargs):
    """``(output, residual)`` and their tangents, blockwise and dense, in one jitted program."""
    def attend(implementation, **extra):
        return lambda q, k, v, bias: dot_product_attention(q, k, v, bias, implementation=implementation,
                                                          return_residual=True, **extra, **kwargs)

    @jax.jit
    def both(q, k, v, bias, tangents):
        return (jax.jvp(attend("blockwise", block_sizes=block_sizes), (q, k, v, bias), tangents),
                jax.jvp(attend("dense"), (q, k, v, bias), tangents))

    return both(q, k, v, bias, tangents)


@pytest.mark.parametrize("kwargs", [
    {},
    {"is_causal": True, "logit_softcap": 1.5, "scale": 0.3, "local_window_size": (9, 2),
     "key_value_seq_lengths": np.array([21, 7])},
], ids=["plain_gqa", "causal_softcap_window_lengths"])
def test_jvp_matches_dense_in_values_and_tangents(kwargs):
    """jax.jvp through the blockwise kernel (several query and key blocks, padded ones and skipped ones
    included) with tangents on query, key, value and bias at once: outputs, log-sum-exp and both of
    their tangents equal the dense path's."""
    q, k, v, cot = _inputs(20, 2, 19, 21, 4, 2, 8)
    bias = jax.random.normal(jax.random.PRNGKey(21), (1, 4, 19, 21))
    keys = jax.random.split(jax.random.PRNGKey(22), 3)
    tangents = (cot, jax.random.normal(keys[0], k.shape), jax.random.normal(keys[1], v.shape),
                jax.random.normal(keys[2], bias.shape))
    ((out_b, lse_b), (dout_b, dlse_b)), ((out_d, lse_d), (dout_d, dlse_d)) = _jvp_both(q, k, v, bias, tangents,
                                                                                      **kwargs)
    np.testing.assert_allclose(out_b, out_d, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(np.isfinite(lse_b), np.isfinite(lse_d))
    np.testing.assert_allclose(np.where(np.isfinite(lse_d), lse_b, 0), np.where(np.isfinite(lse_d), lse_d, 0),
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(dout_b, dout_d, atol=1e-4, rtol=0, err_msg="output tangent")
    np.testing.assert_allclose(dlse_b, dlse_d, atol=1e-4, rtol=0, err_msg="log-sum-exp tangent")
    assert np.all(np.isfinite(np.asarray(dout_b))) and np.all(np.isfinite(np.asarray(dlse_b)))


def test_jvp_matches_jax_nn():
    """The drop-in promise in forward mode: blockwise jvp equals jax.nn's (every row sees a key)."""
    q, k, v, cot = _inputs(23, 1, 13, 17, 4, 2, 8)
    tangents = (cot, 0.5 * k, -v)
    blockwise = lambda q, k, v: dot_product_attention(q, k, v, is_causal=True, implementation="blockwise",
                                                      block_sizes=BlockSizes(4, 8))
    reference = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    out, dout = jax.jvp(blockwise, (q, k, v), tangents)
    want, dwant = jax.jvp(reference, (q, k, v), tangents)
    np.testing.assert_allclose(out, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(dout, dwant, atol=1e-4, rtol=0)


def _second_order_problem():
    """A tiny causal problem over 3x3 blocks of 4x4: ``(q, blockwise, dense, loss)``."""
    q, k, v, cot = _inputs(24, 1, 9, 9, 2, 1, 4)

    def attend(implementation, **extra):
        return lambda q: dot_product_attention(q, k, v, is_causal=True, implementation=implementation, **extra)

    def loss(f):
        def value(q):
            out = f(q)
            return jnp.sum(out * cot) + 0.5 * jnp.sum(out ** 2)
        return value

    return q, cot, attend("blockwise", block_sizes=BlockSizes(4, 4)), attend("dense"), loss


def test_jacfwd_hessian_and_hessian_vector_products_match_dense():
    """jacfwd, jax.hessian (jacfwd of jacrev) and a Hessian-vector product (jvp of grad) through blockwise
    equal the dense path's."""
    q, cot, blockwise, dense, loss = _second_order_problem()
    derivatives = jax.jit(lambda q: [(jax.jacfwd(f)(q), jax.hessian(loss(f))(q),
                                      jax.jvp(jax.grad(loss(f)), (q,), (cot,))[1]) for f in (blockwise, dense)])
    got, want = derivatives(q)
    for name, g, w in zip(("jacfwd", "hessian", "hessian-vector product"), got, want):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, atol=2e-4, rtol=0, err_msg=name)


@pytest.mark.slow
def test_jacrev_of_jacfwd_matches_jax_nn():
    """Reverse over forward: JAX transposes the derivative of the tangent pass. Against jax.nn, whose
    second derivatives compile several times faster than the dense path's here."""
    q, _, blockwise, _, _ = _second_order_problem()
    k, v = _inputs(24, 1, 9, 9, 2, 1, 4)[1:3]
    reference = lambda q: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    got, want = jax.jit(lambda q: [jax.jacrev(jax.jacfwd(f))(q) for f in (blockwise, reference)])(q)
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=0)


def test_default_path_jvp_does_not_depend_on_the_length():
    """Issue 24: with implementation=None, jax.jvp worked at T=256 (dense) and failed at T=512, where
    the default switches to blockwise. Both lengths must work and agree with the dense path."""
    from attnjax.ops import select_implementation

    for T in (256, 512):
        q = jax.random.normal(jax.random.PRNGKey(T), (1, T, 1, 4))
        chosen = select_implementation(jax.default_backend(), q.shape, q.shape, q.shape, q.dtype)
        if jax.default_backend() == "cpu":
            assert chosen == ("dense" if T == 256 else "blockwise")
        out, tangent = jax.jvp(lambda q: dot_product_attention(q, q, q), (q,), (q,))
        want, dwant = jax.jvp(lambda q: dot_product_attention(q, q, q, implementation="dense"), (q,), (q,))
        np.testing.assert_allclose(out, want, atol=1e-5, rtol=0, err_msg=f"T={T}")
        np.testing.assert_allclose(tangent, dwant, atol=1e-4, rtol=0, err_msg=f"T={T}")


def test_jvp_compiled_temporary_memory_is_far_below_dense():
    """Forward mode keeps the O(T) memory: the tangent pass never holds [T, S] either (compile only)."""
    shape = jax.ShapeDtypeStruct((1, 2048, 4, 32), jnp.float32)

    def jvp_fn(implementation):
        attend = lambda q, k, v: dot_product_attention(q, k, v, implementation=implementation, is_causal=True)
        return jax.jit(lambda q, k, v, t: jax.jvp(attend, (q, k, v), (t, t, t)))

    dense = _temp_bytes(jvp_fn("dense"), shape, shape, shape, shape)
    blockwise = _temp_bytes(jvp_fn("blockwise"), shape, shape, shape, shape)
    assert dense >= 64 * 2**20
    assert blockwise * 16 <= dense, (blockwise, dense)


# Packed rows: segments of 3, 4 and 3 queries / 5, 4 and 4 keys (row 0), one and two segments (row 1);
# boundaries fall inside the 8 x 16 blocks and the last block is padded.
_Q_SEGMENTS = jnp.array([[0] * 3 + [1] * 4 + [2] * 3, [0] * 10], jnp.int32)
_K_SEGMENTS = jnp.array([[0] * 5 + [1] * 4 + [2] * 4, [0] * 6 + [1] * 7], jnp.int32)


# One row whose first blocks hold a single segment: 4 x 8 blocks (0, 0) and (1, 0) are fully visible,
# while (0, 0) would not be if only the queries were checked for a single segment.
_ONE_ROW = (jnp.array([[0] * 8 + [1] * 2], jnp.int32), jnp.array([[0] * 8 + [1] * 5], jnp.int32))
_ONE_ROW_SHIFTED = (_ONE_ROW[0], jnp.array([[0] * 5 + [1] * 8], jnp.int32))


@pytest.mark.parametrize("ids, kwargs", [
    ((_Q_SEGMENTS, _K_SEGMENTS), {}),
    ((_Q_SEGMENTS, _K_SEGMENTS), {"is_causal": True, "key_value_seq_lengths": jnp.array([13, 9])}),
    (_ONE_ROW, {}),
    (_ONE_ROW_SHIFTED, {}),
])
def test_segment_ids_equal_dense_with_a_segment_mask(ids, kwargs):
    """Values and gradients of blockwise with segment ids equal dense with ``mask=segment_mask(...)``
    (grouped-query heads, T != S, padded blocks, fully visible single-segment blocks); the dense path's
    own segment ids agree too."""
    B, T, S, N, K, H = ids[0].shape[0], 10, 13, 4, 2, 8
    q, k, v, cot = _inputs(23, B, T, S, N, K, H)
    mask = segment_mask(*ids)
    segments = dict(query_segment_ids=ids[0], key_segment_ids=ids[1])

    def run(implementation, **extra):
        return lambda q, k, v: dot_product_attention(q, k, v, implementation=implementation, **extra, **kwargs)

    out, pull = jax.vjp(run("blockwise", block_sizes=BlockSizes(4, 8), **segments), q, k, v)
    ref, ref_pull = jax.vjp(run("dense", mask=mask), q, k, v)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
    for g, r in zip(pull(cot), ref_pull(cot)):
        np.testing.assert_allclose(g, r, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(run("dense", **segments)(q, k, v), ref)
    np.testing.assert_array_equal(attention_weights(q, k, **segments, **kwargs),
                                  attention_weights(q, k, mask=mask, **kwargs))


def test_self_attention_segment_ids_default_to_the_query_ids():
    q, k, v, _ = _inputs(24, 2, 10, 10, 2, 2, 8)
    out = dot_product_attention(q, k, v, implementation="blockwise", block_sizes=SMALL, query_segment_ids=_Q_SEGMENTS)
    ref = dot_product_attention(q, k, v, implementation="dense", mask=segment_mask(_Q_SEGMENTS))
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_segment_id_errors():
    q, k, v, _ = _inputs(25, 2, 10, 13, 2, 2, 8)
    with pytest.raises(ValueError, match=r"key_segment_ids is needed .* differ in length"):
        dot_product_attention(q, k, v, query_segment_ids=_Q_SEGMENTS)
    with pytest.raises(ValueError, match=r"key_segment_ids must have shape \[B, L\] = \(2, 13\), got \(2, 10\)"):
        dot_product_attention(q, k, v, query_segment_ids=_Q_SEGMENTS, key_segment_ids=_Q_SEGMENTS)
    with pytest.raises(TypeError, match=r"query_segment_ids must be an integer array"):
        dot_product_attention(q, k, v, query_segment_ids=_Q_SEGMENTS * 1.0, key_segment_ids=_K_SEGMENTS)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_x64_mode_with_mask_and_bias_matches_dense(dtype):
    # Under jax.enable_x64 the block start indices mixed int64 and int32, which dynamic_slice rejects.
    with jax.enable_x64():
        q, k, v, cot = _inputs(5, 2, 11, 9, 2, 2, 8, dtype=dtype)
        mask = jax.random.bernoulli(jax.random.PRNGKey(6), 0.7, (2, 1, 11, 9))
        bias = jax.random.normal(jax.random.PRNGKey(7), (1, 2, 11, 9)).astype(dtype)
        _assert_matches_dense(q, k, v, cot, bias, block_sizes=BlockSizes(4, 3), mask=mask)
