"""The fixed cases of the conformance kit: one small shape (so they share compiled programs) probing
what drawn shapes would rarely hit: ``jax.jit`` agreement, extreme logits, rows that see no key, low
precision (skipping what the backend cannot compute), masks of rank < 4, and the approximation error."""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from attnjax._conformance.common import (APPROX_QK_STD, DTYPES, EXTREME_LOGIT, Case, Options, Report,
                                         SkippedCheckWarning, assert_close, assert_finite, call, check_output,
                                         describe_mask, fail, fixed_case, full_mask, inputs, key_mask, max_err)
from attnjax._conformance.runner import Runner, softmax_reference

Array = jax.Array

_CONVENTIONS = {"zeros": "zeros (attnjax's convention)",
                "mean": "the mean of its head's values over all S keys (jax.nn's convention)"}


def check_jit(run: Runner, opts: Options, report: Report):
    case = fixed_case(opts, 23)
    q, k, v = inputs(case)
    for is_causal, (out, _) in run.both(q, k, v):
        if report.check(check_output, case, out):
            eager = call(run.fn, q, k, v, None, is_causal)
            report.check(assert_close, "jit", case, eager, out, 10 * opts.atol, 10 * opts.rtol,
                         f"fn differs from jax.jit(fn) (is_causal={is_causal})")


