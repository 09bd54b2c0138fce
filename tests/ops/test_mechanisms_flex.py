"""FIRE, scalable softmax (SSMax) and forgetting attention (FoX), which run through the ``score_mod`` hook,
against direct references: the bias materialized as ``[B, N, T, S]`` (FIRE: the reference code's formula;
FoX: sums of the log gates between query and key, no cumulative sums) and passed to dense attention as
``bias=``, or, for SSMax, the query multiplied by ``s log n`` with ``n`` counted on the materialized mask.
Values and gradients (query, key, value and the mechanism's parameters), dense and blockwise, causal with
grouped-query heads and bidirectional with one key/value head, key lengths, masks, two shapes, float32
and bfloat16. Each case is one jitted program (compiling dominates); tiles of 4 x 4 leave padded tiles.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.ops import BlockSizes, attention_weights, dot_product_attention
from attnjax.ops.fire import FIRE_HIDDEN, fire_attention, fire_init, fire_weights
from attnjax.ops.forgetting import forgetting_attention, forgetting_weights, log_forget_gates
from attnjax.ops.masks import attention_mask
from attnjax.ops.scalable_softmax import ssmax_attention, ssmax_weights, visible_key_counts
from attnjax.testing import check_attention

TILES = BlockSizes(4, 4)
# (B, T, S, N, K, is_causal, key lengths): causal self-attention with 4 query heads on 2 key/value heads, and
# bidirectional attention of 6 queries over 13 keys with one key/value head and a shorter second row.
SHAPES = {"causal_gqa": (2, 11, 11, 4, 2, True, None),
          "bidirectional_mqa": (2, 6, 13, 2, 1, False, (13, 9))}


def _inputs(seed, B, T, S, N, K, H=8):
    rng = np.random.default_rng(seed)  # NumPy draws: no per-shape compilation
    return tuple(jnp.asarray(rng.standard_normal(shape), jnp.float32)
                 for shape in ((B, T, N, H), (B, S, K, H), (B, S, K, H), (B, T, N, H)))


class Case(NamedTuple):
    """A mechanism on one shape: its parameters, the op and its weights function (``**path`` picks the
    implementation), and the direct references of both."""

    params: Any
    op: Callable  # (q, k, v, params, **path) -> [B, T, N, H]
    reference: Callable  # (q, k, v, params) -> [B, T, N, H]
    weights: Callable  # (q, k, params) -> [B, N, T, S]
    reference_weights: Callable  # (q, k, params) -> [B, N, T, S]


def _with_bias(bias, masks) -> tuple[Callable, Callable]:
    """The references (attention, weights) of a mechanism that adds ``bias(params)``: dense attention with the
    bias materialized."""
    return (lambda q, k, v, p: dot_product_attention(q, k, v, bias(p).astype(q.dtype), implementation="dense",
                                                     **masks),
            lambda q, k, p: attention_weights(q, k, bias(p), **masks))


def _fire_case(B, T, S, N, K, causal, lengths):
    rng = np.random.default_rng(7)
    params = fire_init(jax.random.key(7), head_dim=8, num_heads=N)
    # c and L away from their initial values so that the normalizer max(L, i) changes inside the rows, and
    # a non-zero sign feature (bidirectional rows see keys after the query).
    params.update(fire_c=jnp.asarray(0.7), fire_threshold_scale=jnp.asarray(-0.012),  # L = 6.1: |.| is taken
                  fire_w_sign=jnp.asarray(rng.uniform(-1, 1, FIRE_HIDDEN), jnp.float32))
    if causal:  # randomized positions, the reference code's own formula (one MLP input, normalizer max(i, L))
        positions = jnp.asarray(np.sort(np.stack([rng.choice(40, T, replace=False) for _ in range(B)]), axis=1),
                                jnp.int32)

        def bias(p):
            i, j = (positions[:, :, None].astype(jnp.float32), positions[:, None, :].astype(jnp.float32))
            threshold = jnp.abs(p["fire_threshold_scale"] * 512.0)
            rel = jnp.log(jnp.abs(p["fire_c"] * (i - j)) + 1)
            norm = jnp.log(jnp.abs(p["fire_c"] * jnp.maximum(i, threshold)) + 1)
            x = (rel / (norm + 1e-6))[..., None]
            hidden = jax.nn.relu(x * p["fire_w_in"] + p["fire_b_in"])
            return jnp.einsum("btsh,hn->bnts", hidden, p["fire_w_out"]) + p["fire_b_out"][:, None, None]
        extra = dict(positions=positions)
    else:  # the module's bidirectional rule: |i - j|, normalizer max(L, i, j), key-after-query feature
        def bias(p):
            i, j = jnp.arange(T, dtype=jnp.float32)[:, None], jnp.arange(S, dtype=jnp.float32)[None, :]
            psi = lambda x: jnp.log(jnp.abs(p["fire_c"] * x) + 1)
            r = psi(jnp.abs(i - j)) / (psi(jnp.maximum(jnp.maximum(i, j), jnp.abs(p["fire_threshold_scale"]) * 512))
                                       + 1e-6)
            hidden = jax.nn.relu(r[..., None] * p["fire_w_in"] + (j > i)[..., None] * p["fire_w_sign"]
                                 + p["fire_b_in"])
            return (jnp.einsum("tsh,hn->nts", hidden, p["fire_w_out"]) + p["fire_b_out"][:, None, None])[None]
        extra = {}
    masks = dict(is_causal=causal, key_value_seq_lengths=lengths)
    reference, reference_weights = _with_bias(bias, masks)
    return Case(params, lambda q, k, v, p, **path: fire_attention(q, k, v, **masks, **extra, **p, **path),
                reference, lambda q, k, p: fire_weights(q, k, **masks, **extra, **p), reference_weights)


def _forgetting_case(B, T, S, N, K, causal, lengths):
    L = max(T, S)
    log_forget = jax.nn.log_sigmoid(1.0 + 1.5 * jnp.asarray(np.random.default_rng(7).standard_normal((B, L, N)),
                                                            jnp.float32))

    def bias(log_f):  # D_ij = sum of log f_l over j < l <= i (keys before the query) or i < l <= j (after)
        i, j, l = jnp.arange(T)[:, None, None], jnp.arange(S)[None, :, None], jnp.arange(L)[None, None, :]
        between = ((j < l) & (l <= i)) | ((i < l) & (l <= j))
        return jnp.einsum("tsl,bln->bnts", between.astype(jnp.float32), log_f)

    masks = dict(is_causal=causal, key_value_seq_lengths=lengths)
    reference, reference_weights = _with_bias(bias, masks)
    return Case(log_forget, lambda q, k, v, p, **path: forgetting_attention(q, k, v, **masks, log_forget=p, **path),
                reference, lambda q, k, p: forgetting_weights(q, k, **masks, log_forget=p), reference_weights)


def _ssmax_case(B, T, S, N, K, causal, lengths):
    rng = np.random.default_rng(7)
    if causal:  # a key mask [B, 1, 1, S]: counted by prefix sums
        mask = rng.random((B, 1, 1, S)) < 0.7
        mask[..., 0] = True
    else:  # a full [B, 1, T, S] mask: counted by summing it; query 2 of row 0 sees no key at all
        mask = rng.random((B, 1, T, S)) < 0.6
        mask[0, :, 2] = False
    masks = dict(mask=jnp.asarray(mask), is_causal=causal, key_value_seq_lengths=lengths)

    def scaled_query(q, s):  # the paper's implementation: the query times s log n, n counted on the full mask
        visible = attention_mask(T, S, mask=masks["mask"], is_causal=causal, key_value_seq_lengths=lengths)
        n = jnp.broadcast_to(jnp.sum(visible, axis=-1), (B, 1, T)).astype(jnp.float32)
        factor = s[None, :, None] * jnp.log(jnp.maximum(n, 1.0))  # [B, N, T]
        return q * factor.transpose(0, 2, 1)[..., None].astype(q.dtype)

    return Case(jnp.linspace(0.3, 0.9, N),
                lambda q, k, v, p, **path: ssmax_attention(q, k, v, **masks, ssmax_scale=p, **path),
                lambda q, k, v, s: dot_product_attention(scaled_query(q, s), k, v, implementation="dense", **masks),
                lambda q, k, p: ssmax_weights(q, k, **masks, ssmax_scale=p),
                lambda q, k, s: attention_weights(scaled_query(q, s), k, **masks))


CASES = {"fire": _fire_case, "forgetting": _forgetting_case, "ssmax": _ssmax_case}


def _value_and_grads(f, q, k, v, params, cot):
    def loss(q, k, v, params):
        out = f(q, k, v, params)
        return jnp.sum(out.astype(jnp.float32) * cot), out

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(q, k, v, params)
    return out, grads


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("mechanism", sorted(CASES))
def test_dense_and_blockwise_equal_the_direct_reference(mechanism, shape):
    """float32: values, weights and gradients of both paths against the reference. bfloat16 (on the causal
    shape): the blockwise kernel's error against the float32 reference stays within 2x that of the reference
    itself computed in bfloat16, plus an ulp-scale slack (as in test_flex's low-precision test)."""
    B, T, S, N, K, causal, lengths = SHAPES[shape]
    lengths = None if lengths is None else jnp.array(lengths)
    case = CASES[mechanism](B, T, S, N, K, causal, lengths)
    q, k, v, cot = _inputs(0, B, T, S, N, K)
    low_precision = shape == "causal_gqa"

    @jax.jit
    def run(q, k, v, cot, params):
        full = (_value_and_grads(case.reference, q, k, v, params, cot),
                _value_and_grads(lambda *a: case.op(*a, implementation="dense"), q, k, v, params, cot),
                _value_and_grads(lambda *a: case.op(*a, implementation="blockwise", block_sizes=TILES), q, k, v,
                                 params, cot))
        weights = (case.reference_weights(q, k, params), case.weights(q, k, params))
        if not low_precision:
            return full, weights, None
        low = tuple(x.astype(jnp.bfloat16) for x in (q, k, v))
        return full, weights, (_value_and_grads(case.reference, *low, params, cot), _value_and_grads(
            lambda *a: case.op(*a, implementation="blockwise", block_sizes=TILES), *low, params, cot))

    ((ref, ref_grads), *paths), (ref_weights, weights), bf16 = run(q, k, v, cot, case.params)
    np.testing.assert_allclose(weights, ref_weights, atol=2e-6, rtol=0, err_msg="weights")
    for path, (out, grads) in zip(("dense", "blockwise"), paths):
        np.testing.assert_allclose(out, ref, atol=2e-5, rtol=0, err_msg=path)
        for arg, g, r in zip(("query", "key", "value", "params"), grads, ref_grads):
            for (where, gl), rl in zip(jax.tree_util.tree_leaves_with_path(g), jax.tree.leaves(r)):
                name = arg + jax.tree_util.keystr(where)
                assert gl.shape == rl.shape and np.all(np.isfinite(gl)), (path, name)
                np.testing.assert_allclose(gl, rl, atol=1e-4, rtol=0, err_msg=f"{path}: gradient wrt {name}")
    # The parameters' gradient is really tested: it is not zero.
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads[3])) > 1e-2
    if mechanism == "fire" and causal:  # causal rows never see a key after the query: no sign-feature gradient
        for _, grads in paths:
            assert float(jnp.max(jnp.abs(grads[3]["fire_w_sign"]))) == 0.0
    if mechanism == "ssmax" and not causal:  # the row that sees no key: zeros
        assert np.all(np.asarray(paths[1][0][0, 2]) == 0)
    if bf16 is not None:
        (out_r, grads_r), (out, grads) = bf16
        eps = float(jnp.finfo(jnp.bfloat16).eps)
        err = lambda a, b: float(jnp.max(jnp.abs(a.astype(jnp.float32) - b)))
        assert out.dtype == jnp.bfloat16
        assert err(out, ref) <= 2 * err(out_r, ref) + eps
        for g, gr, r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_r), jax.tree.leaves(ref_grads)):
            assert np.all(np.isfinite(np.asarray(g, np.float32)))
            assert err(g, r) <= 2 * err(gr, r) + eps * float(jnp.max(jnp.abs(r)))


