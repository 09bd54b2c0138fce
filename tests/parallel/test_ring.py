"""Ring attention on 8 fake CPU devices equals the dense reference, values and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import attnjax
from attnjax.parallel import RingAttentionFn, from_layout, ring_attention, ring_self_attention, to_layout
from attnjax.parallel.ring_kernels import pick_block

AUTO = jax.sharding.AxisType.Auto


@functools.lru_cache(maxsize=None)
def _mesh(shape=(8,), names=("seq",)):
    n = int(np.prod(shape))
    return jax.make_mesh(shape, names, axis_types=(AUTO,) * len(shape), devices=jax.devices()[:n])


def _inputs(B, T, S, N, K, H, Hv=None, dtype=jnp.float32, seed=0):
    Hv = H if Hv is None else Hv
    r = np.random.RandomState(seed)
    q, k, v = (jnp.asarray(r.randn(*shape), dtype) for shape in ((B, T, N, H), (B, S, K, H), (B, S, K, Hv)))
    cotangent = jnp.asarray(r.randn(B, T, N, Hv), dtype)
    return q, k, v, cotangent


def _value_and_grads(attention, q, k, v, cotangent):
    out, pull = jax.vjp(attention, q, k, v)
    return out, pull(cotangent)


def _assert_equal_values_and_grads(attention, reference, q, k, v, cotangent):
    """``attention`` equals ``reference``: outputs within 1e-5, q/k/v gradients within 1e-4 (float32)."""
    (out, grads), (want_out, want_grads) = jax.jit(lambda *args: (
        _value_and_grads(attention, *args), _value_and_grads(reference, *args)))(q, k, v, cotangent)
    np.testing.assert_allclose(out, want_out, atol=1e-5, rtol=1e-5)
    for arg, got, want in zip("qkv", grads, want_grads):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=f"d{arg}")


# One entry per code path: (shapes B, T, S, N, K, H[, Hv]), mesh shape, keyword arguments. Options are
# combined so that each entry is one compile (the file must stay fast on 2 shared CPU cores).
CASES = {
    # No mask at all (the mask-free path), multi-query (K = 1), a 4-device sub-mesh.
    "full-mqa-mesh4": ((2, 32, 32, 4, 1, 8), (4,), dict()),
    # block_size=2: 2 query and 2 key tiles per device inside each ring step.
    "causal-contiguous-tiled": ((3, 32, 32, 4, 2, 8), (8,), dict(
        is_causal=True, layout="contiguous", kv_lengths=True, block_size=2)),
    "causal-striped": ((3, 32, 32, 4, 2, 8), (8,), dict(is_causal=True, layout="striped", kv_lengths=True)),
    # 8 tokens per device = zigzag chunks of 4, tiled by 2: 4 query tiles, 4 key tiles.
    "causal-zigzag-tiled": ((3, 64, 64, 4, 2, 8), (8,), dict(
        is_causal=True, layout="zigzag", kv_lengths=True, block_size=2)),
    "window-qlengths-softcap-striped": ((3, 32, 32, 4, 2, 8), (8,), dict(
        layout="striped", local_window_size=(5, 2), q_lengths=True, logit_softcap=2.0, scale=0.3)),
    # Cross-attention (S != T: chunk sizes differ, value head dim 16 != 8) with the batch also sharded;
    # per device 8 queries in 2 tiles, 16 keys in 4 tiles.
    "cross-causal-zigzag-data-seq": ((4, 32, 64, 2, 2, 8, 16), (2, 4), dict(
        is_causal=True, layout="zigzag", kv_lengths=True, batch_axis_name="data", block_size=4)),
}
def _lengths(B, length, short):
    # Full, partial and empty (every query row fully masked) sequences.
    return jnp.array([length, short, 0, length][:B], jnp.int32)


@pytest.mark.parametrize("name", sorted(CASES))
def test_ring_self_attention_matches_dense_values_and_grads(name):
    shapes, mesh_shape, options = CASES[name]
    B, T, S, N, K, H = shapes[:6]
    options = dict(options)
    q, k, v, cotangent = _inputs(*shapes)
    names = ("seq",) if len(mesh_shape) == 1 else ("data", "seq")
    kv_lengths = _lengths(B, S, 13) if options.pop("kv_lengths", False) else None
    q_lengths = _lengths(B, T, 20) if options.pop("q_lengths", False) else None
    ring_kwargs = dict(mesh=_mesh(mesh_shape, names), axis_name="seq", **options)
    dense_kwargs = {key: val for key, val in options.items() if key not in ("layout", "batch_axis_name", "block_size")}

    def ring(q, k, v, q_lengths, kv_lengths):
        return ring_self_attention(q, k, v, query_seq_lengths=q_lengths, key_value_seq_lengths=kv_lengths,
                                   **ring_kwargs)


    @jax.jit
    def both(q, k, v, cotangent, q_lengths, kv_lengths):
        ring_result = _value_and_grads(lambda q, k, v: ring(q, k, v, q_lengths, kv_lengths), q, k, v, cotangent)
        dense_result = _value_and_grads(lambda q, k, v: attnjax.dot_product_attention(
            q, k, v, query_seq_lengths=q_lengths, key_value_seq_lengths=kv_lengths, **dense_kwargs), q, k, v, cotangent)
        return ring_result, dense_result

    (out, grads), (want_out, want_grads) = both(q, k, v, cotangent, q_lengths, kv_lengths)

    assert out.shape == (B, T, N, v.shape[3]) and out.dtype == q.dtype
    np.testing.assert_allclose(out, want_out, atol=1e-5, rtol=1e-5)
    for arg, got, want in zip("qkv", grads, want_grads):
        assert bool(jnp.all(jnp.isfinite(got))), f"d{arg} not finite"
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=f"d{arg}")
    if kv_lengths is not None and B > 2:
        # Batch 2 has no keys at all: zeros out, zero gradients (never NaN).
        np.testing.assert_array_equal(out[2], 0.0)
        np.testing.assert_array_equal(grads[0][2], 0.0)


def test_ring_attention_inside_users_shard_map():
    """The primary API: the user's own shard_map (VMA check on) over a data x seq mesh, striped layout."""
    mesh = _mesh((2, 4), ("data", "seq"))
    axis_size = 4
    B, T, N, K, H = 2, 32, 4, 2, 8
    q, k, v, cotangent = _inputs(B, T, T, N, K, H, seed=1)
    kv_lengths = jnp.array([32, 19], jnp.int32)
    seq_spec = PartitionSpec("data", "seq", None, None)  # per shard [B/2, T/4, N|K, H]
    lengths_spec = PartitionSpec("data")  # per shard [B/2], global lengths

    def local(q, k, v, kv_lengths):
        return ring_attention(q, k, v, axis_name="seq", is_causal=True, layout="striped",
                              key_value_seq_lengths=kv_lengths)

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(seq_spec, seq_spec, seq_spec, lengths_spec),
                            out_specs=seq_spec)

    def attention(q, k, v):
        q, k, v = (to_layout(x, "striped", axis_size) for x in (q, k, v))
        return from_layout(sharded(q, k, v, kv_lengths), "striped", axis_size)

    def dense(q, k, v):
        return attnjax.dot_product_attention(q, k, v, is_causal=True, key_value_seq_lengths=kv_lengths)

    _assert_equal_values_and_grads(attention, dense, q, k, v, cotangent)


