"""The registry: one dict, uniform call signature, consistent metadata, and every entry conforms."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attnjax
from attnjax import dot_product_attention
from attnjax.ops import registry
from attnjax.testing import check_registered

NAMES = sorted(registry.ATTENTION)
B, T, S, N, K, H = 2, 5, 5, 4, 2, 4


def _inputs(seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(keys[0], (B, T, N, H)), jax.random.normal(keys[1], (B, S, K, H)),
            jax.random.normal(keys[2], (B, S, K, H)))


def _params(spec):
    return registry.init_attention_params(spec.name, jax.random.key(1), head_dim=H, num_heads=N)


def test_every_issue_variant_is_registered_under_its_own_name():
    assert {"dot_product", "cosine", "l2", "additive", "multiplicative", "sigmoid", "softmax_temperature",
            "linear", "performer", "local"} <= set(NAMES)
    for name, spec in registry.ATTENTION.items():
        assert spec.name == name and spec.description and callable(spec.fn) and callable(spec.weights_fn)
        assert spec.mask_kind in ("full", "keys")
    assert attnjax.get_attention("l2") is registry.ATTENTION["l2"].fn


def test_unknown_name_error_lists_valid_names():
    with pytest.raises(ValueError) as info:
        registry.get_attention("flash")
    for name in NAMES:
        assert name in str(info.value)
    with pytest.raises(TypeError, match="str"):
        registry.get_spec(None)


@pytest.mark.parametrize("name", NAMES)
def test_uniform_signature_and_weights_reproduce_the_output(name):
    spec = registry.get_spec(name)
    sig = inspect.signature(spec.fn)
    assert list(sig.parameters)[:5] == ["query", "key", "value", "bias", "mask"]
    for kw in ("is_causal", "query_seq_lengths", "key_value_seq_lengths"):
        assert sig.parameters[kw].kind is inspect.Parameter.KEYWORD_ONLY
    q, k, v = _inputs()
    params = _params(spec)
    mask = jnp.asarray(np.array([[1, 1, 0, 1, 1], [1, 0, 1, 1, 1]], bool))[:, None, None, :]
    lengths = jnp.array([5, 3])
    for causal in (True,) if spec.causal_only else (False, True):
        kwargs = dict(mask=mask, is_causal=causal, key_value_seq_lengths=lengths, **params)
        out = spec.fn(q, k, v, None, **kwargs)
        assert out.shape == (B, T, N, H) and out.dtype == q.dtype
        w = spec.weights_fn(q, k, None, **kwargs)
        assert w.shape == (B, N, T, S) and w.dtype == jnp.float32
        np.testing.assert_allclose(jnp.einsum("bnts,bsnh->btnh", w, jnp.repeat(v, N // K, axis=2)), out,
                                   atol=3e-5, rtol=3e-5)


@pytest.mark.parametrize("name", [n for n in NAMES if registry.ATTENTION[n].exact_softmax])
def test_exact_entries_equal_dot_product_attention(name):
    q, k, v = _inputs()
    bias = jax.random.normal(jax.random.key(3), (1, N, T, S))
    np.testing.assert_allclose(registry.get_attention(name)(q, k, v, bias, is_causal=True),
                               dot_product_attention(q, k, v, bias, is_causal=True), atol=1e-6)


def test_init_params_give_the_documented_shapes():
    p = registry.init_attention_params("additive", jax.random.key(0), head_dim=H, num_heads=N)
    assert {k: v.shape for k, v in p.items()} == {"w_query": (H, H), "w_key": (H, H), "v_score": (H,)}
    p = registry.init_attention_params("multiplicative", jax.random.key(0), head_dim=H, num_heads=N)
    assert p["weight"].shape == (H, H)
    p = registry.init_attention_params("performer", jax.random.key(0), head_dim=H, num_heads=N)
    assert p["projection"].shape == (registry.PERFORMER_FEATURES, H)
    assert not registry.get_spec("performer").trainable_params
    assert registry.init_attention_params("cosine", jax.random.key(0), head_dim=H, num_heads=N) == {}


def test_key_mask_variants_reject_bias_and_full_masks():
    q, k, v = _inputs()
    for name in NAMES:
        spec = registry.get_spec(name)
        if spec.mask_kind != "keys":
            continue
        with pytest.raises(ValueError, match="bias"):
            spec.fn(q, k, v, jnp.zeros((1, N, T, S)), **_params(spec))
        with pytest.raises(ValueError, match="mask"):
            spec.fn(q, k, v, mask=jnp.ones((B, N, T, S), bool), **_params(spec))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_registered_variant_passes_the_conformance_kit(name):
    check_registered(name)


@pytest.mark.parametrize("name", NAMES)
def test_the_kit_compares_with_softmax_only_the_softmax_variants(name, monkeypatch):
    # Issue 24: the kit compares with softmax attention unless told otherwise, so check_registered
    # passes reference=None, explicitly, for every variant that is not softmax attention.
    import attnjax.testing

    seen = {}
    monkeypatch.setattr(attnjax.testing, "check_attention", lambda fn, **options: seen.update(options))
    check_registered(name)
    spec = registry.get_spec(name)
    softmax = spec.exact_softmax or spec.approx_tol is not None
    assert "reference" in seen and seen["reference"] == ("softmax" if softmax else None), seen
    if name in {"cosine", "l2", "additive", "multiplicative", "sigmoid", "linear", "local"}:
        assert seen["reference"] is None and seen["approx_tol"] is None


def test_a_variant_that_is_not_softmax_attention_fails_the_default_comparison():
    with pytest.raises(AssertionError, match=r"\[exact softmax\] violated"):
        check_registered("cosine", reference="softmax", max_examples=1, dtypes=())


@pytest.mark.parametrize("name", NAMES)
def test_calling_with_query_key_value_only_runs_or_names_the_missing_params(name):
    # Issue 24: the registry's convention says which variants need params (spec.needs_params) and
    # those raise a ValueError naming what is missing; every other one runs as fn(q, k, v).
    spec = registry.get_spec(name)
    q, k, v = _inputs()
    assert spec.needs_params == (spec.init_params is not None)
    if not spec.needs_params:
        assert spec.fn(q, k, v).shape == (B, T, N, H)
        return
    missing = {"additive": ["w_query", "w_key", "v_score"], "multiplicative": ["weight"],
               "performer": ["projection"], "cope": ["position_embeddings"],
               "fire": ["fire_w_in", "fire_w_out", "fire_c", "fire_threshold_scale"], "ssmax": ["ssmax_scale"]}[name]
    with pytest.raises(ValueError) as info:
        spec.fn(q, k, v)
    for param in missing:
        assert param in str(info.value)
    assert "init_attention_params" in str(info.value)
    assert spec.fn(q, k, v, **_params(spec)).shape == (B, T, N, H)


def test_learned_params_have_no_default_in_the_signature():
    for name, params in (("additive", ("w_query", "w_key", "v_score")), ("multiplicative", ("weight",))):
        sig = inspect.signature(registry.get_attention(name)).parameters
        for param in params:
            assert sig[param].default is inspect.Parameter.empty, (name, param)
    with pytest.raises(ValueError, match=r"missing its learned parameter weight \[H, H\]"):
        registry.get_attention("multiplicative")(*_inputs(), scale=1.0)


@pytest.mark.parametrize("name", [n for n in NAMES if registry.ATTENTION[n].implementations])
def test_implementation_keyword_is_accepted_or_rejected_by_name(name):
    # Issue 24: cosine(..., implementation=...) raised TypeError.
    spec = registry.get_spec(name)
    q, k, v = _inputs()
    assert "implementation" in inspect.signature(spec.fn).parameters
    assert {"dense", "xla"} <= set(spec.implementations)
    params = _params(spec)
    want = spec.fn(q, k, v, is_causal=True, **params)
    for implementation in ("dense", "xla", None):
        np.testing.assert_allclose(spec.fn(q, k, v, is_causal=True, implementation=implementation, **params),
                                   want, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match=r"implementation must be .*got 'flash'"):
        spec.fn(q, k, v, implementation="flash", **params)
    if "blockwise" not in spec.implementations:  # the score-function variants materialize [B, N, T, S]
        with pytest.raises(ValueError, match=r"implementation must be None or one of \('dense', 'xla'\).*"
                                             r"got 'blockwise'"):
            spec.fn(q, k, v, implementation="blockwise", **params)


def test_variants_without_implementation_keyword_say_so_in_their_spec():
    for name, spec in registry.ATTENTION.items():
        takes = "implementation" in inspect.signature(spec.fn).parameters
        assert takes == bool(spec.implementations), name


@pytest.mark.parametrize("name", [n for n in NAMES if registry.ATTENTION[n].causal_only])
def test_causal_only_variants_default_to_causal_and_refuse_is_causal_false(name):
    spec = registry.get_spec(name)
    assert inspect.signature(spec.fn).parameters["is_causal"].default is True
    q, k, v = _inputs()
    params = _params(spec)
    np.testing.assert_array_equal(spec.fn(q, k, v, **params), spec.fn(q, k, v, is_causal=True, **params))
    with pytest.raises(ValueError, match="is_causal=False"):
        spec.fn(q, k, v, is_causal=False, **params)