def test_visible_key_counts_equal_the_materialized_mask():
    T, S = 6, 9
    lengths = jnp.array([9, 5])
    rng = np.random.default_rng(0)
    key_mask, full_mask = jnp.asarray(rng.random((2, 3, 1, S)) < 0.6), jnp.asarray(rng.random((1, 3, T, S)) < 0.6)
    rules = ((True, None), (False, (2, 1)))

    @jax.jit
    def counts(key_mask, full_mask, lengths):
        out = []
        for mask in (None, key_mask, full_mask):
            for causal, window in rules:
                got = visible_key_counts(T, S, mask=mask, is_causal=causal, key_value_seq_lengths=lengths,
                                         window=window)
                visible = attention_mask(T, S, mask=mask, is_causal=causal, key_value_seq_lengths=lengths,
                                         window=window)
                want = jnp.sum(jnp.broadcast_to(visible, (2, 3, T, S)), axis=-1)
                out.append((jnp.broadcast_to(got, want.shape), want))
        return out

    for got, want in counts(key_mask, full_mask, lengths):
        np.testing.assert_array_equal(got, want)


def test_ssmax_multiplies_the_logits_by_s_log_n():
    """The equation itself on one row: weights = softmax(s log(n) * q.k / sqrt(H)) over the n visible keys."""
    q, k, _, _ = _inputs(3, 1, 4, 6, 1, 1, H=2)
    w = np.asarray(jax.jit(lambda q, k: ssmax_weights(q, k, is_causal=True, ssmax_scale=jnp.array([0.8])))(q, k))
    logits = np.einsum("th,sh->ts", q[0, :, 0], k[0, :, 0]) / np.sqrt(2)
    for i in range(4):
        n, z = i + 1, 0.8 * np.log(i + 1) * logits[i, :i + 1]
        np.testing.assert_allclose(w[0, 0, i, :n], np.exp(z - z.max()) / np.exp(z - z.max()).sum(), atol=1e-6)
        assert np.all(w[0, 0, i, n:] == 0)


