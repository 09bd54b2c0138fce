"""Options, problems, inputs and masks of the conformance kit, and how it reports violations.

Every check raises :class:`Violation` through :func:`fail` (or the ``assert_*`` helpers); a
:class:`Report` collects them, keeping the first counterexample of each property, so that one run of
:func:`attnjax.testing.check_attention` lists every violated property. Masks are described by their
shape and the row (and key) at fault, never printed whole.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

APPROX_QK_STD = 0.5
EXTREME_LOGIT = 1e4
MASK_KINDS = (None, "full", "keys")
# What a query row that sees no key may output: "zeros" (attnjax's convention) or, in addition,
# "mean": the mean of the values over all S keys (jax.nn.dot_product_attention's convention: every
# logit of the row is the same large negative number, so the softmax is uniform).
MASKED_ROWS = ("zeros_or_mean", "zeros")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# Mask ranks below 4 that every masked function must take, left-padded with 1s as in jax.nn.
MASK_RANKS = (1, 2, 3)
# What fn is compared with: softmax attention (attnjax.dot_product_attention), or nothing.
REFERENCES = ("softmax", None)
# Arrays up to this many entries are printed in a violation; larger ones by shape and dtype only.
_PRINTED_ENTRIES = 16


class SkippedCheckWarning(UserWarning):
    """A check the kit skipped because the backend cannot run it (e.g. a float16 matmul on CPU).

    The message names the check, the dtype, the backend and the backend's own error.
    """


@dataclasses.dataclass(frozen=True)
class Options:
    """What the function under test claims; see :func:`attnjax.testing.check_attention`."""

    reference: str | None = "softmax"
    scale: float | None = None
    approx_tol: float | None = None
    mask_kind: str | None = "full"
    supports_causal: bool = True
    position_free: bool = True
    masked_rows: str = "zeros_or_mean"
    gqa: bool = True
    dtypes: tuple[Any, ...] = ("bfloat16", "float16")
    mask_ranks: tuple[int, ...] = MASK_RANKS
    atol: float = 1e-5
    rtol: float = 1e-5

    @property
    def exact(self) -> bool:
        """Compare values and jacobians with softmax attention to rounding error."""
        return self.reference == "softmax" and self.approx_tol is None

    def describe_scale(self, H: int) -> str:
        """The expected scale for head dim ``H``, e.g. ``"1/sqrt(H) = 0.5"``."""
        return f"1/sqrt(H) = {1 / np.sqrt(H):.4g}" if self.scale is None else f"{self.scale:g}"


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


def fixed_case(opts: Options, seed: int) -> Case:
    # One shape for all fixed checks, so they share compiled programs.
    return Case(B=2, T=4, S=4, N=2, K=1 if opts.gqa else 2, H=4, seed=seed)


# --------------------------------------------------------------------------- violations

class Violation(AssertionError):
    """One violated property: ``[prop] violated: ...`` with the counterexample."""

    def __init__(self, prop: str, message: str):
        super().__init__(message)
        self.prop = prop


class Report:
    """Collects violations: the first counterexample of each property, and how many more cases
    violated it. :meth:`raise_if_any` raises one AssertionError listing them all."""

    def __init__(self):
        self._first: dict[str, Violation] = {}
        self._more: collections.Counter = collections.Counter()

    def record(self, violation: Violation) -> None:
        if violation.prop in self._first:
            self._more[violation.prop] += 1
        else:
            self._first[violation.prop] = violation

    def check(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """Runs one check; records its violation (other exceptions propagate). True if it held."""
        try:
            fn(*args, **kwargs)
        except Violation as violation:
            self.record(violation)
            return False
        return True

    @property
    def violated(self) -> list[str]:
        return list(self._first)

    def summary(self) -> str:
        names = ", ".join(self._first)
        count = len(self._first)
        parts = [f"attnjax.testing.check_attention: {count} propert{'y' if count == 1 else 'ies'} violated: {names}"]
        for prop, violation in self._first.items():
            text = str(violation)
            if self._more[prop]:
                text += f"\n  (violated in {self._more[prop]} more case{'s' if self._more[prop] > 1 else ''} too)"
            parts.append(text)
        return "\n\n".join(parts)

    def raise_if_any(self) -> None:
        if self._first:
            cause = next((v.__cause__ for v in self._first.values() if v.__cause__ is not None), None)
            raise AssertionError(self.summary()) from cause


def _format(value: Any) -> str:
    if isinstance(value, (np.ndarray, jax.Array)):
        value = np.asarray(value)
        if value.size > _PRINTED_ENTRIES:
            return f"array of shape {value.shape} and dtype {value.dtype} (not printed)"
        return np.array2string(value, precision=4)
    return value if isinstance(value, str) else repr(value)


def fail(prop: str, case: Case | str, detail: str, **extra: Any) -> None:
    """Raises :class:`Violation`; ``extra`` values are printed one per line (large arrays by shape only)."""
    lines = [f"[{prop}] violated: {detail}",
             f"  counterexample: {case.describe() if isinstance(case, Case) else case}"]
    lines += [f"  {name}: {_format(value)}" for name, value in extra.items() if value is not None]
    raise Violation(prop, "\n".join(lines))


def describe_mask(mask: Any, row: tuple[int, int, int] | None = None, key: int | None = None) -> str:
    """A mask by its shape and, for query ``row = (b, n, t)``, the keys that row sees (and whether
    ``key`` is one of them); never the whole array.

    Args:
        mask: boolean, rank <= 4, broadcastable to ``[B, N, T, S]``.
        row: the offending query row ``(b, n, t)``, or None.
        key: the offending key position in that row, or None.
    """
    m = np.asarray(mask)
    text = f"bool{list(m.shape)} (True = attend, broadcast to [B, N, T, S])"
    if row is None:
        return text
    m4 = m.reshape((1,) * (4 - m.ndim) + m.shape)
    b, n, t = (i if size > 1 else 0 for i, size in zip(row, m4.shape[:3]))
    visible = np.flatnonzero(m4[b, n, t])
    keys = [int(s) for s in visible[:_PRINTED_ENTRIES]] + (["..."] if visible.size > _PRINTED_ENTRIES else [])
    text += f"; row [b={row[0]}, n={row[1]}, t={row[2]}] sees keys {keys} of S={m4.shape[3]}"
    if key is not None:
        text += f" (key {key} is {'visible' if m4[b, n, t, key if m4.shape[3] > 1 else 0] else 'masked'})"
    return text


def max_err(a, b) -> tuple[float, tuple[int, ...]]:
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    diff = np.where(np.isnan(diff), np.inf, diff)
    if diff.size == 0:
        return 0.0, ()
    idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return float(diff[idx]), tuple(int(i) for i in idx)


def assert_close(prop, case, actual, expected, atol, rtol, what: str, mask=None, **extra):
    """``|actual - expected| <= atol + rtol * |expected|`` everywhere, else a violation at the worst
    index. For ``[B, T, N, ...]`` outputs, ``mask`` is described at the offending query row."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    tol = atol + rtol * np.abs(expected)
    bad = ~(np.abs(actual - expected) <= tol)
    if np.any(bad):
        err, idx = max_err(actual, expected)
        if mask is not None:
            extra["mask"] = describe_mask(mask, row=(idx[0], idx[2], idx[1]) if len(idx) >= 3 else None)
        fail(prop, case, f"{what}: max abs error {err:.3g} at index {idx} (atol {atol:.3g}, rtol {rtol:.3g}); "
             f"{int(bad.sum())} of {bad.size} entries out of tolerance",
             actual_at_index=float(actual[idx]), expected_at_index=float(expected[idx]), **extra)


