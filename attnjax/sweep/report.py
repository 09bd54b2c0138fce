"""What every study's report shares: how a number is written (percentages, 95% t-intervals over seeds), runs
grouped by seed and the setting chosen on validation, the ours-vs-published verdict, the opening and closing
lines of a summary, and how a page and its plots are written."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from attnjax import stats
from attnjax.results import save_and_close, write_text
from attnjax.sweep.runner import format_seconds

Run = Mapping[str, Any]
Seeds = Mapping[int, Run]  # one group's runs by seed
SUMMARY_FILE = "summary.md"


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


def seeds_ci_text(values: Sequence[float] | Mapping[Any, float], sign: bool = False) -> str:
    """:func:`ci_text` of the mean over seeds and its 95% t-interval (``values``: a sequence, or a mapping
    from seed to value); the mean alone for one value."""
    values = list(values.values()) if isinstance(values, Mapping) else list(values)
    if not values:
        return "–"
    mean, low, high = stats.mean_ci(values)
    return pct(mean, sign) if not math.isfinite(low) else ci_text(mean, low, high, sign)


def run_header(results: Mapping[str, Any], runs: Sequence[Run]) -> str:
    """The opening words of a summary: ``Preset `cpu`: 40/42 cells ok, 3 seed(s)``."""
    return (f"Preset `{results['config'].get('preset')}`: {len(runs)}/{results.get('num_cells', len(runs))} cells "
            f"ok, {len({r['seed'] for r in runs})} seed(s)")


def minutes(results: Mapping[str, Any]) -> float:
    """The minutes the cells of ``results`` took, summed over cells."""
    return sum(e.get("seconds", 0.0) for e in results.get("cells", {}).values()) / 60


def run_facts(results: Mapping[str, Any], runs: Sequence[Run]) -> str:
    """How a run went: ``40 runs ok, 2 failed; wall time 6m15s, 11m40s of train + eval over the cells. jax 0.6.2
    on cpu (cpu), commit abc1234.``, then a bold note while cells are missing."""
    cells, env = results.get("cells", {}), results.get("environment", {})
    failed = sum(e.get("status") == "failed" for e in cells.values())
    wall = f"wall time {format_seconds(results['wall_seconds'])}, " if "wall_seconds" in results else ""
    compute = sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in runs)
    partial = (f" **Partial: {len(cells)} of {results['num_cells']} cells so far.**"
               if not results.get("complete", True) and "num_cells" in results else "")
    return (f"{len(runs)} runs ok, {failed} failed; {wall}{format_seconds(compute)} of train + eval over the cells. "
            f"jax {env.get('jax', '?')} on {env.get('backend', '?')} "
            f"({', '.join(env.get('device_kinds', [])) or '?'}), commit {env.get('git_commit', '?')}.{partial}")


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


def setting(run: Run) -> str:
    """What a study chooses per model on validation data: ``"recipe@lr"`` (``"lr"`` for runs without a recipe axis)."""
    return f"{run['recipe']}@{run['lr']}" if run.get("recipe") else str(run["lr"])


def group_runs(runs: Sequence[Run], key: Callable[[Run], Any],
               setting: Callable[[Run], str] = setting) -> dict[Any, dict[str, dict[int, Run]]]:
    """Runs as ``{key(run): {setting(run): {seed: run}}}``, each level in the order first seen."""
    out: dict[Any, dict[str, dict[int, Run]]] = {}
    for r in runs:
        out.setdefault(key(r), {}).setdefault(setting(r), {})[int(r["seed"])] = r
    return out


def best_setting(settings: Mapping[str, Seeds], metric: str) -> Seeds:
    """The runs of the setting with the best mean ``metric`` over seeds (of equals, the first given). Choose on
    validation data, never the test set."""
    return max(settings.values(), key=lambda seeds: np.mean([r[metric] for r in seeds.values()]))


def seed_values(seeds: Seeds, metric: str) -> dict[int, float]:
    """``{seed: run[metric]}`` in seed order, leaving out runs without the metric."""
    return {s: seeds[s][metric] for s in sorted(seeds) if seeds[s].get(metric) is not None}


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> dict[int, float]:
    """``a − b`` per seed, over the seeds both have (a paired comparison)."""
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b))}


@dataclasses.dataclass(frozen=True)
class PairedEffect:
    """Treatment − control over values paired by (unit, seed): each seed's values averaged over the units (those
    seeds every unit has), then the 95% t-interval over seeds (:attr:`diff`). Units fall into groups (tasks, say)."""

    name: str
    by_group: dict[Any, tuple[float, float]]  # group -> (control, treatment) means over the group's common seeds
    seeds: list[Any]
    control: float  # means over seeds
    treatment: float
    deltas: list[float]  # per seed: treatment − control, averaged over the units
    diff = property(lambda self: stats.mean_ci(self.deltas))


def paired_effect(name: str, cells: Mapping[tuple[Any, Any], Mapping[Any, tuple[float, float]]]
                  ) -> PairedEffect | None:
    """The :class:`PairedEffect` of ``cells``: ``(group, unit) -> {seed: (control, treatment)}``; None when no seed
    is common to every unit."""
    seeds, means = per_seed_means(cells)  # [n_seeds, 2]
    if not seeds:
        return None
    by_group = {g: tuple(per_seed_means({u: v for u, v in cells.items() if u[0] == g})[1].mean(axis=0))
                for g in dict.fromkeys(g for g, _ in cells)}
    return PairedEffect(name, by_group, seeds, float(means[:, 0].mean()), float(means[:, 1].mean()),
                        list(means[:, 1] - means[:, 0]))


def held_out_metric(runs: Sequence[Run]) -> str:
    """The accuracy a report reads: ``"test_accuracy"`` once runs scored a test set, else ``"val_accuracy"`` (a
    pilot choosing on validation data)."""
    return "test_accuracy" if any("test_accuracy" in r for r in runs) else "val_accuracy"


def describe_fit(metrics: Mapping[str, Any]) -> str:
    """The progress line of a classifier-style cell: ``train 93.1%, test 90.2%`` (``val`` on a validation split)."""
    held = "test" if "test_accuracy" in metrics else "val"
    return f"train {100 * metrics['train_accuracy']:.1f}%, {held} {100 * metrics[f'{held}_accuracy']:.1f}%"


# --------------------------------------------------------------------------- tables

def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A markdown table; cells are written with ``str``. ``align``: ``l`` or ``r`` per column (right-aligned
    numbers); columns past its end are left-aligned."""
    lines = ["| " + " | ".join(map(str, header)) + " |",
             "|" + "".join("---:|" if a == "r" else "---|" for a in align.ljust(len(header), "l"))]
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

