"""MQAR generator (Zoology semantics): a hand-worked layout, recall properties, scoring mask, power law, errors."""

import numpy as np
import pytest

from attnjax.data.mqar import (FILLER, _distinct, check_mqar, gap_probabilities, key_range, mqar_batch, mqar_tokens,
                               value_range)


def _make(seed=0, n=64, **kw):
    args = dict(vocab_size=32, seq_len=16, num_kv_pairs=3, noise=0.0)
    args.update(kw)
    return mqar_batch(np.random.default_rng(seed), n, **args)


def test_hand_worked_layout():
    """V=8, L=8, P=2: keys from {1, 2, 3}, values from {4..7}; the query region 4..7 has two slots (4 and 6),
    both used, so every example is ``k0 v0 k1 v1 | ka 0 kb 0`` with {a, b} = {0, 1} and targets v_a at 4, v_b
    at 6."""
    batch = mqar_batch(np.random.default_rng(3), 50, vocab_size=8, seq_len=8, num_kv_pairs=2, noise=0.0)
    assert batch["inputs"].shape == (50, 8) and batch["inputs"].dtype == np.int32
    np.testing.assert_array_equal(batch["loss_mask"], np.tile([0, 0, 0, 0, 1, 0, 1, 0], (50, 1)))
    orders = set()
    for x, y in zip(batch["inputs"], batch["targets"]):
        k0, v0, k1, v1 = x[:4]
        a = 0 if x[4] == k0 else 1
        expected_x = [k0, v0, k1, v1, (k0, k1)[a], 0, (k0, k1)[1 - a], 0]
        expected_y = [0, 0, 0, 0, (v0, v1)[a], 0, (v0, v1)[1 - a], 0]
        np.testing.assert_array_equal(x, expected_x)
        np.testing.assert_array_equal(y, expected_y)
        assert {k0, k1} <= {1, 2, 3} and k0 != k1 and {v0, v1} <= {4, 5, 6, 7} and v0 != v1
        orders.add(a)
    assert orders == {0, 1}  # the query order is random


@pytest.mark.parametrize("kw", [dict(), dict(noise=1.0), dict(noise=0.5, power_a=1.0),
                                dict(vocab_size=8192, seq_len=64, num_kv_pairs=4, noise=1.0),
                                dict(vocab_size=10, seq_len=16, num_kv_pairs=4)])
def test_every_query_recalls_the_value_paired_with_its_key(kw):
    batch = _make(**kw)
    V, L, P = (kw.get(k, d) for k, d in (("vocab_size", 32), ("seq_len", 16), ("num_kv_pairs", 3)))
    x, y, m = batch["inputs"], batch["targets"], batch["loss_mask"]
    assert x.shape == y.shape == m.shape == (64, L) and batch["seq_lengths"].tolist() == [L] * 64
    assert y.dtype == np.int32 and m.dtype == np.float32 and batch["seq_lengths"].dtype == np.int32
    (klo, khi), (vlo, vhi) = key_range(V), value_range(V)
    for row, tgt, mask in zip(x, y, m):
        keys, values = row[0:2 * P:2], row[1:2 * P:2]
        assert len(set(keys)) == P and len(set(values)) == P
        assert np.all((klo <= keys) & (keys < khi)) and np.all((vlo <= values) & (values < vhi))
        queries = np.nonzero(mask)[0]
        # Only the P query positions are scored: in the query region, at even offsets from it.
        assert len(queries) == P and np.all(queries >= 2 * P) and np.all((queries - 2 * P) % 2 == 0)
        pairs = dict(zip(keys, values))
        assert sorted(row[queries]) == sorted(keys)  # every pair queried once
        for q in queries:
            assert tgt[q] == pairs[row[q]]
        assert np.all(tgt[mask == 0] == 0)