def extreme_case(run: Runner, opts: Options, report: Report):
    prop = "extreme logits"
    case = fixed_case(opts, 11)
    q, k, v = inputs(case)
    # Scale q and k so that the largest |q.k| / sqrt(H) is EXTREME_LOGIT.
    logits = np.einsum("btnh,bskh->bnts", np.asarray(q), np.repeat(np.asarray(k), case.N // case.K, axis=2))
    factor = np.sqrt(EXTREME_LOGIT * np.sqrt(case.H) / np.abs(logits).max())
    q, k = q * factor, k * factor
    for is_causal, (out, jacs) in run.both(q, k, v):
        what = f"{case.describe()}, max |q.k|/sqrt(H) = {EXTREME_LOGIT:g}, is_causal={is_causal}"
        report.check(assert_finite, prop, what, out, "output")
        for name, jac in zip(("query", "key", "value"), jacs):
            report.check(assert_finite, prop, what, jac, f"d output / d {name}")


def _row_conventions(case: Case, v, masked_rows: str) -> dict[str, np.ndarray]:
    """The outputs a row with no visible key may have, each ``[B, T, N, H]`` (float64), by name.

    ``"zeros"``: attnjax's convention. ``"mean"`` (unless ``masked_rows == "zeros"``): the mean of
    query head ``n``'s values ``v[b, :, n // (N // K)]`` over all S keys, i.e. uniform softmax
    weights, which is what masking by one shared large negative logit gives (jax.nn's convention).
    """
    shape = (case.B, case.T, case.N, case.H)
    allowed = {"zeros": np.zeros(shape)}
    if masked_rows == "zeros_or_mean":
        per_head = np.repeat(np.asarray(v, np.float64), case.N // case.K, axis=2).mean(axis=1)  # [B, N, H]
        allowed["mean"] = np.broadcast_to(per_head[:, None], shape)
    return allowed


def _check_masked_row_values(prop, what, opts, case, out, v, empty, mask):
    """Each row with no visible key (``empty``: ``[B, T]``, in every head) must match, as a whole
    ``H``-vector and within ``10 * (atol + rtol * |expected|)``, one of the allowed conventions.

    Per row, so an implementation may mix them (e.g. a kernel that zeroes only some rows); any other
    value (a softmax over masked logits that are not all equal, a constant) fails.
    """
    out = np.asarray(out, np.float64)
    allowed = _row_conventions(case, v, opts.masked_rows)
    # [B, T, N]: does row (b, t, n) match convention c?
    matches = [np.all(np.abs(out - want) <= 10 * opts.atol + 10 * opts.rtol * np.abs(want), axis=-1)
               for want in allowed.values()]
    bad = empty[:, :, None] & ~np.logical_or.reduce(matches)
    if np.any(bad):
        b, t, n = (int(i) for i in np.argwhere(bad)[0])
        names = " or ".join(_CONVENTIONS[c] for c in allowed)
        distances = {f"max_abs_distance_to_{c}": float(np.abs(out[b, t, n] - want[b, t, n]).max())
                     for c, want in allowed.items()}
        fail(prop, what, f"row [b={b}, t={t}, n={n}] sees no key, so it must output {names} with "
             f"masked_rows={opts.masked_rows!r}; {int(bad.sum())} such rows do not",
             row_output=out[b, t, n], **distances, mask=describe_mask(mask, row=(b, n, t)))


def masked_rows_case(run: Runner, opts: Options, report: Report):
    """Rows that see no key: finite outputs and gradients, and an allowed value (``masked_rows``)."""
    prop = "fully masked rows"
    case = fixed_case(opts, 13)
    q, k, v = inputs(case)
    rng = np.random.default_rng(case.seed)
    empty = np.zeros((case.B, case.T), bool)
    if opts.mask_kind == "full":
        mask = full_mask(case, rng)
        mask[0, :, 1, :] = False  # query 1 of batch 0 sees nothing, in every head
        empty[0, 1] = True
    else:
        mask = key_mask(case, rng)
        mask[0] = False  # batch 0 sees no key at all
        empty[0, :] = True
    what = f"{case.describe()}, mask of shape {mask.shape} with rows that see no key"
    out, jacs = run.both(q, k, v, mask)[0][1]
    finite = report.check(assert_finite, prop, what, out, "output", mask=mask)
    for name, jac in zip(("query", "key", "value"), jacs):
        report.check(assert_finite, prop, what, jac, f"d output / d {name}", mask=mask)
    if finite:
        report.check(_check_masked_row_values, prop, what, opts, case, out, v, empty, mask)


# --------------------------------------------------------------------------- low precision

def _backend_platforms() -> set[str]:
    """Lower-case names the running backend goes by in error messages (``cpu``; ``gpu``/``cuda``...)."""
    names = {jax.default_backend().lower()}
    names |= {d.platform.lower() for d in jax.devices()}
    if names & {"gpu", "cuda", "rocm"}:
        names |= {"gpu", "cuda", "rocm"}
    return names


def _backend_limit(err: BaseException) -> bool:
    """Whether ``err`` says the *backend* cannot compute something (not that ``fn`` is wrong).

    Two forms: XLA's ``UNIMPLEMENTED`` status, and JAX's lowering errors such as "The precision
    'F16_F16_F32' is not supported by dot_general on CPU" ("not supported"/"unsupported"/"not
    implemented" together with the name of the running backend).
    """
    message = str(err)
    if isinstance(err, jax.errors.JaxRuntimeError) and "UNIMPLEMENTED" in message:
        return True
    if not re.search(r"not supported|unsupported|not implemented|unimplemented", message, re.IGNORECASE):
        return False
    words = set(re.findall(r"[a-z0-9]+", message.lower()))
    return bool(words & _backend_platforms())


def _skip_note(prop: str, what: str, err: BaseException) -> None:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
    # stacklevel: _skip_note <- low_precision_case <- check_attention <- the caller's test.
    warnings.warn(f"attnjax.testing: [{prop}] skipped for {what}: the {jax.default_backend()} backend cannot "
                  f"compute it ({type(err).__name__}: {first_line}); every other check still runs",
                  SkippedCheckWarning, stacklevel=4)


def low_precision_case(run: Runner, opts: Options, report: Report):
    prop = "low precision"
    case = fixed_case(opts, 17)
    q, k, v = inputs(case)
    refs = dict(run.both(q, k, v))
    for dtype in opts.dtypes:
        dt = jnp.dtype(DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype)
        ql, kl, vl = (x.astype(dt) for x in (q, k, v))
        try:
            results = run.both(ql, kl, vl)
        except Exception as err:  # noqa: BLE001 - re-raised unless it is a backend limit
            if not _backend_limit(err):
                raise
            # A platform limit, not an attention bug: the verdict covers every other check.
            _skip_note(prop, f"dtype {dt.name}", err)
            continue
        for is_causal, (out, jacs) in results:
            what = f"{case.describe()}, dtype {dt.name}, is_causal={is_causal}"
            if not report.check(check_output, case, out, dt, prop):
                continue
            for name, jac in zip(("query", "key", "value"), jacs):
                report.check(assert_finite, prop, what, jac, f"d output / d {name}")
            # Rounding the inputs alone moves the output by a few eps(dtype) times the value scale.
            tol = 8 * float(jnp.finfo(dt).eps) * float(np.abs(np.asarray(v)).max())
            report.check(assert_close, prop, what, out, refs[is_causal][0], tol, 0.0,
                         f"{dt.name} output is far from the float32 output")


# --------------------------------------------------------------------------- masks of rank < 4

def _low_rank_masks(opts: Options, case: Case, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Masks of each rank in ``opts.mask_ranks``, shaped like the last dims of ``[B, N, T, S]``.

    ``"full"``: ``[N, T, S]``, ``[T, S]``, ``[S]``; ``"keys"``: ``[1, 1, S]``, ``[1, S]``, ``[S]``.
    Every row keeps at least one visible key, and some keys are hidden.
    """
    masks = {}
    for rank in opts.mask_ranks:
        if opts.mask_kind == "full":
            shape = (case.N, case.T, case.S)[3 - rank:]
        else:
            shape = ((1, 1) + (case.S,))[3 - rank:]
        keep = rng.random(shape) < 0.5
        rows = keep.reshape(-1, case.S)
        rows[np.arange(rows.shape[0]), rng.integers(0, case.S, rows.shape[0])] = True
        keep = rows.reshape(shape)
        if keep.all():
            keep[..., 0] = False  # something to mask
            keep[..., 1] = True
        masks[rank] = keep
    return masks


def _check_mask_rank(prop, what, opts, rank, mask, padded, error, outs):
    if error is not None:
        try:
            fail(prop, what, f"fn raised {type(error).__name__}: {error} for a mask of rank {rank}; a mask of "
                 f"rank < 4 must broadcast to [B, N, T, S] with leading 1s, as in "
                 f"jax.nn.dot_product_attention (opt out with mask_ranks=())")
        except AssertionError as violation:
            raise violation from error
    out, want = outs
    if tuple(out.shape) != tuple(want.shape) or out.dtype != want.dtype:
        fail(prop, what, f"output has shape {tuple(out.shape)} and dtype {out.dtype}, but with the same mask "
             f"reshaped to {padded} it has {tuple(want.shape)} and {want.dtype}")
    assert_close(prop, what, out, want, 10 * opts.atol, 10 * opts.rtol,
                 f"a rank-{rank} mask gives another output than the same mask reshaped to {padded}", mask=mask)


def mask_ranks_case(run: Runner, opts: Options, report: Report):
    """Masks of rank < 4 broadcast like jax.nn's (leading 1s): same output as the rank-4 mask."""
    prop = "mask ranks"
    case = fixed_case(opts, 31)
    q, k, v = inputs(case)
    masks = _low_rank_masks(opts, case, np.random.default_rng(case.seed))
    errors: dict[int, BaseException] = {}

    def all_ranks(q, k, v, masks):
        outs = {}
        for rank, mask in masks.items():
            try:  # tracing is Python: one rank's exception must not hide another's
                outs[rank] = (call(run.fn, q, k, v, mask), call(run.fn, q, k, v, mask.reshape((1,) * (4 - rank)
                                                                                           + mask.shape)))
            except Exception as err:  # noqa: BLE001 - reported below as a violation
                errors[rank] = err
        return outs

    outs = jax.jit(all_ranks)(q, k, v, {r: jnp.asarray(m) for r, m in masks.items()})
    for rank, mask in masks.items():
        padded = (1,) * (4 - rank) + mask.shape
        what = f"{case.describe()}, mask of rank {rank} and shape {mask.shape} (as if {padded})"
        report.check(_check_mask_rank, prop, what, opts, rank, mask, padded, errors.get(rank), outs.get(rank))


# --------------------------------------------------------------------------- approximation

APPROX_CASE = Case(B=2, T=16, S=16, N=2, K=2, H=8, seed=19)


def approximation_inputs() -> tuple[Array, Array, Array]:
    """The ``(query, key, value)`` on which ``approx_tol`` is checked (see :mod:`attnjax.testing`)."""
    return inputs(APPROX_CASE, qk_std=APPROX_QK_STD)


def approx_case(run: Runner, opts: Options, report: Report):
    prop = "approximation"
    case = APPROX_CASE
    q, k, v = inputs(case, qk_std=APPROX_QK_STD)
    refs = dict(softmax_reference(opts.scale).outputs(q, k, v))
    for is_causal, out in run.outputs(q, k, v):
        diff = np.asarray(out, np.float64) - np.asarray(refs[is_causal], np.float64)
        rms = float(np.sqrt(np.mean(diff ** 2)))
        if not rms <= opts.approx_tol:
            err, idx = max_err(out, refs[is_causal])
            report.check(fail, prop, f"{case.describe()}, q/k std {APPROX_QK_STD}, is_causal={is_causal}",
                         f"root-mean-square error to softmax attention (scale {opts.describe_scale(case.H)}) {rms:.3g} "
                         f"exceeds approx_tol {opts.approx_tol:g} (max abs error {err:.3g} at {idx})")