def label_colors(labels: Iterable[str]) -> dict[str, Any]:
    """A color per label, in sorted order: ``tab10``, or ``tab20`` for more than 10 labels."""
    import matplotlib.pyplot as plt

    labels = sorted(set(labels))
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {k: cmap(i % cmap.N) for i, k in enumerate(labels)}


def heatmap_figure(values: np.ndarray, row_labels: Sequence[str], column_labels: Sequence[str], title: str,
                   colorbar_label: str, marks: Sequence[Sequence[str]] | None = None):
    """A ``[rows, columns]`` grid of fractions (NaN: empty) as a heatmap, each cell written in % followed by its
    mark in ``marks`` (such as ``⚠``); returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.0 + 0.75 * len(column_labels), 1.2 + 0.38 * len(row_labels)))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        if math.isfinite(v):
            ax.text(j, i, f"{100 * v:.0f}{marks[i][j] if marks else ''}", ha="center", va="center", fontsize=7,
                    color="w" if v < 0.6 else "k")
    ax.set_yticks(range(len(row_labels)), labels=row_labels, fontsize=7)
    ax.set_xticks(range(len(column_labels)), labels=column_labels, fontsize=7, rotation=45, ha="right")
    fig.colorbar(image, ax=ax, label=colorbar_label)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


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
    with open(os.path.join(os.path.dirname(study_file), "published.json"), encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------- writing a page

def save_figures(workdir: str, figures: Mapping[str, Any]) -> list[str]:
    """Saves every figure that is not None as ``workdir/<name>`` (110 dpi; a tight box keeps legends placed
    below the axes); returns the names saved, in order."""
    written = [name for name, fig in figures.items() if fig is not None]
    for name in written:
        save_and_close(os.path.join(workdir, name), figures[name], dpi=110, bbox_inches="tight")
    return written


def write_summary(workdir: str, text: str) -> str:
    """Writes ``text`` as ``workdir/summary.md`` (atomically) and returns it."""
    write_text(os.path.join(workdir, SUMMARY_FILE), text)
    return text
