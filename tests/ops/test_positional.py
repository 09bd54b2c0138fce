"""Positional encodings against plain per-element formulas written here with Python/numpy loops."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import dot_product_attention
from attnjax.ops import positional as P


def test_sinusoidal_matches_loop_formula():
    pos = np.array([0, 1, 5, 17])
    D = 6
    want = np.zeros((4, D))
    for a, p in enumerate(pos):
        for i in range(D // 2):
            w = 10000.0 ** (-2 * i / D)
            want[a, i] = math.sin(p * w)
            want[a, D // 2 + i] = math.cos(p * w)
    np.testing.assert_allclose(P.sinusoidal_encoding(pos, D), want, atol=1e-5)
    assert P.sinusoidal_encoding(jnp.stack([pos, pos + 1]), D).shape == (2, 4, D)


def test_learned_table_lookup_and_out_of_range_positions_are_zero():
    table = P.learned_table_init(jax.random.key(0), 5, 3)
    assert table.shape == (5, 3) and float(jnp.std(table)) < 0.1
    out = P.learned_encoding(table, jnp.array([[0, 4, 5, 9]]))
    np.testing.assert_allclose(out[0, :2], table[jnp.array([0, 4])])
    assert np.all(np.asarray(out)[0, 2:] == 0)
    g = jax.grad(lambda t: jnp.sum(P.learned_encoding(t, jnp.array([1, 1, 3]))))(table)
    np.testing.assert_allclose(g[:, 0], [0, 2, 0, 1, 0])


def _rope_loop(x, pos, base, fraction):
    x = np.asarray(x, np.float64)
    Bb, T, N, H = x.shape
    R = 2 * int(fraction * H // 2)
    out = x.copy()
    for t in range(T):
        for i in range(R // 2):
            angle = pos[t] * base ** (-2 * i / R)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[:, t, :, i], x[:, t, :, i + R // 2]
            out[:, t, :, i] = a * c - b * s
            out[:, t, :, i + R // 2] = b * c + a * s
    return out


@pytest.mark.parametrize("fraction,base", [(1.0, 10000.0), (0.5, 10000.0), (0.75, 100.0)])
def test_rope_matches_pairwise_rotation_and_its_gradient_is_the_inverse_rotation(fraction, base):
    x = jax.random.normal(jax.random.key(0), (2, 5, 3, 8))
    pos = np.array([0, 1, 2, 7, 30])
    out = P.rope(x, pos, base=base, fraction=fraction)
    np.testing.assert_allclose(out, _rope_loop(x, pos, base, fraction), atol=2e-5)
    r = jax.random.normal(jax.random.key(1), x.shape)
    g = jax.grad(lambda y: jnp.sum(P.rope(y, pos, base=base, fraction=fraction) * r))(x)
    np.testing.assert_allclose(g, _rope_loop(r, -pos, base, fraction), atol=2e-5)  # R^T = R(-p)
    assert P.rope(x.astype(jnp.bfloat16), pos).dtype == jnp.bfloat16


def test_rope_attention_depends_only_on_relative_positions():
    keys = jax.random.split(jax.random.key(2), 3)
    q = jax.random.normal(keys[0], (1, 6, 2, 8))
    k = jax.random.normal(keys[1], (1, 6, 2, 8))
    v = jax.random.normal(keys[2], (1, 6, 2, 8))
    pos = jnp.arange(6)
    a = dot_product_attention(P.rope(q, pos), P.rope(k, pos), v, is_causal=True)
    b = dot_product_attention(P.rope(q, pos + 113), P.rope(k, pos + 113), v, is_causal=True)
    np.testing.assert_allclose(a, b, atol=2e-4)
    batch_pos = jnp.stack([pos, pos + 3])
    assert P.rope(jnp.concatenate([q, q]), batch_pos).shape == (2, 6, 2, 8)


def test_alibi_slopes_follow_press_et_al():
    np.testing.assert_allclose(P.alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)], rtol=1e-6)
    np.testing.assert_allclose(P.alibi_slopes(4), [2.0 ** -(2 * (i + 1)) for i in range(4)], rtol=1e-6)
    # 6 heads: the 4-head slopes, then every other slope of 8 heads (2^-1, 2^-3).
    np.testing.assert_allclose(P.alibi_slopes(6), [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3], rtol=1e-6)


def test_alibi_bias_causal_and_bidirectional():
    slopes = jnp.array([0.5, 0.25])
    q, k = np.arange(3), np.arange(4)
    causal = P.alibi_bias(q, k, slopes, is_causal=True)
    both = P.alibi_bias(q, k, slopes, is_causal=False)
    assert causal.shape == (1, 2, 3, 4)
    for n, m in enumerate([0.5, 0.25]):
        for i in range(3):
            for j in range(4):
                assert float(both[0, n, i, j]) == pytest.approx(-m * abs(i - j))
                assert float(causal[0, n, i, j]) == pytest.approx(-m * (i - j) if j <= i else 0.0)
    # usable as the bias of dot_product_attention
    x = jnp.ones((1, 3, 2, 4))
    assert dot_product_attention(x, jnp.ones((1, 4, 2, 4)), jnp.ones((1, 4, 2, 4)), bias=both).shape == (1, 3, 2, 4)
    g = jax.grad(lambda s: jnp.sum(P.alibi_bias(q, k, s, is_causal=False)))(slopes)
    np.testing.assert_allclose(g, [-sum(abs(i - j) for i in range(3) for j in range(4))] * 2)


def _t5_bucket_scalar(rel, bidirectional, num_buckets, max_distance):
    n = -rel
    ret = 0
    if bidirectional:
        num_buckets //= 2
        if n < 0:
            ret += num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets_match_scalar_formula(bidirectional):
    rel = np.arange(-300, 301)
    got = np.asarray(P.t5_relative_bucket(rel, is_causal=not bidirectional, num_buckets=32, max_distance=128))
    want = [_t5_bucket_scalar(int(r), bidirectional, 32, 128) for r in rel]
    np.testing.assert_array_equal(got, want)
    assert got.min() >= 0 and got.max() < 32
    if bidirectional:
        assert got[300] == 0 and got[299] == 1 and got[301] == 17  # rel 0, one key back, one key ahead
    else:
        assert np.all(got[301:] == 0)


def test_t5_relative_bias_reads_the_table_per_head():
    table = P.t5_table_init(jax.random.key(0), 8, 3)
    q, k = jnp.arange(4), jnp.arange(5)
    bias = P.t5_relative_bias(table, q, k, is_causal=False, max_distance=16)
    assert bias.shape == (1, 3, 4, 5)
    for i in range(4):
        for j in range(5):
            b = _t5_bucket_scalar(j - i, True, 8, 16)
            np.testing.assert_allclose(bias[0, :, i, j], table[b])
    assert P.t5_relative_bias(table, jnp.stack([q, q]), jnp.stack([k, k])).shape == (2, 3, 4, 5)


def test_randomized_positions_are_sorted_distinct_subsets():
    pos = np.asarray(P.randomized_positions(jax.random.key(0), 64, 10, 200))
    assert pos.shape == (64, 10) and pos.dtype == np.int32
    assert np.all(np.diff(pos, axis=1) > 0)
    assert pos.min() >= 0 and pos.max() < 200
    assert len({tuple(r) for r in pos}) == 64
    # Uniform subsets: the largest of 10 draws from 200 has mean about 200 * 10 / 11.
    assert abs(pos[:, -1].mean() - 200 * 10 / 11) < 10
    np.testing.assert_array_equal(P.consecutive_positions(2, 3), [[0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(P.randomized_positions(jax.random.key(1), 2, 5, 5), [list(range(5))] * 2)


def test_positions_for_picks_consecutive_or_one_random_subset():
    np.testing.assert_array_equal(P.positions_for(None, 2, 4, randomized=False), [[0, 1, 2, 3]] * 2)
    a = P.positions_for(jax.random.key(0), 1, 6, randomized=True, max_len=2048)
    assert a.shape == (1, 6) and np.all(np.diff(np.asarray(a)) > 0) and int(a.max()) < 2048
    np.testing.assert_array_equal(a, P.randomized_positions(jax.random.key(0), 1, 6, 2048))
    assert not np.array_equal(a, P.positions_for(jax.random.key(1), 1, 6, randomized=True))


def test_relative_biases_use_differences_of_random_positions():
    """ALiBi and T5 on non-consecutive ``[B, T]`` and ``[1, T]`` positions: distances are p_j - p_i."""
    pos = np.asarray(P.randomized_positions(jax.random.key(3), 2, 5, 300))
    slopes, table = jnp.array([0.5, 0.125]), P.t5_table_init(jax.random.key(4), 16, 2)
    for q in (pos, pos[:1]):
        causal = np.asarray(P.alibi_bias(q, q, slopes, is_causal=True))
        both = np.asarray(P.alibi_bias(q, q, slopes, is_causal=False))
        t5 = np.asarray(P.t5_relative_bias(table, q, q, is_causal=False, max_distance=64))
        assert causal.shape == both.shape == t5.shape == (len(q), 2, 5, 5)
        d = q[:, :, None].astype(np.int64) - q[:, None, :]  # p_i - p_j, [B, T, S]
        m = np.asarray(slopes)[None, :, None, None]
        np.testing.assert_allclose(both, -m * np.abs(d)[:, None], rtol=1e-6)
        np.testing.assert_allclose(causal, -m * np.maximum(d, 0)[:, None], rtol=1e-6)
        buckets = np.vectorize(lambda r: _t5_bucket_scalar(int(r), True, 16, 64))(-d)
        np.testing.assert_allclose(t5, np.moveaxis(np.asarray(table)[buckets], -1, 1))


def test_positional_lookup_lists_valid_names():
    assert set(P.POSITIONAL) == {"sinusoidal", "learned", "rope", "alibi", "t5", "nope"}
    assert P.get_positional("rope").kind == "rotary"
    with pytest.raises(ValueError, match="alibi.*learned"):
        P.get_positional("absolute")
    with pytest.raises(TypeError, match="str"):
        P.get_positional(3)


def test_check_randomized_validates_the_choice_before_training():
    assert P.RANDOMIZED_EVAL == ("random", "consecutive")
    for name in ("sinusoidal", "learned", "rope", "alibi", "t5"):
        for mode in P.RANDOMIZED_EVAL:
            assert P.check_randomized(name, True, mode).name == name
    assert P.check_randomized("nope", False).kind == "none"
    with pytest.raises(ValueError, match="nope.*nothing to randomize"):
        P.check_randomized("nope", True)
    with pytest.raises(ValueError, match="randomized_eval.*'random', 'consecutive'.*'test'"):
        P.check_randomized("rope", True, "test")
    with pytest.raises(ValueError, match="randomized"):
        P.get_positional("randomized")  # the old name is gone: randomization is a flag of every encoding
    with pytest.raises(TypeError, match="randomized must be a bool"):
        P.check_randomized("rope", "yes")


@pytest.mark.parametrize("call,exc,word", [
    (lambda: P.sinusoidal_encoding(jnp.arange(3), 5), ValueError, "even"),
    (lambda: P.sinusoidal_encoding(jnp.zeros((1, 2, 3), jnp.int32), 4), ValueError, "positions"),
    (lambda: P.learned_encoding(jnp.zeros(3), jnp.arange(3)), ValueError, "table"),
    (lambda: P.learned_encoding(jnp.zeros((3, 2)), jnp.arange(3.0)), TypeError, "positions"),
    (lambda: P.rope(jnp.zeros((1, 4, 2, 8)), jnp.arange(5)), ValueError, "positions"),
    (lambda: P.rope(jnp.zeros((4, 2, 8)), jnp.arange(4)), ValueError, "x"),
    (lambda: P.rope(jnp.zeros((1, 4, 2, 8)), jnp.arange(4), fraction=0.0), ValueError, "fraction"),
    (lambda: P.rope(jnp.zeros((1, 4, 2, 8), jnp.int32), jnp.arange(4)), TypeError, "x"),
    (lambda: P.alibi_slopes(0), ValueError, "num_heads"),
    (lambda: P.alibi_bias(jnp.arange(3), jnp.arange(3), jnp.ones((2, 2))), ValueError, "slopes"),
    (lambda: P.alibi_bias(jnp.arange(3)[None], jnp.arange(3), jnp.ones(2)), ValueError, "k_positions"),
    (lambda: P.t5_relative_bucket(jnp.arange(3), num_buckets=1), ValueError, "num_buckets"),
    (lambda: P.randomized_positions(jax.random.key(0), 2, 6, 5), ValueError, "max_len"),
    (lambda: P.positions_for(None, 1, 4, randomized=True), ValueError, "rng"),
])
def test_malformed_input_is_rejected_with_the_argument_named(call, exc, word):
    with pytest.raises(exc, match=word):
        call()