def test_bfloat16_as_accurate_as_dense_bfloat16():
    """bf16 ring output/grads are within bf16 rounding of the float32 reference, like dense bf16's."""
    B, T, N, K, H = 2, 32, 4, 2, 8
    q, k, v, cotangent = _inputs(B, T, T, N, K, H, dtype=jnp.bfloat16, seed=2)
    ring = functools.partial(ring_self_attention, mesh=_mesh(), axis_name="seq", is_causal=True, layout="striped")
    dense = functools.partial(attnjax.dot_product_attention, is_causal=True)
    got, exact, dense_bf16 = jax.jit(lambda *args: (
        _value_and_grads(ring, *args), _value_and_grads(dense, *(x.astype(jnp.float32) for x in args)),
        _value_and_grads(dense, *args)))(q, k, v, cotangent)
    assert got[0].dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in got[1])
    for name, x, want, baseline in zip(["out", "dq", "dk", "dv"], jax.tree.leaves(got), jax.tree.leaves(exact),
                                       jax.tree.leaves(dense_bf16)):
        x, baseline = x.astype(jnp.float32), baseline.astype(jnp.float32)
        # bfloat16 keeps 8 mantissa bits; values here are O(1), so 2e-2 is a few bf16 ulps.
        np.testing.assert_allclose(x, want, atol=2e-2, rtol=2e-2, err_msg=name)
        ring_error, dense_error = float(jnp.abs(x - want).max()), float(jnp.abs(baseline - want).max())
        assert ring_error <= 1.5 * dense_error + 1e-3, (name, ring_error, dense_error)


