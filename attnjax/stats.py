"""Confidence intervals over seeds (NumPy and SciPy only; no JAX, no Flax).

Experiments report a mean over a few seeds together with its 95% interval, and compare two conditions
run on the same seeds with a *paired* interval (the CI of the mean per-seed difference), which is far
narrower than two separate intervals when seeds share most of their variance.

Conventions, for every function here:

* ``values`` are finite real numbers in a 1-D sequence; anything else raises ``ValueError`` naming the
  argument.
* A single value has no spread to estimate: its interval is ``(nan, nan)`` and the mean is the value. A
  constant sample of two or more values gets the degenerate interval ``(v, v)``.
* ``method="t"``: Student's t-interval ``mean ± t_{(1+c)/2, n-1} · s / √n`` with the sample standard
  deviation ``s`` (``ddof=1``). ``method="bootstrap"``: the percentile bootstrap of the mean, with
  ``n_resamples`` resamples drawn by ``numpy.random.default_rng(seed)``, so the same call always returns
  the same interval.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats as _scipy_stats

METHODS = ("t", "bootstrap")


def _sample(values, name: str) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D sequence of real numbers, got {values!r}") from None
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} must hold at least one value, got an empty sequence")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite, got {x.tolist()}")
    return x


def _check_options(confidence: float, method: str, n_resamples: int, seed: int) -> None:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive int, got {n_resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def t_critical(n: int, confidence: float = 0.95) -> float:
    """Two-sided Student-t critical value for ``n`` values (``n - 1`` degrees of freedom).

    Raises:
        ValueError: ``n < 2`` (no degrees of freedom) or ``confidence`` outside (0, 1).
    """
    _check_options(confidence, "t", 1, 0)
    if int(n) < 2:
        raise ValueError(f"n must be >= 2 for a t-interval, got {n}")
    return float(_scipy_stats.t.ppf((1.0 + confidence) / 2.0, int(n) - 1))


def mean_ci(values: Sequence[float], confidence: float = 0.95, method: str = "t", *, n_resamples: int = 10_000,
            seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` and its confidence interval.

    Args:
        values: ``[n]`` finite real numbers (e.g. one score per seed).
        confidence: coverage of the interval, in (0, 1).
        method: ``"t"`` (Student's t-interval) or ``"bootstrap"`` (percentile bootstrap of the mean).
        n_resamples: bootstrap resamples (ignored by ``"t"``).
        seed: seed of the bootstrap's ``numpy.random.default_rng`` (ignored by ``"t"``).

    Returns:
        ``(mean, low, high)`` as floats; ``(v, nan, nan)`` for a single value ``v``.

    Raises:
        ValueError: ``values`` empty, not 1-D or not finite; a bad ``confidence``, ``method``,
            ``n_resamples`` or ``seed``.
    """
    x = _sample(values, "values")
    _check_options(confidence, method, n_resamples, seed)
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan
    if method == "t":
        half = t_critical(x.size, confidence) * float(x.std(ddof=1)) / math.sqrt(x.size)
        return mean, mean - half, mean + half
    rng = np.random.default_rng(int(seed))
    means = x[rng.integers(0, x.size, size=(int(n_resamples), x.size))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    # Quantiles of identical values can differ from them by one ulp; keep the interval around the mean.
    return mean, min(float(low), mean), max(float(high), mean)


def paired_difference_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, method: str = "t", *,
                         n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of the paired differences ``a[i] - b[i]`` and its confidence interval.

    ``a[i]`` and ``b[i]`` must be measured on the same unit (same seed, same task ...): the interval is
    :func:`mean_ci` of the differences, so what the pairs share cancels out.

    Args:
        a: ``[n]`` finite values of the first condition.
        b: ``[n]`` finite values of the second condition, paired with ``a`` by position.
        confidence, method, n_resamples, seed: as in :func:`mean_ci`.

    Returns:
        ``(mean difference, low, high)``; ``(d, nan, nan)`` for a single pair.

    Raises:
        ValueError: ``a`` and ``b`` of different lengths, or any :func:`mean_ci` error.
    """
    x, y = _sample(a, "a"), _sample(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must be paired (same length), got len(a)={x.size} and len(b)={y.size}")
    return mean_ci(x - y, confidence, method, n_resamples=n_resamples, seed=seed)


def mean_ci_per_column(values, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise :func:`mean_ci` (t-interval) of ``values [n, k]``, e.g. seeds × test lengths.

    Returns:
        ``(mean [k], low [k], high [k])``; ``low`` and ``high`` are NaN when ``n == 1``.

    Raises:
        ValueError: ``values`` not 2-D, without rows or not finite; a bad ``confidence``.
    """
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"values must be a 2-D array of real numbers [n, k], got {values!r}") from None
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"values must be 2-D [n, k] with n >= 1, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("values must be finite")
    _check_options(confidence, "t", 1, 0)
    mean = x.mean(axis=0)
    if x.shape[0] == 1:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan.copy()
    half = t_critical(x.shape[0], confidence) * x.std(axis=0, ddof=1) / math.sqrt(x.shape[0])
    return mean, mean - half, mean + half
