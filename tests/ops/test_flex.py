"""``score_mod``/``mask_mod`` (FlexAttention-style hooks) against dense attention with the same bias or mask
materialized: values and gradients (query, key, value and the score_mod params), forward mode, block
skipping, and errors by name.

Each case computes the materialized reference, the dense path's hook and the blockwise kernel's hook in
one jitted program (compiling dominates). Shapes are tiny, with ``T``, ``S`` not multiples of the 8 x 8
tiles so padded tiles are covered, and several query and key tiles.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.ops import BlockSizes, Visibility, attention_weights, dot_product_attention, segment_mask
from attnjax.ops import blockwise_kernels as kernels
from attnjax.ops import flex
from attnjax.ops.positional import alibi_bias, t5_relative_bias, t5_relative_bucket

TILES = BlockSizes(8, 8)


def _inputs(seed, B, T, S, N, K, H=8, dtype=jnp.float32):
    ks = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = jax.random.normal(ks[0], (B, T, N, H), jnp.float32).astype(dtype)
    k = jax.random.normal(ks[1], (B, S, K, H), jnp.float32).astype(dtype)
    v = jax.random.normal(ks[2], (B, S, K, H), jnp.float32).astype(dtype)
    cot = jax.random.normal(ks[3], (B, T, N, H), jnp.float32)  # a fixed random cotangent
    return q, k, v, cot


# --------------------------------------------------------------------------- the hooks of the cases

def alibi_mod(score, batch, head, q_idx, kv_idx, slopes):
    """ALiBi with one learned slope per query head."""
    return score - slopes[head] * jnp.abs(q_idx - kv_idx).astype(score.dtype)


def t5_mod(score, batch, head, q_idx, kv_idx, table):
    """T5 relative-position buckets: a lookup in a learned ``[num_buckets, N]`` table."""
    return score + table[t5_relative_bucket(kv_idx - q_idx, num_buckets=table.shape[0], max_distance=16), head]


def softcap_mod(score, batch, head, q_idx, kv_idx, params):
    return 1.5 * jnp.tanh(score / 1.5)


def causal_mask(batch, head, q_idx, kv_idx):
    return q_idx >= kv_idx


def window_mask(batch, head, q_idx, kv_idx):  # local_window_size=(5, 2), and query 3 sees no key at all
    return (q_idx - kv_idx <= 5) & (kv_idx - q_idx <= 2) & (q_idx != 3)


def document_mask(q_ids, k_ids):
    """Packed documents: a query sees only keys of its own segment (ids per batch row, closed over)."""
    return lambda batch, head, q_idx, kv_idx: q_ids[batch, q_idx] == k_ids[batch, kv_idx]


# Segments of 7, 9 and 5 queries / 6, 8 and 5 keys in row 0, one segment in row 1: boundaries fall inside
# tiles, and the 8 x 8 tiles of row 0 that pair different segments are skipped.
Q_IDS = jnp.array([[0] * 7 + [1] * 9 + [2] * 5, [3] * 21], jnp.int32)
K_IDS = jnp.array([[0] * 6 + [1] * 8 + [2] * 5, [3] * 19], jnp.int32)


def _case(name):
    """``(shape (B, T, S, N, K), params, hooks, reference keywords as a function of params)``."""
    if name == "alibi_causal_gqa":  # learned ALiBi slopes, causal as a mask_mod, 4 query heads on 2 kv heads
        slopes = jnp.array([0.5, 0.25, 0.125, 0.0625])
        reference = lambda p: {"bias": alibi_bias(jnp.arange(21), jnp.arange(19), p, is_causal=False),
                               "is_causal": True}
        return (2, 21, 19, 4, 2), slopes, {"score_mod": alibi_mod, "mask_mod": causal_mask}, reference
    if name == "t5_documents_lengths":  # T5 table, document mask from segment ids, key and query lengths
        table = 0.5 * jax.random.normal(jax.random.PRNGKey(9), (8, 2))
        lengths = {"query_seq_lengths": jnp.array([21, 12]), "key_value_seq_lengths": jnp.array([17, 19])}
        reference = lambda p: {"bias": t5_relative_bias(p, jnp.arange(21), jnp.arange(19), max_distance=16),
                               "mask": segment_mask(Q_IDS, K_IDS), **lengths}
        hooks = {"score_mod": t5_mod, "mask_mod": document_mask(Q_IDS, K_IDS), **lengths}
        return (2, 21, 19, 2, 2), table, hooks, reference
    if name == "softcap_window_mqa":  # softcap as a score_mod, a sliding window as a mask_mod, one kv head
        reference = lambda p: {"logit_softcap": 1.5, "local_window_size": (5, 2),
                               "mask": (jnp.arange(21) != 3)[:, None]}
        return (1, 21, 19, 2, 1), None, {"score_mod": softcap_mod, "mask_mod": window_mask}, reference
    raise KeyError(name)


def _run(hooks, params, implementation, q, k, v, cot, **kwargs):
    """Output and gradients (q, k, v, params) of ``sum(out * cot)``."""
    def loss(q, k, v, params):
        extra = {"score_mod_params": params} if "score_mod" in hooks and params is not None else {}
        out = dot_product_attention(q, k, v, implementation=implementation, **hooks, **extra, **kwargs)
        return jnp.sum(out.astype(jnp.float32) * cot), out

    argnums = (0, 1, 2) if params is None else (0, 1, 2, 3)
    (_, out), grads = jax.value_and_grad(loss, argnums=argnums, has_aux=True)(q, k, v, params)
    return out, grads


def _reference(make_keywords, q, k, v, cot, params):
    """Dense attention with the bias/mask materialized from ``params``; gradients reach the params through
    the materialized bias."""
    def loss(q, k, v, params):
        out = dot_product_attention(q, k, v, implementation="dense", **make_keywords(params))
        return jnp.sum(out.astype(jnp.float32) * cot), out

    argnums = (0, 1, 2) if params is None else (0, 1, 2, 3)
    (_, out), grads = jax.value_and_grad(loss, argnums=argnums, has_aux=True)(q, k, v, params)
    return out, grads


@pytest.mark.parametrize("name", ["alibi_causal_gqa", "t5_documents_lengths", "softcap_window_mqa"])
def test_hooks_equal_the_materialized_bias_and_mask(name):
    (B, T, S, N, K), params, hooks, reference = _case(name)
    q, k, v, cot = _inputs(0, B, T, S, N, K)

    @jax.jit
    def three(q, k, v, cot, params):
        return (_reference(reference, q, k, v, cot, params),
                _run(hooks, params, "dense", q, k, v, cot),
                _run(hooks, params, "blockwise", q, k, v, cot, block_sizes=TILES))

    (ref, ref_grads), *paths = three(q, k, v, cot, params)
    for path, (out, grads) in zip(("dense", "blockwise"), paths):
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0, err_msg=path)
        assert len(grads) == len(ref_grads)
        for arg, g, r in zip(("query", "key", "value", "params"), grads, ref_grads):
            assert g.shape == r.shape and np.all(np.isfinite(g)), (path, arg)
            np.testing.assert_allclose(g, r, atol=1e-4, rtol=0, err_msg=f"{path}: gradient wrt {arg}")
    if params is not None:
        assert float(jnp.max(jnp.abs(ref_grads[3]))) > 1e-3  # the params gradient is really tested
    if name == "softcap_window_mqa":  # a row the mask_mod hides entirely: zeros, zero gradient
        assert np.all(np.asarray(paths[1][0][:, 3]) == 0) and np.all(np.asarray(paths[1][1][0][:, 3]) == 0)


def test_score_mod_sees_the_scaled_capped_biased_score_before_masks():
    """The order of the docstring, against a hand-written formula: ``f(cap * tanh(scale q.k / cap) + bias)``,
    then masks, then softmax; ``score_mod`` runs on masked entries too (the forward hides what it gives)."""
    q, k, v, _ = _inputs(2, 1, 9, 11, 2, 2)
    bias = jax.random.normal(jax.random.PRNGKey(3), (1, 2, 9, 11))
    square = lambda s, b, h, qi, ki, p: 0.3 * s * s + p[h] * (qi - ki)
    params = jnp.array([0.2, -0.1])
    kwargs = dict(scale=0.7, logit_softcap=2.0, is_causal=True, score_mod=square, score_mod_params=params)

    def formula(q, k, v, bias):
        logits = 2.0 * jnp.tanh(0.7 * jnp.einsum("btnh,bsnh->bnts", q, k) / 2.0) + bias
        logits = 0.3 * logits ** 2 + params[None, :, None, None] * (jnp.arange(9)[:, None] - jnp.arange(11))
        weights = jax.nn.softmax(jnp.where(jnp.tril(jnp.ones((9, 11), bool)), logits, -jnp.inf), axis=-1)
        return weights, jnp.einsum("bnts,bsnh->btnh", weights, v)

    (want_weights, want), weights, dense, blockwise = jax.jit(lambda q, k, v, bias: (
        formula(q, k, v, bias), attention_weights(q, k, bias, **kwargs),
        dot_product_attention(q, k, v, bias, implementation="dense", **kwargs),
        dot_product_attention(q, k, v, bias, implementation="blockwise", block_sizes=BlockSizes(4, 4), **kwargs)))(
            q, k, v, bias)
    np.testing.assert_allclose(weights, want_weights, atol=1e-6)
    np.testing.assert_allclose(dense, want, atol=1e-5)
    np.testing.assert_allclose(blockwise, want, atol=1e-5)


def test_low_precision_no_worse_than_dense():
    """bfloat16 inputs, ALiBi slopes and a document mask: the blockwise hooks' error against the float32
    reference stays within 2x the dense bfloat16 path's (with the bias materialized) plus an ulp-scale
    slack, as in test_blockwise's low-precision test (the paths round probabilities to bfloat16 before the
    PV matmul in different orders, so they cannot agree to float32 accuracy)."""
    q, k, v, cot = _inputs(4, 2, 21, 19, 4, 2, dtype=jnp.bfloat16)
    slopes = jnp.array([0.5, 0.25, 0.125, 0.0625])
    documents = document_mask(Q_IDS, K_IDS)
    reference = lambda p: {"bias": alibi_bias(jnp.arange(21), jnp.arange(19), p, is_causal=False),
                           "mask": segment_mask(Q_IDS, K_IDS)}

    @jax.jit
    def three(q, k, v, cot, slopes):
        full = tuple(x.astype(jnp.float32) for x in (q, k, v))
        return (_reference(reference, *full, cot, slopes), _reference(reference, q, k, v, cot, slopes),
                _run({"score_mod": alibi_mod, "mask_mod": documents}, slopes, "blockwise", q, k, v, cot,
                     block_sizes=TILES))

    (ref, ref_grads), (out_d, grads_d), (out_b, grads_b) = three(q, k, v, cot, slopes)
    assert out_b.dtype == jnp.bfloat16 and grads_b[3].dtype == jnp.float32
    eps = float(jnp.finfo(jnp.bfloat16).eps)
    err = lambda a, b: float(jnp.max(jnp.abs(a.astype(jnp.float32) - b)))
    assert err(out_b, ref) <= 2 * err(out_d, ref) + eps
    for arg, gb, gd, gr in zip(("query", "key", "value", "slopes"), grads_b, grads_d, ref_grads):
        assert err(gb, gr) <= 2 * err(gd, gr) + eps * float(jnp.max(jnp.abs(gr))), arg


def test_jvp_with_score_mod_params_matches_the_materialized_bias():
    """Forward mode through the blockwise kernel with tangents on query, key, value and the ALiBi slopes at
    once: outputs, log-sum-exp and their tangents equal dense with the bias materialized."""
    q, k, v, cot = _inputs(5, 2, 21, 19, 4, 2)
    slopes = jnp.array([0.5, 0.25, 0.125, 0.0625])
    keys = jax.random.split(jax.random.PRNGKey(6), 2)
    tangents = (cot, jax.random.normal(keys[0], k.shape), jax.random.normal(keys[1], v.shape),
                jnp.array([1.0, -2.0, 0.5, 3.0]))
    blockwise = lambda q, k, v, p: dot_product_attention(q, k, v, implementation="blockwise", block_sizes=TILES,
                                                         score_mod=alibi_mod, score_mod_params=p,
                                                         mask_mod=causal_mask, return_residual=True)
    dense = lambda q, k, v, p: dot_product_attention(q, k, v, alibi_bias(jnp.arange(21), jnp.arange(19), p,
                                                                         is_causal=False),
                                                     implementation="dense", is_causal=True, return_residual=True)
    got, want = jax.jit(lambda *x: [jax.jvp(f, x, tangents) for f in (blockwise, dense)])(q, k, v, slopes)
    for name, g, w in zip(("output", "log-sum-exp"), jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0, err_msg=name)


def test_hooks_may_close_over_traced_and_differentiated_arrays():
    """Under jit, a document mask reading traced segment ids and an ALiBi score_mod reading traced
    (randomized) positions and a closed-over slope vector: values and gradients (query and the closed-over
    slopes) equal dense with the bias and mask materialized. The blockwise kernel is a custom_jvp, which
    cannot see values hidden in a closure: they are hoisted into explicit arguments."""
    q, k, v, cot = _inputs(10, 2, 21, 21, 2, 2)
    positions = jnp.sort(jax.random.choice(jax.random.PRNGKey(11), 64, (2, 21), replace=False), axis=-1)

    @jax.jit
    def both(q, slopes, q_ids, positions):
        def blockwise(q, slopes):
            score_mod = lambda s, b, h, qi, ki, p: s - slopes[h] * jnp.abs(positions[b, qi] - positions[b, ki])
            mask_mod = lambda b, h, qi, ki: q_ids[b, qi] == q_ids[b, ki]
            out = dot_product_attention(q, k, v, implementation="blockwise", block_sizes=TILES, score_mod=score_mod,
                                        mask_mod=mask_mod)
            return jnp.sum(out * cot)

        def dense(q, slopes):
            bias = alibi_bias(positions, positions, slopes, is_causal=False)
            return jnp.sum(dot_product_attention(q, k, v, bias, segment_mask(q_ids), implementation="dense") * cot)

        return [jax.value_and_grad(f, argnums=(0, 1))(q, slopes) for f in (blockwise, dense)]

    got, want = both(q, jnp.array([0.2, 0.05]), Q_IDS[:, :21], positions)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-5)


@pytest.mark.slow
def test_inside_shard_map_with_replicated_params_and_sharded_closures():
    """Data-parallel jax.shard_map (VMA check on): replicated ALiBi slopes as params, hooks closing over
    per-example (sharded) positions and segment ids, sharded key lengths. Values and gradients equal the
    unsharded call (the slopes' gradient is the sum over devices)."""
    from jax.sharding import Mesh, PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    q, k, v, cot = _inputs(12, 4, 21, 21, 2, 2)
    ids = jnp.concatenate([Q_IDS[:, :21], Q_IDS[::-1, :21]])
    positions = jnp.sort(jax.random.randint(jax.random.PRNGKey(13), (4, 21), 0, 64), axis=-1)
    lengths = jnp.array([21, 15, 9, 21])

    def attend(q, k, v, slopes, ids, positions, lengths):
        score_mod = lambda s, b, h, qi, ki, p: s - p[h] * jnp.abs(positions[b, qi] - positions[b, ki])
        mask_mod = lambda b, h, qi, ki: (ids[b, qi] == ids[b, ki]) & (qi >= ki)
        return dot_product_attention(q, k, v, implementation="blockwise", block_sizes=TILES, score_mod=score_mod,
                                     score_mod_params=slopes, mask_mod=mask_mod, key_value_seq_lengths=lengths)

    data = P("data")
    sharded = jax.shard_map(attend, mesh=mesh, in_specs=(data, data, data, P(), data, data, data), out_specs=data)
    loss = lambda f: lambda q, slopes: jnp.sum(f(q, k, v, slopes, ids, positions, lengths) * cot)
    got, want = jax.jit(lambda *x: [jax.value_and_grad(loss(f), argnums=(0, 1))(*x) for f in (sharded, attend)])(
        q, jnp.array([0.2, 0.05]))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- block skipping

def test_block_states_of_a_causal_mask_mod_are_the_blocks_is_causal_visits():
    """A causal mask given as a mask_mod classifies the tiles exactly as the is_causal rule skips and
    unmasks them (same tiles computed, same tiles masked); the mask reads only the positions."""
    T = S = 29
    mods = flex.check_mods(None, causal_mask, None, score_dtype=jnp.float32)
    assert mods.mask_uses == (False, False, True, True)
    states = np.asarray(flex.block_states(mods, B=2, N=4, T=T, S=S, bq=8, bk=8))
    cfg = kernels.Config(T=T, S=S, G=1, bq=8, bk=8, scale=1.0, visibility=Visibility(True), logit_softcap=None)
    for i in range(cfg.nq):
        lo, hi = (int(x) for x in kernels.key_block_range(cfg, i, None))
        for j in range(cfg.nk):
            visible = Visibility(True).all_visible(i * 8, min(i * 8 + 7, T - 1), j * 8, min(j * 8 + 7, S - 1))
            want = flex.EMPTY if not lo <= j < hi else flex.FULL if bool(visible) else flex.PARTIAL
            assert states[i, j] == want, (i, j)


@pytest.mark.parametrize("hooks, seen", [
    ({"mask_mod": document_mask(jnp.array([[0] * 16 + [1] * 16]), jnp.array([[0] * 16 + [1] * 16]))}, 16),
    ({"mask_mod": causal_mask}, 24),
    pytest.param({"is_causal": True}, 24, marks=pytest.mark.slow),
], ids=["documents", "causal_mask_mod", "is_causal"])
def test_hidden_tiles_are_never_computed(hooks, seen):
    """Observable block skipping: a NaN in the value of a masked-out key makes the output NaN wherever
    its tile is computed (``0 * NaN``; the dense path shows it). Queries ``< seen`` whose tiles with those
    keys are skipped stay finite and exact, in the output and in the query gradient, so the forward and
    the backward both skip them; a causal mask_mod skips what is_causal skips."""
    q, k, v, cot = _inputs(7, 1, 32, 32, 2, 2)
    rows_before = jnp.zeros_like(cot).at[:, :seen].set(cot[:, :seen])

    def run(implementation, v, **extra):  # output and query gradient for the cotangent of rows < seen
        out, pull = jax.vjp(lambda q: dot_product_attention(q, k, v, implementation=implementation, **hooks,
                                                            **extra), q)
        return out, pull(rows_before)[0]

    (out, grad), (want, want_grad), (dense_out, _) = jax.jit(lambda v: (
        run("blockwise", v.at[:, seen:].set(jnp.nan), block_sizes=TILES), run("dense", v),
        run("dense", v.at[:, seen:].set(jnp.nan))))(v)
    assert np.all(np.isnan(dense_out[:, :seen])), "control: a computed masked tile carries the NaN"
    np.testing.assert_allclose(out[:, :seen], want[:, :seen], atol=1e-5)
    np.testing.assert_allclose(grad[:, :seen], want_grad[:, :seen], atol=1e-4)


# --------------------------------------------------------------------------- errors and dispatch

@pytest.mark.parametrize("kwargs, error, words", [
    ({"score_mod": 3}, TypeError, r"score_mod must be a callable score_mod\(score, batch, head, q_idx, kv_idx, "
                                  r"params\) -> score, got int: 3"),
    ({"mask_mod": "causal"}, TypeError, r"mask_mod must be a callable mask_mod\(batch, head, q_idx, kv_idx\) -> "
                                        r"bool, got str: 'causal'"),
    ({"score_mod_params": jnp.ones(2)}, ValueError, r"score_mod_params is passed to score_mod, but score_mod is None"),
    ({"score_mod": lambda s, b, h, q, kv: s}, TypeError, r"score_mod must take 6 positional arguments.*FlexAttention"),
    ({"mask_mod": lambda q, kv: q >= kv}, TypeError, r"mask_mod must take 4 positional arguments"),
    ({"score_mod": lambda s, b, h, q, kv, p: jnp.stack([s, s])}, ValueError,
     r"score_mod must return one scalar score .* got \(2,\)"),
    ({"score_mod": lambda s, b, h, q, kv, p: q > kv}, TypeError, r"score_mod must return a floating score, got "
                                                                 r"dtype bool"),
    ({"mask_mod": lambda b, h, q, kv: q - kv}, TypeError, r"mask_mod must return a bool \(True = attend\), got "
                                                           r"dtype int32"),
    ({"score_mod": alibi_mod, "score_mod_params": {"slopes": "steep"}}, TypeError,
     r"score_mod_params leaves must be arrays or numbers, got str at score_mod_params\['slopes'\]"),
])
def test_bad_hooks_are_named(kwargs, error, words):
    q, k, v, _ = _inputs(8, 1, 5, 5, 2, 2)
    with pytest.raises(error, match=words):
        dot_product_attention(q, k, v, **kwargs)


@pytest.mark.parametrize("implementation", ["cudnn", "pallas", "pallas_interpret"])
@pytest.mark.parametrize("hooks, named", [({"score_mod": softcap_mod}, "score_mod"),
                                          ({"mask_mod": causal_mask}, "mask_mod"),
                                          ({"score_mod": softcap_mod, "mask_mod": causal_mask},
                                           "score_mod and mask_mod")])
def test_paths_without_hooks_reject_them_by_name(implementation, hooks, named):
    q, k, v, _ = _inputs(8, 1, 5, 5, 2, 2)
    with pytest.raises(ValueError, match=rf"^{named} needs implementation 'blockwise' or 'dense' \(or None\), "
                                         rf"the paths that evaluate it, got implementation='{implementation}'$"):
        dot_product_attention(q, k, v, implementation=implementation, **hooks)


@pytest.mark.parametrize("T", [16, 512])
def test_no_implementation_picks_a_path_with_the_hooks(T):
    """implementation=None takes dense or blockwise (by length) whatever the platform; "xla" is dense."""
    from attnjax.ops import select_implementation

    for platform in ("cpu", "gpu", "tpu"):
        for flag in ("has_score_mod", "has_mask_mod"):
            chosen = select_implementation(platform, (1, T, 2, 64), (1, T, 2, 64), (1, T, 2, 64), jnp.bfloat16,
                                           **{flag: True})
            assert chosen == ("dense" if T == 16 else "blockwise"), (platform, flag)
    if T == 16:
        q, k, v, _ = _inputs(8, 1, T, T, 2, 2)
        want, *got = jax.jit(lambda q, k, v: [
            dot_product_attention(q, k, v, implementation="dense", is_causal=True),
            *(dot_product_attention(q, k, v, implementation=i, mask_mod=causal_mask) for i in (None, "xla"))])(q, k, v)
        for g in got:
            np.testing.assert_allclose(g, want, atol=1e-6)