def test_float64_in_x64_mode_is_computed_in_float64():
    """Under jax.enable_x64 float64 inputs keep float64 statistics: the ring equals dense to ~1e-12."""
    with jax.enable_x64():
        q, k, v, cotangent = _inputs(2, 32, 32, 4, 2, 8, dtype=jnp.float64, seed=3)
        lengths = jnp.array([32, 13])
        ring = functools.partial(ring_self_attention, mesh=_mesh(), axis_name="seq", is_causal=True,
                                 key_value_seq_lengths=lengths)
        dense = functools.partial(attnjax.dot_product_attention, is_causal=True, key_value_seq_lengths=lengths,
                                  implementation="dense")
        (out, grads), (want_out, want_grads) = jax.jit(lambda *args: (
            _value_and_grads(ring, *args), _value_and_grads(dense, *args)))(q, k, v, cotangent)
        assert out.dtype == jnp.float64 and all(g.dtype == jnp.float64 for g in grads)
        np.testing.assert_allclose(out, want_out, atol=1e-12, rtol=0)
        for arg, got, want in zip("qkv", grads, want_grads):
            np.testing.assert_allclose(got, want, atol=1e-11, rtol=0, err_msg=f"d{arg}")


def test_explicit_mesh_keeps_output_sharded():
    """jax.make_mesh's default Explicit axes: inputs are resharded for shard_map; output stays sharded."""
    mesh = jax.make_mesh((8,), ("seq",), devices=jax.devices()[:8])
    q, k, v, _ = _inputs(2, 32, 32, 4, 2, 8, seed=3)
    out = jax.jit(functools.partial(ring_self_attention, mesh=mesh, axis_name="seq", layout="striped"))(q, k, v)
    assert out.sharding.spec == PartitionSpec(None, "seq", None, None)
    np.testing.assert_allclose(out, attnjax.dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_tiling_bounds_per_device_memory():
    """Compile-only: value+grad memory per device stays far below one untiled [B, N, T/P, S/P] block."""
    B, T, N, H = 1, 16384, 4, 32
    spec = PartitionSpec(None, "seq", None, None)  # per shard [1, 2048, 4, 32]
    attention = jax.shard_map(functools.partial(ring_attention, axis_name="seq", is_causal=True, block_size=256),
                              mesh=_mesh(), in_specs=(spec, spec, spec), out_specs=spec)
    arg = jax.ShapeDtypeStruct((B, T, N, H), jnp.float32)
    grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attention(q, k, v)), argnums=(0, 1, 2)))
    temp = grad.lower(arg, arg, arg).compile().memory_analysis().temp_size_in_bytes
    untiled_block = B * N * (T // 8) ** 2 * 4  # 64 MiB of float32 logits
    # Measured 12.8 MiB (tiles of 4 x 256 x 256 plus shards and accumulators); 272 MiB untiled.
    assert temp < untiled_block / 2, f"{temp / 2**20:.1f} MiB temporary per device"


# ---------------------------------------------------------------------------------------------- errors


def test_wrapper_rejects_lengths_that_do_not_split():
    q = jnp.zeros((1, 24, 2, 8))
    with pytest.raises(ValueError, match=r"query .*\(1, 24, 2, 8\).*divisible by 16.*zigzag"):
        ring_self_attention(q, q, q, mesh=_mesh(), axis_name="seq", is_causal=True)
    q30 = jnp.zeros((1, 30, 2, 8))
    with pytest.raises(ValueError, match=r"divisible by 8"):
        ring_self_attention(q30, q30, q30, mesh=_mesh(), axis_name="seq")
    k = jnp.zeros((1, 20, 2, 8))
    with pytest.raises(ValueError, match=r"key .*\(1, 20, 2, 8\).*divisible by 8"):
        ring_self_attention(q, k, k, mesh=_mesh(), axis_name="seq", layout="contiguous")


def test_wrapper_rejects_bad_axes_layout_and_batch():
    q = jnp.zeros((3, 32, 2, 8))
    with pytest.raises(ValueError, match=r"axis_name 'sequence' is not an axis of the mesh"):
        ring_self_attention(q, q, q, mesh=_mesh(), axis_name="sequence")
    with pytest.raises(ValueError, match=r"layout must be one of .*got 'diagonal'"):
        ring_self_attention(q, q, q, mesh=_mesh(), axis_name="seq", layout="diagonal")
    with pytest.raises(ValueError, match=r"batch size 3 .* divisible by the size 2 of batch_axis_name 'data'"):
        ring_self_attention(q, q, q, mesh=_mesh((2, 4), ("data", "seq")), axis_name="seq", batch_axis_name="data")
    with pytest.raises(ValueError, match=r"query heads N=3 must be a multiple of key/value heads K=2"):
        ring_self_attention(jnp.zeros((3, 32, 3, 8)), q, q, mesh=_mesh(), axis_name="seq")
    with pytest.raises(TypeError, match=r"key_value_seq_lengths must be an integer array"):
        ring_self_attention(q, q, q, mesh=_mesh(), axis_name="seq", key_value_seq_lengths=jnp.ones(3))


def test_ring_attention_outside_shard_map_says_so():
    q = jnp.zeros((1, 8, 2, 4))
    with pytest.raises(ValueError, match=r"inside jax.shard_map .* axis_name='seq'"):
        ring_attention(q, q, q, axis_name="seq")


def test_rejects_bad_block_size():
    q = jnp.zeros((1, 32, 2, 8))
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=r"block_size must be an int >= 1, got"):
            ring_self_attention(q, q, q, mesh=_mesh(), axis_name="seq", block_size=bad)


