"""PositionalEncoding, and its randomized version (Ruoss et al. 2023), against the pure ops it calls."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn.positional import PositionalEncoding, PositionalInputs
from attnjax.ops import flex
from attnjax.ops import positional as P

B, L, D, N, MAX_LEN = 3, 6, 8, 2, 64
RANDOMIZABLE = ("sinusoidal", "learned", "rope", "alibi", "t5")


def _apply(encoding, train, key=None, *, randomized=True, randomized_eval="random", length=L, max_len=MAX_LEN,
           causal=False, bias_as_score_mod=False):
    module = PositionalEncoding(encoding, D, N, max_len=max_len, causal=causal, randomized=randomized,
                                randomized_eval=randomized_eval, bias_as_score_mod=bias_as_score_mod)
    variables = module.init(jax.random.key(0), B, length, train)
    rngs = None if key is None else {"positions": jax.random.key(key)}
    return module.apply(variables, B, length, train, rngs=rngs), variables.get("params", {})


def _positions(train, key, **kw):
    """The drawn positions, read from the rope encoding (the same 'positions' stream gives the same draw)."""
    return np.asarray(_apply("rope", train, key, **kw)[0].rotary_positions)


@pytest.mark.parametrize("train", [True, False])
def test_random_positions_are_sorted_distinct_in_range_shared_by_the_batch_and_fresh_per_call(train):
    draws = [_positions(train, key) for key in range(8)]
    for pos in draws:
        assert pos.shape == (1, L)  # one subset for the whole batch (Ruoss et al.)
        assert np.all(np.diff(pos[0]) > 0) and pos.min() >= 0 and pos.max() < MAX_LEN
    assert len({tuple(p[0]) for p in draws}) == len(draws)  # a new subset in every forward pass
    assert any(not np.array_equal(p[0], np.arange(L)) for p in draws)
    np.testing.assert_array_equal(_positions(train, 5), draws[5])  # fixed rng, identical draw


def test_consecutive_eval_is_the_earlier_method_random_in_training_only():
    np.testing.assert_array_equal(_positions(False, 1, randomized_eval="consecutive"), [np.arange(L)])
    np.testing.assert_array_equal(_positions(False, None, randomized_eval="consecutive"), [np.arange(L)])  # no rng
    train = [_positions(True, k, randomized_eval="consecutive") for k in (1, 2)]
    assert not np.array_equal(*train) and not np.array_equal(train[0], [np.arange(L)])
    np.testing.assert_array_equal(_positions(False, None, randomized=False), [np.arange(L)])


@pytest.mark.parametrize("encoding", RANDOMIZABLE)
@pytest.mark.parametrize("train", [True, False])
def test_every_encoding_is_the_deterministic_formula_at_the_drawn_positions(encoding, train):
    out, params = _apply(encoding, train, key=7, causal=encoding == "alibi")
    pos = jnp.asarray(_positions(train, 7))
    assert not np.array_equal(pos, [np.arange(L)])
    if encoding == "sinusoidal":
        got, want = out.embedding, P.sinusoidal_encoding(pos, D)
    elif encoding == "learned":
        got, want = out.embedding, P.learned_encoding(params["table"], pos)
    elif encoding == "rope":
        got, want = out.rotary_positions, pos
    elif encoding == "alibi":
        got, want = out.bias, P.alibi_bias(pos, pos, P.alibi_slopes(N), is_causal=True)
    else:
        got, want = out.bias, P.t5_relative_bias(params["t5_table"], pos, pos, is_causal=False)
    assert got.shape[0] == 1  # shared by the batch: [1, L, D], [1, L] or [1, N, L, L]
    np.testing.assert_array_equal(got, want)
    consecutive, _ = _apply(encoding, train, randomized=False)
    assert not np.allclose(got, [x for x in consecutive if x is not None][0])


@pytest.mark.parametrize("encoding, causal", [("alibi", True), ("alibi", False), ("t5", False), ("t5", True)])
@pytest.mark.parametrize("randomized", [True, False])
def test_bias_as_score_mod_is_the_materialized_bias_per_logit(encoding, causal, randomized):
    """With ``bias_as_score_mod`` a bias encoding returns its hook (no array), with the same parameters; the
    hook evaluated on every (query, key) pair is the materialized bias, at the drawn positions."""
    hook, params = _apply(encoding, True, key=3, randomized=randomized, causal=causal, bias_as_score_mod=True)
    want, want_params = _apply(encoding, True, key=3, randomized=randomized, causal=causal)
    assert hook.bias is None and hook.embedding is None and want.score_mod is None
    jax.tree.map(np.testing.assert_array_equal, params, want_params)
    mods = flex.check_mods(hook.score_mod.score_mod, None, hook.score_mod.score_mod_params, score_dtype=jnp.float32)
    indices = tuple(jnp.arange(n, dtype=jnp.int32) for n in (1, N, L, L))
    got = mods.scores(jnp.zeros((1, N, L, L)), hook.score_mod.score_mod_params, indices)
    np.testing.assert_array_equal(got, want.bias)


def test_init_without_a_positions_rng_and_same_parameters_as_the_plain_encoding():
    for encoding in ("learned", "t5"):
        init = lambda randomized: PositionalEncoding(encoding, D, N, max_len=MAX_LEN, randomized=randomized).init(
            jax.random.key(0), B, L, False)  # the 'params' key only, as model.init(key, ...) passes
        jax.tree.map(np.testing.assert_array_equal, init(True), init(False))


@pytest.mark.parametrize("train", [True, False])
def test_missing_positions_rng_is_a_clear_error(train):
    module = PositionalEncoding("sinusoidal", D, N, max_len=MAX_LEN, randomized=True)
    variables = module.init(jax.random.key(0), B, L, train)
    with pytest.raises(ValueError, match=r"""'positions' rng: pass rngs=\{"positions": key\}"""):
        module.apply(variables, B, L, train, rngs={"dropout": jax.random.key(1)})


def test_bad_randomized_choices_are_rejected_with_the_argument_named():
    with pytest.raises(ValueError, match="nope.*nothing to randomize"):
        _apply("nope", True, 0)
    assert _apply("nope", True, 0, randomized=False)[0] == PositionalInputs()
    with pytest.raises(ValueError, match="randomized_eval must be one of 'random', 'consecutive', got 'test'"):
        _apply("rope", False, 0, randomized_eval="test")
    with pytest.raises(ValueError, match="sequence length 9 exceeds max_len=8"):
        _apply("sinusoidal", True, 0, length=9, max_len=8)
    with pytest.raises(ValueError, match="sequence length 9 exceeds max_len=8"):
        _apply("sinusoidal", False, 0, length=9, max_len=8)
    # Consecutive positions at evaluation may run past max_len (sinusoidal extrapolation).
    out, _ = _apply("sinusoidal", False, length=9, max_len=8, randomized_eval="consecutive")
    assert out.embedding.shape == (1, 9, D)