def test_forget_gates_from_an_input_equal_log_sigmoid_of_a_linear_map():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 5, 3)), rng.standard_normal((3, 4)), np.arange(4.0)
    np.testing.assert_allclose(log_forget_gates(x, w, b), np.log(jax.nn.sigmoid(np.einsum("bld,dn->bln", x, w) + b)),
                               atol=1e-5)


def test_missing_or_malformed_arguments_are_named():
    q, k, v, _ = _inputs(4, 1, 3, 3, 2, 2)
    with pytest.raises(ValueError, match=r"fire_attention\(\) is missing .*fire_w_in.*init_attention_params\('fire'"):
        fire_attention(q, k, v)
    with pytest.raises(ValueError, match=r"ssmax_scale \[N\].*init_attention_params\('ssmax'"):
        ssmax_attention(q, k, v)
    with pytest.raises(ValueError, match=r"ssmax_scale must have shape \[N\] = \(2,\), got \(3,\)"):
        ssmax_attention(q, k, v, ssmax_scale=jnp.ones(3))
    fire = {name: jnp.zeros(shape) for name, shape in (
        ("fire_w_in", (32,)), ("fire_w_sign", (32,)), ("fire_b_in", (32,)), ("fire_w_out", (32, 2)),
        ("fire_b_out", (2,)), ("fire_c", ()), ("fire_threshold_scale", ()))}
    with pytest.raises(ValueError, match=r"fire_w_out must have shape \[hidden, N\] = \(32, 2\), got \(32, 3\)"):
        fire_attention(q, k, v, **{**fire, "fire_w_out": jnp.zeros((32, 3))})
    with pytest.raises(TypeError, match="positions must be an integer array"):
        fire_attention(q, k, v, positions=jnp.zeros((1, 3)), **fire)
    with pytest.raises(ValueError, match=r"positions must have shape \[L\] = \(3,\) or \[B, L\] = \(1, 3\)"):
        fire_attention(q, k, v, positions=jnp.zeros((4,), jnp.int32), **fire)
    with pytest.raises(ValueError, match=r"log_forget must have shape \[B, L, N\] = \(1, L, 2\) with L >= max\(T, S\)"):
        forgetting_attention(q, k, v, log_forget=jnp.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="score_mod needs implementation 'blockwise' or 'dense'"):
        forgetting_attention(q, k, v, log_forget=jnp.zeros((1, 3, 2)), implementation="cudnn")


def test_forgetting_attention_with_gates_passes_the_conformance_kit():
    """The kit on FoX with non-trivial gates (the registered default has none: plain attention), drawn per
    shape so that batch rows, heads and positions each have their own."""
    def fox(q, k, v, **kwargs):
        B, T, N = q.shape[:3]
        L = max(T, k.shape[1])
        logits = jnp.sin(jnp.arange(B * L * N, dtype=jnp.float32)).reshape(B, L, N)
        return forgetting_attention(q, k, v, log_forget=jax.nn.log_sigmoid(1.0 + logits), **kwargs)

    check_attention(fox, reference=None, position_free=False, max_examples=1, dtypes=("bfloat16",))