@pytest.mark.parametrize("length, chunks, target, expected", [
    (4096, 1, 512, 512),
    (4096, 2, 512, 512),
    (96, 2, 512, 48),  # short shard: one tile per chunk
    (1000, 1, 512, 500),  # largest divisor not above the target
    (1200, 2, 512, 300),  # tiles never straddle the two zigzag chunks of 600
    (2 * 1009, 2, 512, 1009),  # prime chunk: no divisor in [64, 512], one tile per chunk
])
def test_pick_block(length, chunks, target, expected):
    assert pick_block(length, chunks, target) == expected


def test_ring_attention_rejects_odd_zigzag_shards():
    q = jnp.zeros((1, 24, 2, 8))  # 3 tokens per device on 8 devices: cannot split into 2 chunks
    sharded = jax.shard_map(
        functools.partial(ring_attention, axis_name="seq", layout="zigzag", is_causal=True), mesh=_mesh(),
        in_specs=PartitionSpec(None, "seq", None, None), out_specs=PartitionSpec(None, "seq", None, None))
    with pytest.raises(ValueError, match=r"even per-shard query length.*\(1, 3, 2, 8\)"):
        sharded(q, q, q)


def _ring_for_the_kit(query, key, value, is_causal=False, *, devices=2):
    """``ring_self_attention`` on any ``T``/``S``: pads both to a multiple of two chunks per device
    (zigzag), masks the padded keys with ``key_value_seq_lengths`` and drops the padded queries."""
    T, S, multiple = query.shape[1], key.shape[1], 2 * devices
    pad = lambda x, n: jnp.pad(x, ((0, 0), (0, -n % multiple), (0, 0), (0, 0)))
    lengths = jnp.full((query.shape[0],), S, jnp.int32)
    out = ring_self_attention(pad(query, T), pad(key, S), pad(value, S), mesh=_mesh((devices,)), axis_name="seq",
                              is_causal=is_causal, layout="zigzag", key_value_seq_lengths=lengths, block_size=2)
    return out[:, :T]