def test_filler_noise_is_the_knob():
    quiet, noisy = _make(noise=0.0), _make(noise=1.0)
    filler = np.ones_like(quiet["loss_mask"], bool)
    filler[:, :6] = False
    filler &= quiet["loss_mask"] == 0
    assert np.all(quiet["inputs"][filler] == FILLER)
    noisy_filler = np.ones_like(noisy["loss_mask"], bool)
    noisy_filler[:, :6] = False
    noisy_filler &= noisy["loss_mask"] == 0
    tokens = noisy["inputs"][noisy_filler]
    assert np.mean(tokens != FILLER) > 0.9 and tokens.max() < 32 and len(np.unique(tokens)) > 20
    half = _make(noise=0.5, n=400)
    share = np.mean(half["inputs"][:, 6:][half["loss_mask"][:, 6:] == 0] != FILLER)
    assert 0.4 < share < 0.55  # about half the fillers (a random token may itself be 0)


def test_determinism_per_seed_and_one_hot_view():
    a, b, c = _make(seed=7), _make(seed=7), _make(seed=8)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["inputs"], c["inputs"])
    hot = _make(seed=7, one_hot=True)
    assert hot["inputs"].shape == (64, 16, 32) and hot["inputs"].dtype == np.float32
    np.testing.assert_array_equal(hot["inputs"].argmax(-1), a["inputs"])
    np.testing.assert_array_equal(hot["inputs"].sum(-1), 1.0)


def test_query_gaps_follow_the_power_law():
    """The first query drawn (pair 0) lands ``g`` slots after the context with probability p(g), as a weighted
    draw; Zoology's a=0.01 favours the nearest slots, a=1 is uniform."""
    n, P, L = 4000, 2, 24
    slots = (L - 2 * P) // 2
    for a in (0.01, 1.0):
        tokens, _, mask = mqar_tokens(np.random.default_rng(0), n, vocab_size=64, seq_len=L, num_kv_pairs=P,
                                      noise=0.0, power_a=a)
        first_key = tokens[:, 0]
        pos = np.argmax((tokens == first_key[:, None]) & mask, axis=1)
        freq = np.bincount((pos - 2 * P) // 2, minlength=slots) / n
        np.testing.assert_allclose(freq, gap_probabilities(slots, a), atol=0.03)
    p = gap_probabilities(slots, 0.01)
    assert p[0] > p[1] > p[-1] and abs(p.sum() - 1) < 1e-12


def test_distinct_rows_in_both_regimes():
    rng = np.random.default_rng(0)
    for low, high, k in ((1, 4096, 16), (1, 5, 4), (3, 9, 6)):
        out = _distinct(rng, low, high, 300, k)
        assert out.shape == (300, k) and out.min() >= low and out.max() < high
        assert all(len(set(r)) == k for r in out.tolist())


@pytest.mark.parametrize("kw, match", [
    (dict(seq_len=15), "seq_len must be even"),
    (dict(seq_len=8, num_kv_pairs=3), r"seq_len must be >= 4 \* num_kv_pairs = 12 .*got seq_len=8 for num_kv_pairs=3"),
    (dict(vocab_size=6, num_kv_pairs=3), "vocab_size must give at least num_kv_pairs=3 distinct keys.*needs "
                                         "vocab_size >= 8, got 6"),
    (dict(noise=1.5), r"noise must be a float in \[0, 1\].*got 1.5"),
    (dict(power_a=0.0), "power_a must be a float > 0.*got 0.0"),
    (dict(vocab_size=True), "vocab_size must be an int >= 4, got True"),
    (dict(num_kv_pairs=0), "num_kv_pairs must be an int >= 1, got 0"),
])
def test_errors_name_the_argument(kw, match):
    args = dict(vocab_size=32, seq_len=16, num_kv_pairs=3)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        check_mqar(**args)
    with pytest.raises(ValueError, match=match):
        mqar_batch(np.random.default_rng(0), 4, **args)
    with pytest.raises(ValueError, match="num_examples must be an int >= 1, got 0"):
        mqar_batch(np.random.default_rng(0), 0, vocab_size=32, seq_len=16, num_kv_pairs=3)
