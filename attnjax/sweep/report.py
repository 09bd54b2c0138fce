"""What every study's report shares: how a number is written (percentages, 95% t-intervals over seeds),
the ours-vs-published verdict, and the closing lines of a summary."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

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


def summary_tail(results: Mapping[str, Any], figures: Sequence[str] = ()) -> list[str]:
    """The closing markdown lines every study's ``summary.md`` shares: the failed cells with their
    errors (never dropped silently) and links to the plots."""
    out: list[str] = []
    failed = {cid: e for cid, e in results.get("cells", {}).items() if e.get("status") == "failed"}
    if failed:
        out += ["", f"## Failed cells ({len(failed)})", "",
                *[f"- `{cid}`: {e.get('error', 'no error recorded')}" for cid, e in failed.items()]]
    if figures:
        out += ["", "## Plots", "", *[f"![{name}]({name})" for name in figures]]
    return out


def per_seed_means(cells: Mapping[Any, Mapping[Any, Sequence[float]]]) -> tuple[list[Any], np.ndarray]:
    """``{unit: {seed: values}}`` -> (seeds every unit has, ``[n_seeds, len(values)]`` means over units)."""
    seeds = sorted(set.intersection(*(set(by_seed) for by_seed in cells.values()))) if cells else []
    return seeds, np.asarray([np.mean([cells[u][s] for u in cells], axis=0) for s in seeds], dtype=np.float64)


def describe_fit(metrics: Mapping[str, Any]) -> str:
    """The progress line of a classifier-style cell: ``train 93.1%, test 90.2%`` (``val`` on a validation split)."""
    held = "test" if "test_accuracy" in metrics else "val"
    return f"train {100 * metrics['train_accuracy']:.1f}%, {held} {100 * metrics[f'{held}_accuracy']:.1f}%"


# --------------------------------------------------------------------------- tables

def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; cells are written with ``str``."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


# --------------------------------------------------------------------------- ours vs published

@dataclasses.dataclass(frozen=True)
class Comparison:
    """Ours (per-seed values) against one published number, both as fractions.

    ``verdict``: ``agrees`` (the published value lies in our 95% interval, widened by ``tolerance``),
    ``differs`` (it lies outside), or ``inconclusive`` (one seed: no interval; or ``caveat``, such as a model
    that did not fit its training data, makes our number uninformative). ``difference``: the values are
    differences (written with their sign, their interval clipped to [-100, 100] rather than [0, 100]).
    """

    claim: str
    mean: float
    low: float
    high: float
    published: float
    verdict: str
    caveat: str = ""
    difference: bool = False

    def row(self) -> list[str]:
        sign = self.difference
        ours = ci_text(self.mean, self.low, self.high, sign) if math.isfinite(self.low) else pct(self.mean, sign)
        return [self.claim, ours, pct(self.published, sign),
                self.verdict + (f" ({self.caveat})" if self.caveat else "")]


def compare(claim: str, values: Sequence[float], published: float, *, tolerance: float = 0.0,
            caveat: str = "", difference: bool = False) -> Comparison:
    """The :class:`Comparison` of per-seed ``values`` with ``published`` (fractions); ``tolerance`` (a fraction)
    widens our interval on both sides, for a protocol that differs from the paper's in known ways."""
    mean, low, high = stats.mean_ci(list(values)) if len(values) > 1 else (float(np.mean(values)), -math.inf, math.inf)
    if caveat or not math.isfinite(low):
        verdict = "inconclusive"
    else:
        verdict = "agrees" if low - tolerance <= published <= high + tolerance else "differs"
    return Comparison(claim, mean, low, high, published, verdict, caveat, difference)


def comparison_table(comparisons: Sequence[Comparison]) -> str:
    """One row per claim: ours ``mean [95% CI]``, the published number, the verdict."""
    return markdown_table(["claim", "ours", "published", "verdict"], [c.row() for c in comparisons])


# --------------------------------------------------------------------------- plots

def curves_figure(panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[Sequence[float]]]]],
                  xlabel: str, ylabel: str, cols: int = 4, logx: bool = False):
    """One panel per title; in each, one line per label: the mean over seeds with its 95% band.

    Args:
        panels: ``{title: {label: (xs, [per-seed ys])}}``; ys as fractions, drawn in %.
    Returns:
        The matplotlib figure (save it with :func:`attnjax.results.save_and_close`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(panels), 1)
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    labels = sorted({label for lines in panels.values() for label in lines})
    colors = {label: plt.cm.tab10(i % 10) for i, label in enumerate(labels)}
    for ax, (title, lines) in zip(axes.flat, panels.items()):
        for label, (xs, ys) in lines.items():
            mean, low, high = stats.mean_ci_per_column(np.asarray(ys, float))
            ax.plot(xs, 100 * mean, color=colors[label], label=label)
            if np.all(np.isfinite(low)):
                # The t-interval of a few seeds can leave [0, 100]: an accuracy's band stops at its range.
                ax.fill_between(xs, np.clip(100 * low, 0, 100), np.clip(100 * high, 0, 100), color=colors[label],
                                alpha=0.2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(-2, 102)
        if logx:
            ax.set_xscale("log")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colors[label], label=label) for label in labels]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(labels), 4), fontsize=8)
    fig.tight_layout(rect=(0, 0.04 + 0.03 * (len(labels) // 4), 1, 1))
    return fig


# --------------------------------------------------------------------------- ours vs a published direction

@dataclasses.dataclass(frozen=True)
class DirectionComparison(Comparison):
    """A :class:`Comparison` of a published *direction* ("A beats B", "A degrades more than B") that has no
    number on our scale: ours is a paired difference, written with its sign; ``published_text`` says what was
    published. Rows sit in the same :func:`comparison_table` as :func:`compare`'s."""

    published_text: str = ""

    def row(self) -> list[str]:
        claim, ours, _, verdict = super().row()
        return [claim, ours, self.published_text, verdict]


def compare_direction(claim: str, differences: Sequence[float], published: str, *,
                      caveat: str = "") -> DirectionComparison:
    """Per-seed ``differences`` (fractions, signed so that the published direction is > 0) against a published
    direction described by ``published``: ``agrees`` when our 95% interval lies above 0, ``differs`` when it lies
    below 0, ``inconclusive`` when it contains 0, with one seed, or with a ``caveat``."""
    c = compare(claim, differences, 0.0, caveat=caveat)
    verdict = "agrees" if c.verdict != "inconclusive" and c.low > 0 else (
        "differs" if c.verdict != "inconclusive" and c.high < 0 else "inconclusive")
    return DirectionComparison(claim, c.mean, c.low, c.high, math.nan, verdict, caveat, True, published)


def load_published(study_file: str) -> dict[str, Any]:
    """The published numbers a study compares against: ``published.json`` beside ``study_file`` (pass a module's
    ``__file__``). Kept as data, each entry with its source, so the numbers are read, never re-typed in code."""
    import json
    import os

    with open(os.path.join(os.path.dirname(study_file), "published.json"), encoding="utf-8") as f:
        return json.load(f)
