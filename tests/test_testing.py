"""The conformance kit must pass a correct attention function and *fail* broken ones, naming the
violated property and showing a counterexample."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import dot_product_attention
from attnjax.ops.positional import alibi_bias, alibi_slopes
from attnjax.testing import SkippedCheckWarning, check_attention, check_registered

FAST = dict(max_examples=2, dtypes=())


def plain_attention(q, k, v, mask=None, is_causal=False, *, scale=None, mask_value=-1e30, zero_empty=True,
                    ignore_mask=False, ignore_causal=False):
    """A user's own straightforward attention, with switches that break it in specific ways."""
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    kn = jnp.repeat(k, N // K, axis=2).astype(jnp.float32)
    vn = jnp.repeat(v, N // K, axis=2).astype(jnp.float32)
    logits = jnp.einsum("btnh,bsnh->bnts", q.astype(jnp.float32), kn) * (scale or 1 / np.sqrt(H))
    keep = jnp.ones((B, N, T, S), bool)
    if mask is not None and not ignore_mask:
        keep = keep & mask
    if is_causal and not ignore_causal:
        keep = keep & (jnp.arange(S)[None, :] <= jnp.arange(T)[:, None])
    logits = jnp.where(keep, logits, mask_value)
    p = jax.nn.softmax(logits, axis=-1)
    if zero_empty:
        p = jnp.where(keep.any(-1, keepdims=True), p, 0.0)
    return jnp.einsum("bnts,bsnh->btnh", p, vn).astype(q.dtype)


def jax_nn_attention(q, k, v, mask=None, is_causal=False):
    """``jax.nn.dot_product_attention`` in the kit's calling convention: rows that see no key output
    the mean of the values over all keys (its masked logits all equal one large negative number)."""
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal, implementation="xla")


def _fails(fn, prop, **options):
    with pytest.raises(AssertionError) as info:
        check_attention(fn, **options)
    message = str(info.value)
    assert f"[{prop}] violated" in message, message
    assert "counterexample" in message, message
    return message


@pytest.mark.slow  # a full passing kit run: several compilations
def test_a_correct_user_function_passes_every_property():
    check_attention(plain_attention, max_examples=3)


@pytest.mark.slow  # a full passing kit run: several compilations
def test_dot_product_attention_passes_as_exact_softmax():
    check_attention(dot_product_attention, exact_softmax=True, max_examples=2)


@pytest.mark.slow  # a full passing kit run: several compilations
def test_dot_product_attention_passes_when_zeros_are_required():
    # attnjax's own convention: fully masked rows are exactly zero.
    check_attention(dot_product_attention, masked_rows="zeros", **FAST)


@pytest.mark.slow  # a full passing kit run: several compilations
def test_jax_nn_dot_product_attention_passes_with_default_options():
    # jax.nn's XLA path asks dot_general for float16 x float16 -> float32, which the CPU backend
    # rejects ("precision 'F16_F16_F32' is not supported"): a platform limit, not an attention bug.
    dtypes = ("bfloat16",) if jax.default_backend() == "cpu" else ("bfloat16", "float16")
    check_attention(jax_nn_attention, dtypes=dtypes)


def test_jax_nn_mean_on_fully_masked_rows_fails_when_zeros_are_required():
    message = _fails(jax_nn_attention, "fully masked rows", masked_rows="zeros", **FAST)
    assert "masked_rows='zeros'" in message and "max_abs_distance_to_zeros" in message, message


def test_leaking_masked_keys_is_caught():
    # A soft additive mask (-5) still lets masked keys through.
    fn = lambda q, k, v, mask=None, is_causal=False: plain_attention(q, k, v, mask, is_causal, mask_value=-5.0)
    message = _fails(fn, "masked keys", **FAST)
    assert "mask" in message


def test_ignoring_is_causal_is_caught_by_gradient():
    fn = lambda q, k, v, mask=None, is_causal=False: plain_attention(q, k, v, mask, is_causal, ignore_causal=True)
    message = _fails(fn, "causality", mask_kind=None, **FAST)
    assert "later position" in message


def test_nan_on_fully_masked_rows_is_caught():
    fn = lambda q, k, v, mask=None, is_causal=False: plain_attention(q, k, v, mask, is_causal, mask_value=-jnp.inf,
                                                                     zero_empty=False)
    message = _fails(fn, "fully masked rows", **FAST)
    assert "not finite" in message


def _on_empty_rows(value_fn):
    """``plain_attention`` whose rows that see no key output ``value_fn(q, k, v, mask, is_causal)``."""
    def fn(q, k, v, mask=None, is_causal=False):
        out = plain_attention(q, k, v, mask, is_causal)
        if mask is None:
            return out
        sees_a_key = jnp.broadcast_to(mask, (q.shape[0], q.shape[2], q.shape[1], k.shape[1])).any(-1)  # [B, N, T]
        return jnp.where(jnp.transpose(sees_a_key, (0, 2, 1))[..., None], out, value_fn(q, k, v, mask, is_causal))

    return fn


@pytest.mark.parametrize("value_fn", [
    lambda q, k, v, mask, is_causal: jnp.ones_like(q),
    # A plausible bug: falling back to unmasked attention when a row sees nothing (finite, not uniform).
    lambda q, k, v, mask, is_causal: plain_attention(q, k, v, None, is_causal),
], ids=["ones", "unmasked_softmax"])
def test_another_finite_value_on_fully_masked_rows_is_caught(value_fn):
    message = _fails(_on_empty_rows(value_fn), "fully masked rows", **FAST)
    assert "max_abs_distance_to_mean" in message, message


def test_mixing_the_batch_is_caught():
    def fn(q, k, v, mask=None, is_causal=False):
        return plain_attention(q, k - jnp.mean(k, axis=0, keepdims=True), v, mask, is_causal)

    _fails(fn, "batch independence", mask_kind=None, supports_causal=False, **FAST)


@pytest.mark.slow  # a full passing kit run: several compilations
def test_mixing_heads_is_caught():
    def fn(q, k, v, mask=None, is_causal=False):
        return plain_attention(q + 0.1 * jnp.mean(q, axis=2, keepdims=True), k, v, mask, is_causal)

    message = _fails(fn, "head independence", mask_kind=None, supports_causal=False, **FAST)
    assert "a different head" in message


def test_positional_bias_claimed_position_free_is_caught():
    def fn(q, k, v, mask=None, is_causal=False):
        T, N, S = q.shape[1], q.shape[2], k.shape[1]
        bias = alibi_bias(jnp.arange(T), jnp.arange(S), alibi_slopes(N) * 4, is_causal=False)
        return dot_product_attention(q, k, v, bias, mask, is_causal=is_causal)

    _fails(fn, "key permutation", **FAST)
    # Not softmax attention either (a positional bias): it says so with reference=None.
    check_attention(fn, position_free=False, reference=None, **FAST)


def test_overflow_at_extreme_logits_is_caught():
    def fn(q, k, v, mask=None, is_causal=False):  # softmax without subtracting the row max
        logits = jnp.einsum("btnh,bsnh->bnts", q, jnp.repeat(k, q.shape[2] // k.shape[2], axis=2))
        e = jnp.exp(logits / np.sqrt(q.shape[-1]))
        p = e / e.sum(-1, keepdims=True)
        return jnp.einsum("bnts,bsnh->btnh", p, jnp.repeat(v, q.shape[2] // k.shape[2], axis=2))

    _fails(fn, "extreme logits", mask_kind=None, supports_causal=False, **FAST)


def test_wrong_output_dtype_is_caught():
    fn = lambda q, k, v, mask=None, is_causal=False: plain_attention(q, k, v, mask, is_causal).astype(jnp.float32)
    _fails(fn, "low precision", max_examples=2, dtypes=("bfloat16",))


def test_claiming_exact_softmax_with_another_temperature_is_caught():
    fn = lambda q, k, v, mask=None, is_causal=False: plain_attention(q, k, v, mask, is_causal,
                                                                     scale=1.1 / np.sqrt(q.shape[-1]))
    _fails(fn, "exact softmax", exact_softmax=True, **FAST)


def test_an_approximation_outside_its_tolerance_is_caught():
    def uniform(q, k, v, mask=None, is_causal=False):  # mean of the values: a poor approximation
        vn = jnp.repeat(v, q.shape[2] // k.shape[2], axis=2)
        if is_causal:
            counts = jnp.arange(1, v.shape[1] + 1, dtype=v.dtype)[None, :, None, None]
            return (jnp.cumsum(vn, axis=1) / counts)[:, :q.shape[1]]
        return jnp.broadcast_to(jnp.mean(vn, axis=1, keepdims=True), q.shape[:3] + (v.shape[-1],))

    message = _fails(uniform, "approximation", approx_tol=0.05, mask_kind=None, position_free=True, **FAST)
    assert "root-mean-square" in message


def test_trace_time_randomness_is_caught_by_the_jit_property():
    rng = np.random.default_rng(0)
    fn = lambda q, k, v, mask=None, is_causal=False: plain_attention(q, k, v, mask, is_causal) + rng.normal() * 1e-2
    _fails(fn, "jit", **FAST)


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(mask_kind="rows"), ValueError, "mask_kind"),
    (dict(masked_rows="mean"), ValueError, r"masked_rows must be one of \('zeros_or_mean', 'zeros'\), got 'mean'"),
    (dict(approx_tol=0.0), ValueError, "approx_tol"),
    (dict(max_examples=0), ValueError, "max_examples"),
    (dict(dtypes=("float8",)), ValueError, "dtypes"),
])
def test_bad_options_are_rejected(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        check_attention(plain_attention, **kwargs)
    with pytest.raises(TypeError, match="callable"):
        check_attention("attention")


# --------------------------------------------------------------------------- issue 24: verdicts on every backend

def _backend_refuses_float16(q, k, v, mask=None, is_causal=False):
    """``plain_attention``, but float16 inputs fail the way an XLA backend refuses a dtype."""
    if q.dtype == jnp.float16:
        raise ValueError(f"The precision 'F16_F16_F32' is not supported by dot_general on "
                         f"{jax.default_backend().upper()}")
    return plain_attention(q, k, v, mask, is_causal)


def test_a_dtype_the_backend_cannot_compute_is_skipped_with_a_note():
    with pytest.warns(SkippedCheckWarning, match=r"\[low precision\] skipped for dtype float16.*F16_F16_F32"):
        check_attention(_backend_refuses_float16, max_examples=1, dtypes=("bfloat16", "float16"))


def test_other_errors_in_low_precision_still_propagate():
    def buggy(q, k, v, mask=None, is_causal=False):
        if q.dtype == jnp.float16:
            raise ValueError("my float16 branch has a bug")
        return plain_attention(q, k, v, mask, is_causal)

    with pytest.raises(ValueError, match="my float16 branch has a bug"):
        check_attention(buggy, max_examples=1, dtypes=("float16",))


@pytest.mark.slow  # a full passing kit run: several compilations
def test_jax_nn_dot_product_attention_itself_passes_with_the_kit_defaults():
    # Issue 24: with every default (float16 included), on whatever backend runs the tests.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_attention(jax.nn.dot_product_attention)
    notes = [str(w.message) for w in caught if issubclass(w.category, SkippedCheckWarning)]
    if jax.default_backend() == "cpu":  # F16 x F16 -> F32 dot products are refused on CPU
        assert len(notes) == 1 and "float16" in notes[0] and "cpu" in notes[0], notes


# --------------------------------------------------------------------------- issue 24: masks of rank < 4

def _index_rank4_mask(q, k, v, mask=None, is_causal=False):
    """The linear-attention bug of issue 24: reads the mask's query axis, so a [S] mask raises IndexError."""
    if mask is not None and mask.shape[2] != 1:
        mask = mask & True
    return plain_attention(q, k, v, mask, is_causal)


def test_a_function_that_crashes_on_low_rank_masks_is_caught():
    message = _fails(_index_rank4_mask, "mask ranks", **FAST)
    assert "IndexError" in message and "rank 1" in message and "(4,)" in message, message


def test_a_key_mask_function_that_crashes_on_low_rank_masks_is_caught():
    message = _fails(_index_rank4_mask, "mask ranks", mask_kind="keys", mask_ranks=(1,), **FAST)
    assert "IndexError" in message


def test_a_low_rank_mask_read_along_the_wrong_axis_is_caught():
    def keys_as_queries(q, k, v, mask=None, is_causal=False):
        if mask is not None and mask.ndim == 1:
            mask = mask[:, None]  # bug: a [S] key mask read as a [T, 1] query mask
        return plain_attention(q, k, v, mask, is_causal)

    message = _fails(keys_as_queries, "mask ranks", **FAST)
    assert "rank-1 mask gives another output" in message, message


def test_mask_ranks_can_be_opted_out_explicitly():
    check_attention(_index_rank4_mask, mask_ranks=(), **FAST)
    with pytest.raises(ValueError, match=r"mask_ranks must be .*got \(4,\)"):
        check_attention(plain_attention, mask_ranks=(4,))
    with pytest.raises(ValueError, match="mask_ranks"):
        check_attention(plain_attention, mask_ranks=1)


@pytest.mark.parametrize("name", ["linear", "performer"])
def test_key_mask_variants_pass_the_mask_ranks_check(name):
    check_registered(name, max_examples=1, dtypes=())


# --------------------------------------------------------------------------- issue 24: softmax by default

ONE = dict(max_examples=1, dtypes=())  # the fixed cases and one drawn shape

def _unscaled(q, k, v, mask=None, is_causal=False):
    """The most common bug: softmax attention without the 1/sqrt(H) factor."""
    return plain_attention(q, k, v, mask, is_causal, scale=1.0)


def _sigmoid_attention(q, k, v, mask=None, is_causal=False):
    """A correct attention function that is not softmax attention: sigmoid(q.k / sqrt(H) - log S)."""
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    logits = jnp.einsum("btnh,bsnh->bnts", q, jnp.repeat(k, N // K, axis=2)) / np.sqrt(H) - np.log(S)
    keep = jnp.ones((B, N, T, S), bool) if mask is None else jnp.broadcast_to(mask, (B, N, T, S))
    if is_causal:
        keep = keep & (jnp.arange(S)[None, :] <= jnp.arange(T)[:, None])
    weights = jnp.where(keep, jax.nn.sigmoid(logits), 0.0)
    return jnp.einsum("bnts,bsnh->btnh", weights, jnp.repeat(v, N // K, axis=2))


def test_the_documented_call_catches_a_missing_sqrt_scaling():
    # Issue 24: this exact call used to pass; only exact_softmax=True caught it.
    with pytest.raises(AssertionError) as info:
        check_attention(_unscaled, mask_kind="full", supports_causal=True, position_free=True, max_examples=1)
    message = str(info.value)
    assert "[exact softmax] violated" in message and "scale 1/sqrt(H) = 0.5" in message, message
    assert "is the 1/sqrt(H) factor missing?" in message, message


def test_the_expected_scale_is_an_argument():
    check_attention(_unscaled, scale=1.0, **ONE)
    message = _fails(plain_attention, "exact softmax", scale=2.0, **ONE)
    assert "scale 2" in message and "factor missing" not in message, message


def test_a_function_that_is_not_softmax_attention_opts_out_explicitly():
    message = _fails(_sigmoid_attention, "exact softmax", **ONE)
    assert "[masked keys]" not in message and "[causality]" not in message, message
    check_attention(_sigmoid_attention, reference=None, **ONE)
    check_attention(_sigmoid_attention, exact_softmax=False, **ONE)  # the older spelling still works


def test_every_violated_property_is_reported_in_one_run():
    def three_bugs(q, k, v, mask=None, is_causal=False):  # leaks masked keys, ignores causality, wrong scale
        return plain_attention(q, k, v, mask, is_causal, mask_value=-5.0, ignore_causal=True, scale=1.0)

    with pytest.raises(AssertionError) as info:
        check_attention(three_bugs, **ONE)
    message = str(info.value)
    assert message.startswith("attnjax.testing.check_attention: 3 properties violated: "), message
    for prop in ("masked keys", "causality", "exact softmax"):
        assert f"[{prop}] violated" in message, (prop, message)
    assert message.count("counterexample:") == 3, message


def test_masks_are_printed_as_shapes_and_the_offending_row():
    fn = lambda q, k, v, mask=None, is_causal=False: plain_attention(q, k, v, mask, is_causal, mask_value=-5.0)
    message = _fails(fn, "masked keys", reference=None, **ONE)
    assert "mask: bool[2, 2, 4, 4] (True = attend" in message, message
    assert "row [b=" in message and "sees keys [" in message and "is masked)" in message, message
    assert "[[" not in message, message  # no array of rank >= 2 is printed


def test_an_error_after_violations_carries_them_in_a_note():
    def buggy(q, k, v, mask=None, is_causal=False):
        if q.dtype == jnp.float16:
            raise ValueError("my float16 branch has a bug")
        return _unscaled(q, k, v, mask, is_causal)

    with pytest.raises(ValueError, match="my float16 branch has a bug") as info:
        check_attention(buggy, max_examples=1, dtypes=("float16",))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "[exact softmax] violated" in notes, notes


@pytest.mark.parametrize("kwargs,word", [
    (dict(reference="dense"), r"reference must be 'softmax' .* or None .*got 'dense'"),
    (dict(scale=0.0), r"scale must be a finite number > 0 or None .*got 0.0"),
    (dict(scale=True), r"scale must be .*got True"),
    (dict(reference=None, scale=0.5), r"scale=0.5 is the scale .*reference=None"),
    (dict(reference=None, approx_tol=0.1), r"approx_tol=0.1 .*needs reference='softmax', got reference=None"),
    (dict(exact_softmax=True, reference=None), "exact_softmax=True contradicts reference=None"),
    (dict(exact_softmax=True, approx_tol=0.1), r"exact_softmax=True contradicts approx_tol=0.1"),
    (dict(exact_softmax="yes"), r"exact_softmax must be True, False or None, got 'yes'"),
])
def test_bad_reference_options_are_rejected(kwargs, word):
    with pytest.raises(ValueError, match=word):
        check_attention(plain_attention, **kwargs)