@pytest.mark.slow
def test_ring_passes_the_conformance_kit():
    """Ring attention has no ``mask`` argument (sequence sharding has no [T, S] mask), so the kit checks
    every property but the masked ones, equality with the dense path in values and jacobians included."""
    from attnjax.testing import check_attention

    check_attention(_ring_for_the_kit, exact_softmax=True, mask_kind=None, max_examples=2)


@pytest.mark.parametrize("options", [dict(is_causal=True), dict(window=(3, 2)), dict(is_causal=True, window=(4, 4)),
                                     dict(lengths=True), dict(is_causal=True, lengths=True), dict(segments=True),
                                     dict(is_causal=True, segments=True)])
def test_tile_fully_visible_equals_all_of_the_tile_mask(options):
    """The fast path's test (from position extremes and segment ids) is exact: it agrees with
    ``all(mask)`` on random tiles of arbitrary (also non-contiguous, as in striped layouts) positions."""
    from attnjax.parallel.ring_kernels import RingConfig, _tile_fully_visible, _tile_mask

    cfg = RingConfig(axis_name="seq", layout="striped", is_causal=options.get("is_causal", False),
                     window=options.get("window"), scale=1.0, logit_softcap=None, block_q=4, block_k=4)
    rng = np.random.RandomState(0)
    outcomes = set()
    for _ in range(200):
        q_start = rng.randint(6, 20)
        k_start = q_start + rng.randint(-6, 3)  # keys near the queries, so some tiles are fully visible
        q_pos, k_pos = (jnp.asarray(start + np.sort(rng.choice(3, 2, replace=False))) for start in (q_start, k_start))
        q_len, kv_len = ((jnp.asarray(rng.randint(10, 40, 2)) for _ in range(2)) if options.get("lengths")
                         else (None, None))
        # Segment ids [B=2, tile of 2], mostly a single segment so that both outcomes occur.
        q_seg, k_seg = ((jnp.asarray(rng.binomial(1, 0.15, (2, 2))) for _ in range(2)) if options.get("segments")
                        else (None, None))
        args = (cfg, q_pos, k_pos, q_seg, k_seg, q_len, kv_len)
        expected = bool(jnp.all(_tile_mask(*args)))
        assert bool(_tile_fully_visible(*args)) == expected, args[1:]
        outcomes.add(expected)
    assert outcomes == {True, False}  # both branches were exercised


# Packed sequences whose boundaries fall inside tiles and shards: row 0 holds segments of 5, 11 and 16
# tokens, row 1 of 20 and 12 (queries); the keys of the cross-attention case are packed differently.
_SEGMENTS = jnp.array([[0] * 5 + [1] * 11 + [2] * 16, [0] * 20 + [1] * 12], jnp.int32)
_KEY_SEGMENTS = jnp.array([[0] * 30 + [1] * 10 + [2] * 24, [0] * 8 + [1] * 56], jnp.int32)


@pytest.mark.parametrize("layout, is_causal, S", [("contiguous", False, 32), ("zigzag", True, 32),
                                                  ("striped", True, 32), ("contiguous", False, 64)])
def test_ring_segment_ids_match_dense_with_a_segment_mask(layout, is_causal, S):
    B, T, N, K, H = 2, 32, 4, 2, 8
    q, k, v, cotangent = _inputs(B, T, S, N, K, H, seed=3)
    key_segments = None if S == T else _KEY_SEGMENTS
    mask = attnjax.ops.segment_mask(_SEGMENTS, key_segments)

    def ring(q, k, v):
        return ring_self_attention(q, k, v, mesh=_mesh((4,)), axis_name="seq", is_causal=is_causal, layout=layout,
                                   query_segment_ids=_SEGMENTS, key_segment_ids=key_segments, block_size=2)

    def dense(q, k, v):
        return attnjax.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)

    _assert_equal_values_and_grads(ring, dense, q, k, v, cotangent)


