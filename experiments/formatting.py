"""How every study's report writes a number: percentages and 95% t-intervals over seeds, one rule."""

from __future__ import annotations

import math
from typing import Sequence

from attnjax import stats


def pct(x: float | None, sign: bool = False) -> str:
    """A fraction as a percentage with one decimal (``sign``: always with its sign); ``–`` if missing."""
    if x is None or not math.isfinite(x):
        return "–"
    return f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def ci_text(mean: float, low: float, high: float, sign: bool = False) -> str:
    """``mean [low, high]`` in %. An accuracy's interval (``sign=False``) is clipped to [0, 100] and a
    difference's to [-100, 100]: the t-interval of a few seeds can leave the range the mean lives in."""
    bound = -1.0 if sign else 0.0
    interval = ("n=1" if not math.isfinite(low) else
                f"{pct(max(low, bound), sign)}, {pct(min(high, 1.0), sign)}")
    return f"{pct(mean, sign)} [{interval}]"


def seeds_ci_text(values: Sequence[float], sign: bool = False) -> str:
    """:func:`ci_text` of the mean over seeds and its 95% t-interval; the mean alone for one value."""
    if not len(values):
        return "–"
    mean, low, high = stats.mean_ci(list(values))
    return pct(mean, sign) if not math.isfinite(low) else ci_text(mean, low, high, sign)