def assert_finite(prop, case, x, what: str, mask=None, **extra):
    """Every entry finite, else a violation at the first non-finite one. For arrays whose first axes
    are ``[B, T, N]`` (outputs and jacobians), ``mask`` is described at that query row."""
    x = np.asarray(x, np.float64)
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))
        first = tuple(int(i) for i in bad[0])
        if mask is not None:
            extra["mask"] = describe_mask(mask, row=(first[0], first[2], first[1]) if len(first) >= 3 else None)
        fail(prop, case, f"{what} is not finite at {len(bad)} entries, first at index {first}", **extra)


def check_output(case: Case, out, dtype=jnp.float32, prop="shape/dtype"):
    """Output ``[B, T, N, H]`` in ``dtype``, finite."""
    want = (case.B, case.T, case.N, case.H)
    if tuple(out.shape) != want or out.dtype != dtype:
        fail(prop, case, f"expected output shape {want} and dtype {jnp.dtype(dtype).name}, got "
             f"{tuple(out.shape)} and {out.dtype}")
    assert_finite(prop, case, out, "output")


# --------------------------------------------------------------------------- inputs and masks

def inputs(case: Case, dtype=jnp.float32, qk_std: float = 1.0):
    rng = np.random.default_rng(case.seed)
    q = rng.normal(size=(case.B, case.T, case.N, case.H)) * qk_std
    k = rng.normal(size=(case.B, case.S, case.K, case.H)) * qk_std
    v = rng.normal(size=(case.B, case.S, case.K, case.H))
    return tuple(jnp.asarray(x, dtype) for x in (q, k, v))


def call(fn, q, k, v, mask=None, is_causal=False):
    """``fn(q, k, v)`` with ``mask=`` and ``is_causal=True`` only when given."""
    kwargs = {}
    if mask is not None:
        kwargs["mask"] = mask
    if is_causal:
        kwargs["is_causal"] = True
    return fn(q, k, v, **kwargs)


def key_mask(case: Case, rng: np.random.Generator, keep_one: bool = True) -> np.ndarray:
    """``[B, 1, 1, S]`` boolean with some keys hidden (at least one visible when ``keep_one``)."""
    keep = rng.random((case.B, case.S)) < 0.6
    if keep_one:
        keep[np.arange(case.B), rng.integers(0, case.S, case.B)] = True
    return keep[:, None, None, :]


def full_mask(case: Case, rng: np.random.Generator) -> np.ndarray:
    """``[B, N, T, S]`` random boolean with at least one visible key per row."""
    keep = rng.random((case.B, case.N, case.T, case.S)) < 0.6
    first = rng.integers(0, case.S, (case.B, case.N, case.T))
    np.put_along_axis(keep, first[..., None], True, axis=-1)
    return keep


def visibility(mask: np.ndarray, case: Case) -> np.ndarray:
    """``[B, T, N, S]``: may query ``(t, n)`` see key ``s``, from a rank-4 mask."""
    return np.transpose(np.broadcast_to(mask, (case.B, case.N, case.T, case.S)), (0, 2, 1, 3))