def test_ring_segment_id_errors():
    q, k, v, _ = _inputs(2, 32, 64, 4, 2, 8)
    mesh = _mesh((4,))
    with pytest.raises(ValueError, match=r"key_segment_ids is needed .* differ in length"):
        ring_self_attention(q, k, v, mesh=mesh, axis_name="seq", query_segment_ids=_SEGMENTS)
    with pytest.raises(ValueError, match=r"key_segment_ids needs query_segment_ids"):
        ring_self_attention(q, k, v, mesh=mesh, axis_name="seq", key_segment_ids=_KEY_SEGMENTS)
    with pytest.raises(ValueError, match=r"query_segment_ids must have shape \[B, L\] = \(2, 32\), got \(2, 64\)"):
        ring_self_attention(q, k, v, mesh=mesh, axis_name="seq", query_segment_ids=_KEY_SEGMENTS,
                            key_segment_ids=_KEY_SEGMENTS)
    with pytest.raises(TypeError, match=r"key_segment_ids must be an integer array"):
        ring_self_attention(q, k, v, mesh=mesh, axis_name="seq", query_segment_ids=_SEGMENTS,
                            key_segment_ids=_KEY_SEGMENTS.astype(jnp.float32))


# ---------------------------------------------------------------------------- score_mod and mask_mod


def _alibi_mod(score, batch, head, q_idx, kv_idx, slopes):
    """ALiBi with one learned slope per query head, at global positions."""
    return score - slopes[head] * jnp.abs(q_idx - kv_idx).astype(score.dtype)


_SLOPES = jnp.array([0.5, 0.25, 0.125, 0.0625])


def _value_and_grads_with_params(attention, q, k, v, params, cotangent):
    out, pull = jax.vjp(attention, q, k, v, params)
    return out, pull(cotangent)


@pytest.mark.parametrize("layout, is_causal", [("contiguous", False), ("contiguous", True), ("striped", False),
                                               ("striped", True), ("zigzag", False), ("zigzag", True)])
def test_ring_hooks_match_dense_with_the_bias_and_mask_materialized(layout, is_causal):
    """ALiBi as a score_mod with learned slopes and packed documents as a mask_mod closing over traced segment
    ids (boundaries inside shards and tiles), against dense with the bias and mask materialized: values and
    gradients of q, k, v and the slopes (the sum of every device's share). The zigzag cases also shard the
    batch, so the hooks must see global batch indices (the documents differ per row); one striped case adds a
    softcap, whose derivative is taken before the score_mod."""
    B, T, N, K, H = 2, 32, 4, 2, 8
    q, k, v, cotangent = _inputs(B, T, T, N, K, H, seed=4)
    sharded_batch = layout == "zigzag"
    softcap = 2.0 if (layout, is_causal) == ("striped", False) else None
    mesh = _mesh((2, 4), ("data", "seq")) if sharded_batch else _mesh((4,))  # per device [1|2, 8, N|K, H]

    @jax.jit
    def both(q, k, v, slopes, ids):
        documents = lambda b, h, q_idx, kv_idx: ids[b, q_idx] == ids[b, kv_idx]

        def ring(q, k, v, slopes):
            return ring_self_attention(q, k, v, mesh=mesh, axis_name="seq", is_causal=is_causal, layout=layout,
                                       batch_axis_name="data" if sharded_batch else None, block_size=2,
                                       logit_softcap=softcap, score_mod=_alibi_mod, mask_mod=documents,
                                       score_mod_params=slopes)

        def dense(q, k, v, slopes):
            bias = attnjax.ops.alibi_bias(jnp.arange(T), jnp.arange(T), slopes, is_causal=False)
            return attnjax.dot_product_attention(q, k, v, bias, attnjax.ops.segment_mask(ids), is_causal=is_causal,
                                                 logit_softcap=softcap, implementation="dense")

        return [_value_and_grads_with_params(f, q, k, v, slopes, cotangent) for f in (ring, dense)]

    (out, grads), (want_out, want_grads) = both(q, k, v, _SLOPES, _SEGMENTS)
    np.testing.assert_allclose(out, want_out, atol=1e-5, rtol=1e-5)
    for arg, got, want in zip(("q", "k", "v", "slopes"), grads, want_grads):
        assert bool(jnp.all(jnp.isfinite(got))), f"d{arg} not finite"
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=f"d{arg}")
    assert float(jnp.min(jnp.abs(want_grads[3]))) > 1e-2  # every slope's gradient is really compared


