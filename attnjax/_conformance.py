"""The properties behind :mod:`attnjax.testing` (the conformance kit): inputs, compiled runners,
one function per property, and the fixed cases. Each violated property raises AssertionError
starting with ``[property name]`` and showing the counterexample. Public entry points live in
:mod:`attnjax.testing`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops.dot_product import dot_product_attention

Array = jax.Array

APPROX_QK_STD = 0.5
EXTREME_LOGIT = 1e4
_MASK_KINDS = (None, "full", "keys")
# What a query row that sees no key may output: "zeros" (attnjax's convention) or, in addition,
# "mean": the mean of the values over all S keys (jax.nn.dot_product_attention's convention: every
# logit of the row is the same large negative number, so the softmax is uniform).
_MASKED_ROWS = ("zeros_or_mean", "zeros")
_CONVENTIONS = {"zeros": "zeros (attnjax's convention)",
                "mean": "the mean of its head's values over all S keys (jax.nn's convention)"}
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# Mask ranks below 4 that every masked function must take, left-padded with 1s as in jax.nn.
_MASK_RANKS = (1, 2, 3)


class SkippedCheckWarning(UserWarning):
    """A check the kit skipped because the backend cannot run it (e.g. a float16 matmul on CPU).

    The message names the check, the dtype, the backend and the backend's own error.
    """


@dataclasses.dataclass(frozen=True)
class Options:
    """What the function under test claims; see :func:`check_attention`."""

    exact_softmax: bool = False
    mask_kind: str | None = "full"
    supports_causal: bool = True
    position_free: bool = True
    approx_tol: float | None = None
    masked_rows: str = "zeros_or_mean"
    gqa: bool = True
    dtypes: tuple[Any, ...] = ("bfloat16", "float16")
    mask_ranks: tuple[int, ...] = _MASK_RANKS
    atol: float = 1e-5
    rtol: float = 1e-5


@dataclasses.dataclass(frozen=True)
class Case:
    """One drawn problem: shapes and a seed for the inputs."""

    B: int
    T: int
    S: int
    N: int
    K: int
    H: int
    seed: int

    def describe(self) -> str:
        return (f"query [B, T, N, H] = {(self.B, self.T, self.N, self.H)}, key/value [B, S, K, H] = "
                f"{(self.B, self.S, self.K, self.H)}, input seed {self.seed}")


# --------------------------------------------------------------------------- helpers

def _fail(prop: str, case: Case | str, detail: str, **extra: Any) -> None:
    lines = [f"[{prop}] violated: {detail}", f"  counterexample: {case.describe() if isinstance(case, Case) else case}"]
    for name, value in extra.items():
        text = np.array2string(np.asarray(value), threshold=64, precision=4) if isinstance(
            value, (np.ndarray, jax.Array)) else repr(value)
        lines.append(f"  {name}: {text}")
    raise AssertionError("\n".join(lines))


def _inputs(case: Case, dtype=jnp.float32, qk_std: float = 1.0):
    rng = np.random.default_rng(case.seed)
    q = rng.normal(size=(case.B, case.T, case.N, case.H)) * qk_std
    k = rng.normal(size=(case.B, case.S, case.K, case.H)) * qk_std
    v = rng.normal(size=(case.B, case.S, case.K, case.H))
    return tuple(jnp.asarray(x, dtype) for x in (q, k, v))


def _call(fn, q, k, v, mask=None, is_causal=False):
    kwargs = {}
    if mask is not None:
        kwargs["mask"] = mask
    if is_causal:
        kwargs["is_causal"] = True
    return fn(q, k, v, **kwargs)


def _max_err(a, b) -> tuple[float, tuple[int, ...]]:
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    diff = np.where(np.isnan(diff), np.inf, diff)
    if diff.size == 0:
        return 0.0, ()
    idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return float(diff[idx]), tuple(int(i) for i in idx)


def _assert_close(prop, case, actual, expected, atol, rtol, what: str, **extra):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    tol = atol + rtol * np.abs(expected)
    bad = ~(np.abs(actual - expected) <= tol)
    if np.any(bad):
        err, idx = _max_err(actual, expected)
        _fail(prop, case, f"{what}: max abs error {err:.3g} at index {idx} (atol {atol:.3g}, rtol {rtol:.3g})",
              actual_at_index=float(actual[idx]), expected_at_index=float(expected[idx]), **extra)


def _assert_finite(prop, case, x, what: str, **extra):
    x = np.asarray(x, np.float64)
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))
        _fail(prop, case, f"{what} is not finite at {len(bad)} entries, first at index {tuple(int(i) for i in bad[0])}", **extra)


class _Runner:
    """Jitted programs returning outputs *and* jacobians, one per input structure.

    ``pair`` evaluates a non-causal problem (optionally masked) and a causal problem in a single XLA
    program, so each drawn example compiles once and every property of that example reuses it:
    compiling is what dominates on tiny shapes (eager dispatch would compile every primitive).
    ``fn`` must therefore be traceable by ``jax.jit`` (any JAX function is).
    """

    def __init__(self, fn, supports_causal: bool = True):
        self.fn = fn
        self.supports_causal = supports_causal
        self._pair = jax.jit(functools.partial(self._pair_of, fn))
        # Outputs only, for the larger approximation inputs where jacobians would cost the most.
        self._outputs = jax.jit(functools.partial(self._outputs_of, fn), static_argnums=3)

    @staticmethod
    def _outputs_of(fn, q, k, v, causal: bool):
        return _call(fn, q, k, v, None, False), (_call(fn, q, k, v, None, True) if causal else None)

    def outputs(self, q, k, v):
        """``[(False, out), (True, causal_out)]`` (the causal one only if supported)."""
        out, causal = self._outputs(q, k, v, self.supports_causal)
        return [(False, out)] + ([(True, causal)] if causal is not None else [])

    @staticmethod
    def _out_and_jac(fn, q, k, v, mask, is_causal):
        def f(a, b, c):
            out = _call(fn, a, b, c, mask, is_causal)
            return out.astype(jnp.float32), out

        jac, out = jax.jacrev(f, argnums=(0, 1, 2), has_aux=True)(q, k, v)
        return out, jac

    @staticmethod
    def _pair_of(fn, plain, mask, causal):
        first = _Runner._out_and_jac(fn, *plain, mask, False)
        second = None if causal is None else _Runner._out_and_jac(fn, *causal, None, True)
        return first, second

    def pair(self, q, k, v, mask=None, causal_inputs=None):
        """``((out, jacs), (causal_out, causal_jacs) or None)``; jacobians ``[B, T, N, H, B', L, M, H']``.

        ``causal_inputs`` is a ``(q, k, v)`` triple run with ``is_causal=True`` (no mask), or None.
        """
        if not self.supports_causal:
            causal_inputs = None
        return self._pair((q, k, v), None if mask is None else jnp.asarray(mask), causal_inputs)


def _key_mask(case: Case, rng: np.random.Generator, keep_one: bool = True) -> np.ndarray:
    """``[B, 1, 1, S]`` boolean with some keys hidden (at least one visible when ``keep_one``)."""
    keep = rng.random((case.B, case.S)) < 0.6
    if keep_one:
        keep[np.arange(case.B), rng.integers(0, case.S, case.B)] = True
    return keep[:, None, None, :]


def _full_mask(case: Case, rng: np.random.Generator) -> np.ndarray:
    """``[B, N, T, S]`` random boolean with at least one visible key per row."""
    keep = rng.random((case.B, case.N, case.T, case.S)) < 0.6
    first = rng.integers(0, case.S, (case.B, case.N, case.T))
    np.put_along_axis(keep, first[..., None], True, axis=-1)
    return keep


def _visibility(mask: np.ndarray, case: Case) -> np.ndarray:
    """``[B, T, N, S]``: may query ``(t, n)`` see key ``s``, from a rank-4 mask."""
    return np.transpose(np.broadcast_to(mask, (case.B, case.N, case.T, case.S)), (0, 2, 1, 3))


# --------------------------------------------------------------------------- the properties

@functools.lru_cache(maxsize=1)
def _reference() -> _Runner:
    return _Runner(dot_product_attention, True)


def _check_output(case, out, dtype=jnp.float32, prop="shape/dtype"):
    want = (case.B, case.T, case.N, case.H)
    if tuple(out.shape) != want or out.dtype != dtype:
        _fail(prop, case, f"expected output shape {want} and dtype {jnp.dtype(dtype).name}, got "
              f"{tuple(out.shape)} and {out.dtype}")
    _assert_finite(prop, case, out, "output")


def _check_batch(run, case, opts, q, k, v, mask, out, causal_inputs):
    """Replacing every other batch element by noise must leave element ``b`` unchanged."""
    if case.B == 1:
        return
    rng = np.random.default_rng(case.seed + 2)
    b = int(rng.integers(0, case.B))
    others = (np.arange(case.B) != b)[:, None, None, None]
    noisy = [jnp.where(others, jnp.asarray(rng.normal(size=x.shape) * 3, x.dtype), x) for x in (q, k, v)]
    out2 = run.pair(*noisy, mask, causal_inputs)[0][0]
    _assert_close("batch independence", case, out2[b], out[b], 10 * opts.atol, 10 * opts.rtol,
                  f"output of batch element {b} changed when the other batch elements changed")


def _check_permutation(run, case, opts, q, k, v, mask, out, causal_inputs):
    perm = np.random.default_rng(case.seed + 7).permutation(case.S)
    pmask = None if mask is None else np.asarray(mask)[..., perm] if np.shape(mask)[-1] > 1 else mask
    permuted = run.pair(q, k[:, perm], v[:, perm], pmask, causal_inputs)[0][0]
    _assert_close("key permutation", case, permuted, out, 10 * opts.atol, 10 * opts.rtol,
                  "permuting keys and values together changed the output", permutation=perm)


def _check_jacobian(case, jacs, mask, is_causal: bool):
    """Zero gradient across batch elements, from masked keys and (causal) from later positions."""
    label = "causality" if is_causal else ("masked keys" if mask is not None else "batch independence")
    G = case.N // case.K
    vis = None if mask is None else _visibility(np.asarray(mask), case)
    for name, jac in zip(("query", "key", "value"), jacs):
        _assert_finite(label, case, jac, f"d output / d {name}", mask=mask, is_causal=is_causal)
        mag = np.abs(np.asarray(jac, np.float32)).max(axis=(3, 7))  # [B, T, N, B', L, M]
        allowed = np.zeros(mag.shape, dtype=bool)
        for b in range(case.B):  # only the own batch element and the own (query or kv) head
            for n in range(case.N):
                head = n if name == "query" else n // G
                allowed[b, :, n, b, :, head] = True
                if name != "query" and vis is not None:
                    allowed[b, :, n, b, :, head] &= vis[b, :, n, :]
        if is_causal:
            later = np.arange(mag.shape[4])[None, :] > np.arange(case.T)[:, None]  # [T, L]
            allowed &= ~later[None, :, None, None, :, None]
        leak = np.where(allowed, 0.0, mag)
        if np.any(leak > 0):
            b, t, n, b2, l, m = np.unravel_index(int(np.argmax(leak)), leak.shape)
            own_head = n if name == "query" else n // G
            reason = ("a different batch element" if b2 != b else
                      "a different head" if m != own_head else
                      "a later position" if is_causal and l > t else "a masked key")
            prop = {"a different batch element": "batch independence", "a different head": "head independence",
                    "a later position": "causality", "a masked key": "masked keys"}[reason]
            _fail(prop, case, f"output [b={b}, t={t}, n={n}] has gradient {leak.max():.3g} with respect to "
                  f"{name} [b={b2}, position={l}, head={m}], which is {reason}", is_causal=is_causal,
                  mask=None if mask is None else np.asarray(mask))


def _check_mask_values(run, case, opts, q, k, v, mask, out, causal_inputs):
    """Replacing masked keys/values by large random values must not change any output."""
    G = case.N // case.K
    # A key of a kv head may be replaced only if no query of any head reading it can see it.
    vis = _visibility(np.asarray(mask), case)  # [B, T, N, S]
    hidden = ~vis.reshape(case.B, case.T, case.K, G, case.S).any(axis=(1, 3))  # [B, K, S]
    hidden = np.transpose(hidden, (0, 2, 1))[..., None]  # [B, S, K, 1]
    rng = np.random.default_rng(case.seed + 3)
    k2 = jnp.where(hidden, jnp.asarray(rng.normal(size=k.shape) * 5.0, k.dtype), k)
    v2 = jnp.where(hidden, jnp.asarray(rng.normal(size=v.shape) * 100.0, v.dtype), v)
    out2 = run.pair(q, k2, v2, mask, causal_inputs)[0][0]
    _assert_close("masked keys", case, out2, out, 10 * opts.atol, 10 * opts.rtol,
                  "changing masked keys/values changed the output", mask=np.asarray(mask))


def _check_causal_values(run, case, opts, q, k, v, out, plain):
    rng = np.random.default_rng(case.seed + 5)
    cut = int(rng.integers(0, case.T))  # positions > cut are replaced
    later = (np.arange(case.T) > cut)[None, :, None, None]
    q2 = jnp.where(later, jnp.asarray(rng.normal(size=q.shape), q.dtype), q)
    k2 = jnp.where(later, jnp.asarray(rng.normal(size=k.shape), k.dtype), k)
    v2 = jnp.where(later, jnp.asarray(rng.normal(size=v.shape) * 10, v.dtype), v)
    out2 = run.pair(*plain, (q2, k2, v2))[1][0]
    _assert_close("causality", case, out2[:, :cut + 1], out[:, :cut + 1], 10 * opts.atol, 10 * opts.rtol,
                  f"outputs at positions <= {cut} changed when positions > {cut} changed (is_causal=True)")


def _check_exact(case, opts, mask, is_causal, got, want):
    (out, jacs), (ref, ref_jacs) = got, want
    extra = {"mask": None if mask is None else np.asarray(mask), "is_causal": is_causal}
    _assert_close("exact softmax", case, out, ref, opts.atol, opts.rtol,
                  "output differs from attnjax.dot_product_attention", **extra)
    for name, g, rg in zip(("query", "key", "value"), jacs, ref_jacs):
        _assert_close("exact softmax", case, g, rg, 10 * opts.atol, 10 * opts.rtol,
                      f"d output / d {name} differs from dot_product_attention's", **extra)


def _example(run, opts, case):
    """Every shape-driven property on one drawn case (one compiled program, reused)."""
    q, k, v = _inputs(case)
    mask = None
    if opts.mask_kind is not None:
        rng = np.random.default_rng(case.seed + 1)
        mask = _full_mask(case, rng) if opts.mask_kind == "full" else _key_mask(case, rng)
    causal_case = dataclasses.replace(case, S=case.T)
    causal_inputs = _inputs(causal_case) if opts.supports_causal else None
    (out, jacs), causal = run.pair(q, k, v, mask, causal_inputs)
    _check_output(case, out)
    _check_jacobian(case, jacs, mask, False)
    _check_batch(run, case, opts, q, k, v, mask, out, causal_inputs)
    if opts.position_free:
        _check_permutation(run, case, opts, q, k, v, mask, out, causal_inputs)
    if mask is not None:
        _check_mask_values(run, case, opts, q, k, v, mask, out, causal_inputs)
    reference = _reference().pair(q, k, v, mask, causal_inputs) if opts.exact_softmax else None
    if opts.exact_softmax:
        _check_exact(case, opts, mask, False, (out, jacs), reference[0])
    if opts.supports_causal:
        cq, ck, cv = causal_inputs
        c_out, c_jacs = causal
        _check_output(causal_case, c_out, prop="causality")
        _check_jacobian(causal_case, c_jacs, None, True)
        _check_causal_values(run, causal_case, opts, cq, ck, cv, c_out, (q, k, v, mask))
        if opts.exact_softmax:
            _check_exact(causal_case, opts, None, True, causal, reference[1])


# --------------------------------------------------------------------------- fixed cases

def _fixed_case(opts: Options, seed: int) -> Case:
    # One shape for all fixed checks, so they share compiled programs.
    return Case(B=2, T=4, S=4, N=2, K=1 if opts.gqa else 2, H=4, seed=seed)


def _both(run, q, k, v, mask=None):
    """Non-causal (optionally masked) and causal results on the same inputs: one program per structure."""
    first, second = run.pair(q, k, v, mask, (q, k, v))
    return [(False, first)] + ([(True, second)] if second is not None else [])


def _check_jit(run, opts):
    case = _fixed_case(opts, 23)
    q, k, v = _inputs(case)
    for is_causal, (out, _) in _both(run, q, k, v):
        _check_output(case, out)
        eager = _call(run.fn, q, k, v, None, is_causal)
        _assert_close("jit", case, eager, out, 10 * opts.atol, 10 * opts.rtol,
                      f"fn differs from jax.jit(fn) (is_causal={is_causal})")


def _extreme_case(run, opts):
    prop = "extreme logits"
    case = _fixed_case(opts, 11)
    q, k, v = _inputs(case)
    # Scale q and k so that the largest |q.k| / sqrt(H) is EXTREME_LOGIT.
    logits = np.einsum("btnh,bskh->bnts", np.asarray(q), np.repeat(np.asarray(k), case.N // case.K, axis=2))
    factor = np.sqrt(EXTREME_LOGIT * np.sqrt(case.H) / np.abs(logits).max())
    q, k = q * factor, k * factor
    for is_causal, (out, jacs) in _both(run, q, k, v):
        what = f"{case.describe()}, max |q.k|/sqrt(H) = {EXTREME_LOGIT:g}, is_causal={is_causal}"
        _assert_finite(prop, what, out, "output")
        for name, jac in zip(("query", "key", "value"), jacs):
            _assert_finite(prop, what, jac, f"d output / d {name}")


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
        _fail(prop, what, f"row [b={b}, t={t}, n={n}] sees no key, so it must output {names} with "
              f"masked_rows={opts.masked_rows!r}; {int(bad.sum())} such rows do not",
              row_output=out[b, t, n], **distances, mask=mask)


def _masked_rows_case(run, opts):
    """Rows that see no key: finite outputs and gradients, and an allowed value (``masked_rows``)."""
    prop = "fully masked rows"
    case = _fixed_case(opts, 13)
    q, k, v = _inputs(case)
    rng = np.random.default_rng(case.seed)
    empty = np.zeros((case.B, case.T), bool)
    if opts.mask_kind == "full":
        mask = _full_mask(case, rng)
        mask[0, :, 1, :] = False  # query 1 of batch 0 sees nothing, in every head
        empty[0, 1] = True
    else:
        mask = _key_mask(case, rng)
        mask[0] = False  # batch 0 sees no key at all
        empty[0, :] = True
    what = f"{case.describe()}, mask {mask.shape} with rows that see no key"
    out, jacs = _both(run, q, k, v, mask)[0][1]
    _assert_finite(prop, what, out, "output", mask=mask)
    for name, jac in zip(("query", "key", "value"), jacs):
        _assert_finite(prop, what, jac, f"d output / d {name}", mask=mask)
    _check_masked_row_values(prop, what, opts, case, out, v, empty, mask)


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
    warnings.warn(f"attnjax.testing: [{prop}] skipped for {what}: the {jax.default_backend()} backend cannot "
                  f"compute it ({type(err).__name__}: {first_line}); every other check still runs",
                  SkippedCheckWarning, stacklevel=4)


def _low_precision_case(run, opts):
    prop = "low precision"
    case = _fixed_case(opts, 17)
    q, k, v = _inputs(case)
    refs = dict(_both(run, q, k, v))
    for dtype in opts.dtypes:
        dt = jnp.dtype(_DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype)
        ql, kl, vl = (x.astype(dt) for x in (q, k, v))
        try:
            results = _both(run, ql, kl, vl)
        except Exception as err:  # noqa: BLE001 - re-raised unless it is a backend limit
            if not _backend_limit(err):
                raise
            # A platform limit, not an attention bug: the verdict covers every other check.
            _skip_note(prop, f"dtype {dt.name}", err)
            continue
        for is_causal, (out, jacs) in results:
            what = f"{case.describe()}, dtype {dt.name}, is_causal={is_causal}"
            _check_output(case, out, dt, prop)
            for name, jac in zip(("query", "key", "value"), jacs):
                _assert_finite(prop, what, jac, f"d output / d {name}")
            # Rounding the inputs alone moves the output by a few eps(dtype) times the value scale.
            tol = 8 * float(jnp.finfo(dt).eps) * float(np.abs(np.asarray(v)).max())
            _assert_close(prop, what, out, refs[is_causal][0], tol, 0.0,
                          f"{dt.name} output is far from the float32 output")


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


def _mask_ranks_case(run, opts):
    """Masks of rank < 4 broadcast like jax.nn's (leading 1s): same output as the rank-4 mask."""
    prop = "mask ranks"
    case = _fixed_case(opts, 31)
    q, k, v = _inputs(case)
    masks = _low_rank_masks(opts, case, np.random.default_rng(case.seed))
    errors: dict[int, BaseException] = {}

    def all_ranks(q, k, v, masks):
        outs = {}
        for rank, mask in masks.items():
            try:  # tracing is Python: one rank's exception must not hide another's
                outs[rank] = (_call(run.fn, q, k, v, mask), _call(run.fn, q, k, v, mask.reshape((1,) * (4 - rank)
                                                                                             + mask.shape)))
            except Exception as err:  # noqa: BLE001 - reported below as a violation
                errors[rank] = err
        return outs

    outs = jax.jit(all_ranks)(q, k, v, {r: jnp.asarray(m) for r, m in masks.items()})
    for rank, mask in masks.items():
        padded = (1,) * (4 - rank) + mask.shape
        what = f"{case.describe()}, mask of rank {rank} and shape {mask.shape} (as if {padded})"
        if rank in errors:
            err = errors[rank]
            try:
                _fail(prop, what, f"fn raised {type(err).__name__}: {err} for a mask of rank {rank}; a mask of "
                      f"rank < 4 must broadcast to [B, N, T, S] with leading 1s, as in "
                      f"jax.nn.dot_product_attention (opt out with mask_ranks=())")
            except AssertionError as failure:
                raise failure from err
        out, want = outs[rank]
        if tuple(out.shape) != tuple(want.shape) or out.dtype != want.dtype:
            _fail(prop, what, f"output has shape {tuple(out.shape)} and dtype {out.dtype}, but with the same mask "
                  f"reshaped to {padded} it has {tuple(want.shape)} and {want.dtype}")
        _assert_close(prop, what, out, want, 10 * opts.atol, 10 * opts.rtol,
                      f"a rank-{rank} mask gives another output than the same mask reshaped to {padded}")


APPROX_CASE = Case(B=2, T=16, S=16, N=2, K=2, H=8, seed=19)


def approximation_inputs() -> tuple[Array, Array, Array]:
    """The ``(query, key, value)`` on which ``approx_tol`` is checked (see the module docstring)."""
    return _inputs(APPROX_CASE, qk_std=APPROX_QK_STD)


def _approx_case(run, opts):
    prop = "approximation"
    case = APPROX_CASE
    q, k, v = _inputs(case, qk_std=APPROX_QK_STD)
    refs = {c: (out,) for c, out in _reference().outputs(q, k, v)}
    for is_causal, out in run.outputs(q, k, v):
        diff = np.asarray(out, np.float64) - np.asarray(refs[is_causal][0], np.float64)
        rms = float(np.sqrt(np.mean(diff ** 2)))
        if not rms <= opts.approx_tol:
            err, idx = _max_err(out, refs[is_causal][0])
            _fail(prop, f"{case.describe()}, q/k std {APPROX_QK_STD}, is_causal={is_causal}",
                  f"root-mean-square error to exact softmax attention {rms:.3g} exceeds approx_tol "
                  f"{opts.approx_tol:g} (max abs error {err:.3g} at {idx})")
