"""Every property the conformance kit checks on one drawn shape (:func:`example`), from one compiled
program of outputs and jacobians: shapes, batch and head independence, key permutation, masked keys,
causality, and equality with softmax attention."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from attnjax._conformance.common import (Case, Options, Report, assert_close, assert_finite, call, check_output,
                                         describe_mask, fail, full_mask, inputs, key_mask, visibility)
from attnjax._conformance.runner import Runner, softmax_reference
from attnjax.ops.dot_product import dot_product_attention

# Why output [b, t, n] may not depend on an input entry, most basic first, and the property it breaks.
_LEAKS = (("a different batch element", "batch independence"), ("a different head", "head independence"),
          ("a later position", "causality"), ("a masked key", "masked keys"))


def _check_batch(run, case, opts, q, k, v, mask, out, causal_inputs):
    """Replacing every other batch element by noise must leave element ``b`` unchanged."""
    if case.B == 1:
        return
    rng = np.random.default_rng(case.seed + 2)
    b = int(rng.integers(0, case.B))
    others = (np.arange(case.B) != b)[:, None, None, None]
    noisy = [jnp.where(others, jnp.asarray(rng.normal(size=x.shape) * 3, x.dtype), x) for x in (q, k, v)]
    out2 = run.pair(*noisy, mask, causal_inputs)[0][0]
    assert_close("batch independence", case, out2[b], out[b], 10 * opts.atol, 10 * opts.rtol,
                 f"output of batch element {b} changed when the other batch elements changed")


def _check_permutation(run, case, opts, q, k, v, mask, out, causal_inputs):
    perm = np.random.default_rng(case.seed + 7).permutation(case.S)
    pmask = None if mask is None else np.asarray(mask)[..., perm] if np.shape(mask)[-1] > 1 else mask
    permuted = run.pair(q, k[:, perm], v[:, perm], pmask, causal_inputs)[0][0]
    assert_close("key permutation", case, permuted, out, 10 * opts.atol, 10 * opts.rtol,
                 "permuting keys and values together changed the output", permutation=perm)


def _leak_reasons(case: Case, name: str, vis, is_causal: bool) -> list[np.ndarray]:
    """For ``d out [B, T, N] / d name [B', L, M]``, one boolean array per entry of :data:`_LEAKS`: where
    that reason (and no more basic one) says the gradient must be zero."""
    G = case.N // case.K
    b, t, n, b2, l, m = np.ix_(*(np.arange(s) for s in (case.B, case.T, case.N, case.B, case.S if name != "query"
                                                        else case.T, case.N if name == "query" else case.K)))
    same_batch = b == b2
    own_head = m == (n if name == "query" else n // G)
    later = (l > t) if is_causal else np.zeros((1,) * 6, bool)
    if name != "query" and vis is not None:
        hidden = ~vis[:, :, :, None, :, None]  # [B, T, N, 1, S, 1]
    else:
        hidden = np.zeros((1,) * 6, bool)
    return [~same_batch, same_batch & ~own_head, same_batch & own_head & later,
            same_batch & own_head & ~later & hidden]


def _check_jacobian(report: Report, case, jacs, mask, is_causal: bool):
    """Zero gradient across batch elements and heads, from masked keys and (causal) from later
    positions; each reason is its own property."""
    label = "causality" if is_causal else ("masked keys" if mask is not None else "batch independence")
    vis = None if mask is None else visibility(np.asarray(mask), case)
    for name, jac in zip(("query", "key", "value"), jacs):
        if not report.check(assert_finite, label, case, jac, f"d output / d {name}", mask=mask,
                            is_causal=is_causal):
            continue
        mag = np.abs(np.asarray(jac, np.float32)).max(axis=(3, 7))  # [B, T, N, B', L, M]
        for (reason, prop), where in zip(_LEAKS, _leak_reasons(case, name, vis, is_causal)):
            leak = np.where(where, mag, 0.0)
            if not np.any(leak > 0):
                continue
            b, t, n, b2, l, m = (int(i) for i in np.unravel_index(int(np.argmax(leak)), leak.shape))
            report.check(fail, prop, case, f"output [b={b}, t={t}, n={n}] has gradient {leak.max():.3g} with respect "
                         f"to {name} [b={b2}, position={l}, head={m}], which is {reason}", is_causal=is_causal,
                         mask=None if mask is None else describe_mask(mask, row=(b, n, t),
                                                                      key=l if name != "query" else None))


def _check_mask_values(run, case, opts, q, k, v, mask, out, causal_inputs):
    """Replacing masked keys/values by large random values must not change any output."""
    G = case.N // case.K
    # A key of a kv head may be replaced only if no query of any head reading it can see it.
    vis = visibility(np.asarray(mask), case)  # [B, T, N, S]
    hidden = ~vis.reshape(case.B, case.T, case.K, G, case.S).any(axis=(1, 3))  # [B, K, S]
    hidden = np.transpose(hidden, (0, 2, 1))[..., None]  # [B, S, K, 1]
    rng = np.random.default_rng(case.seed + 3)
    k2 = jnp.where(hidden, jnp.asarray(rng.normal(size=k.shape) * 5.0, k.dtype), k)
    v2 = jnp.where(hidden, jnp.asarray(rng.normal(size=v.shape) * 100.0, v.dtype), v)
    out2 = run.pair(q, k2, v2, mask, causal_inputs)[0][0]
    assert_close("masked keys", case, out2, out, 10 * opts.atol, 10 * opts.rtol,
                 "changing masked keys/values changed the output", mask=mask)


def _check_causal_values(run, case, opts, q, k, v, out, plain):
    rng = np.random.default_rng(case.seed + 5)
    cut = int(rng.integers(0, case.T))  # positions > cut are replaced
    later = (np.arange(case.T) > cut)[None, :, None, None]
    q2 = jnp.where(later, jnp.asarray(rng.normal(size=q.shape), q.dtype), q)
    k2 = jnp.where(later, jnp.asarray(rng.normal(size=k.shape), k.dtype), k)
    v2 = jnp.where(later, jnp.asarray(rng.normal(size=v.shape) * 10, v.dtype), v)
    out2 = run.pair(*plain, (q2, k2, v2))[1][0]
    assert_close("causality", case, out2[:, :cut + 1], out[:, :cut + 1], 10 * opts.atol, 10 * opts.rtol,
                 f"outputs at positions <= {cut} changed when positions > {cut} changed (is_causal=True)")


def _unscaled_hint(opts: Options, qkv, mask, is_causal, out) -> str | None:
    """The most common bug, named: ``fn`` equals softmax attention *without* the ``1/sqrt(H)`` factor."""
    if opts.scale not in (None, 1.0):
        return None
    unscaled = call(lambda q, k, v, **kw: dot_product_attention(q, k, v, scale=1.0, **kw), *qkv, mask, is_causal)
    if np.allclose(np.asarray(out, np.float64), np.asarray(unscaled, np.float64), atol=opts.atol, rtol=opts.rtol):
        H = qkv[0].shape[-1]
        return (f"fn equals softmax attention with scale 1.0, not the expected {opts.describe_scale(H)}: is the "
                f"1/sqrt(H) factor missing? (pass scale=1.0 if fn means it)")
    return None


def _check_exact(case, opts, qkv, mask, is_causal, got, want):
    """Values and jacobians equal to softmax attention at the expected scale."""
    (out, jacs), (ref, ref_jacs) = got, want
    reference = f"softmax attention (attnjax.dot_product_attention, scale {opts.describe_scale(case.H)})"
    extra = {"is_causal": is_causal}
    if not np.allclose(np.asarray(out, np.float64), np.asarray(ref, np.float64), atol=opts.atol, rtol=opts.rtol):
        extra["hint"] = _unscaled_hint(opts, qkv, mask, is_causal, out)
    assert_close("exact softmax", case, out, ref, opts.atol, opts.rtol, f"output differs from {reference}",
                 mask=mask, **extra)
    for name, g, rg in zip(("query", "key", "value"), jacs, ref_jacs):
        assert_close("exact softmax", case, g, rg, 10 * opts.atol, 10 * opts.rtol,
                     f"d output / d {name} differs from that of {reference}", mask=mask, **extra)


def example(run: Runner, opts: Options, case: Case, report: Report) -> None:
    """Every shape-driven property on one drawn case (one compiled program, reused); violations go to
    ``report``. A wrong output shape or dtype stops this case's other checks (they would not apply)."""
    q, k, v = inputs(case)
    mask = None
    if opts.mask_kind is not None:
        rng = np.random.default_rng(case.seed + 1)
        mask = full_mask(case, rng) if opts.mask_kind == "full" else key_mask(case, rng)
    causal_case = dataclasses.replace(case, S=case.T)
    causal_inputs = inputs(causal_case) if opts.supports_causal else None
    (out, jacs), causal = run.pair(q, k, v, mask, causal_inputs)
    if not report.check(check_output, case, out):
        return
    _check_jacobian(report, case, jacs, mask, False)
    report.check(_check_batch, run, case, opts, q, k, v, mask, out, causal_inputs)
    if opts.position_free:
        report.check(_check_permutation, run, case, opts, q, k, v, mask, out, causal_inputs)
    if mask is not None:
        report.check(_check_mask_values, run, case, opts, q, k, v, mask, out, causal_inputs)
    reference = softmax_reference(opts.scale).pair(q, k, v, mask, causal_inputs) if opts.exact else None
    if opts.exact:
        report.check(_check_exact, case, opts, (q, k, v), mask, False, (out, jacs), reference[0])
    if opts.supports_causal:
        c_out, c_jacs = causal
        if not report.check(check_output, causal_case, c_out, prop="causality"):
            return
        _check_jacobian(report, causal_case, c_jacs, None, True)
        report.check(_check_causal_values, run, causal_case, opts, *causal_inputs, c_out, (q, k, v, mask))
        if opts.exact:
            report.check(_check_exact, causal_case, opts, causal_inputs, None, True, causal, reference[1])