def test_ring_skips_the_tiles_a_mask_mod_hides():
    """Observable block skipping: a NaN in the value of a masked-out key reaches every row of a tile that is
    computed (``0 * NaN``; the dense control shows it). With two documents of 16 tokens on 4 devices of 8, the
    tiles pairing them are hidden by the mask_mod, so rows of document 0 stay exact in the output and in the
    query gradient: the forward and the backward ring both skip those tiles. Run as the attention layer's
    ``RingAttentionFn`` inside the caller's ``shard_map``."""
    B, T, N, K, H = 1, 32, 2, 1, 8
    q, k, v, cotangent = _inputs(B, T, T, N, K, H, seed=5)
    ids = jnp.array([[0] * 16 + [1] * 16], jnp.int32)
    documents = lambda b, h, q_idx, kv_idx: ids[b, q_idx] == ids[b, kv_idx]
    rows_before = jnp.zeros_like(cotangent).at[:, :16].set(cotangent[:, :16])

    def run(attention, v):
        out, pull = jax.vjp(lambda q: attention(q, k, v), q)
        return out, pull(rows_before)[0]

    # The layer's attention_fn inside the caller's shard_map (VMA check on), the hook passed per call.
    spec = PartitionSpec(None, "seq", None, None)  # per shard [1, 8, N|K, H]
    layer_fn = RingAttentionFn("seq", "contiguous", block_size=4)
    ring = jax.shard_map(lambda q, k, v: layer_fn(q, k, v, mask_mod=documents), mesh=_mesh((4,)),
                         in_specs=(spec, spec, spec), out_specs=spec)
    dense = functools.partial(attnjax.dot_product_attention, mask=attnjax.ops.segment_mask(ids),
                              implementation="dense")
    poisoned = v.at[:, 16:].set(jnp.nan)
    (out, grad), (want, want_grad), (dense_out, _) = jax.jit(lambda v, poisoned: (
        run(ring, poisoned), run(dense, v), run(dense, poisoned)))(v, poisoned)
    assert np.all(np.isnan(dense_out[:, :16])), "control: a computed hidden tile carries the NaN"
    np.testing.assert_allclose(out[:, :16], want[:, :16], atol=1e-5)
    np.testing.assert_allclose(grad[:, :16], want_grad[:, :16], atol=1e-4)


def test_ring_hook_errors_are_named():
    q, k, v, _ = _inputs(1, 32, 32, 4, 2, 8)
    ring = functools.partial(ring_self_attention, mesh=_mesh((4,)), axis_name="seq")
    with pytest.raises(ValueError, match=r"score_mod_params is passed to score_mod, but score_mod is None"):
        ring(q, k, v, score_mod_params=_SLOPES)
    with pytest.raises(TypeError, match=r"mask_mod must take 4 positional arguments"):
        ring(q, k, v, mask_mod=lambda q_idx, kv_idx: q_idx >= kv_idx)

    def closing_over(q, slopes):  # a differentiated slope vector hidden in a closure, not in score_mod_params
        hook = lambda s, b, h, q_idx, kv_idx, params: s - slopes[h] * jnp.abs(q_idx - kv_idx)
        return jnp.sum(ring(q, k, v, score_mod=hook))

    with pytest.raises(ValueError, match=r"closes over a differentiated float32\[4\] value .* pass it in "
                                         r"score_mod_params"):
        jax.grad(closing_over, argnums=1)(q, _SLOPES)
