"""A table and a figure panel over one axis of a sweep: a row (a line) per label, a column (a point) per value of
the axis; each entry the mean over seeds with its 95% t-interval, differences paired by seed.

Runs are grouped as ``{(label, *key): {seed: run}}``. A :class:`Layout` column ``(head, x, key, metric)`` reads
``metric`` of a label's runs at ``key``; its panel plots them at ``x``. A study lists its layouts (what it
sweeps, where each figure goes); :func:`layout_table` and :func:`layout_panel` draw every one alike.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from attnjax.sweep.report import markdown_table, paired, pct, seed_curve, seed_values, seeds_ci_text

Groups = Mapping[tuple, Mapping[int, Mapping[str, Any]]]  # (label, *key) -> {seed: run}


@dataclasses.dataclass(frozen=True)
class Layout:
    """One table and its panel: ``title`` (the table's heading and the panel's), ``file`` (the figure the panel
    goes to), ``xlabel``, ``columns`` ``(head, x, key, metric)``, ``options`` (:func:`layout_table`'s)."""

    title: str
    file: str
    xlabel: str
    columns: Sequence[tuple[str, float, tuple, str]]
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def values(groups: Groups, key: tuple, metric: str) -> dict[int, float]:
    """``{seed: metric}`` of the runs at ``key`` (``(label, *key)``); empty where none ran."""
    return seed_values(groups.get(key) or {}, metric)


def layout_table(groups: Groups, layout: Layout, labels: Sequence[str], *, baseline: tuple[str, str] | None = None,
                 train: bool = True, params: bool = False, change: bool = True) -> str:
    """A row per label of ``labels`` (in that order) with runs at a column; per column the metric [95% CI], with
    ``train`` the mean train accuracy, with ``baseline = (label, name)`` the paired Δ vs that label's runs (header
    ``Δ vs name``); ``params``: the parameter count of the last column with runs; ``change``: the paired change
    from the first column to the last."""
    columns = layout.columns
    first, last = columns[0], columns[-1]
    versus = [f"Δ vs {baseline[1]}"] if baseline else []
    head = ["model", *["params"] * params, *[h for c in columns for h in (c[0], *["train"] * train, *versus)],
            *[f"Δ {last[0]} − {first[0]}"] * change]
    rows = []
    for n in [n for n in labels if any((n, *c[2]) in groups for c in columns)]:
        row = [n, *[next(str(next(iter(groups[(n, *c[2])].values()))["num_params"]) for c in columns[::-1]
                         if groups.get((n, *c[2])))] * params]
        for _, _, key, metric in columns:
            fit = list(values(groups, (n, *key), "train_accuracy").values())
            delta = [] if not baseline else ["–" if n == baseline[0] else seeds_ci_text(paired(
                values(groups, (n, *key), metric), values(groups, (baseline[0], *key), metric)), sign=True)]
            row += [seeds_ci_text(values(groups, (n, *key), metric)),
                    *[pct(float(np.mean(fit))) if fit else "–"] * train, *delta]
        moved = paired(values(groups, (n, *last[2]), last[3]), values(groups, (n, *first[2]), first[3]))
        rows.append(row + [seeds_ci_text(moved, sign=True)] * change)
    return markdown_table(head, rows)


def layout_panel(groups: Groups, layout: Layout, labels: Sequence[str]) -> dict[str, tuple[list, list[list[float]]]]:
    """:func:`attnjax.sweep.plots.curves_figure`'s ``{label: (xs, per-seed ys)}`` of a layout, a line per label
    over the seeds every point of it has."""
    return {n: c for n in labels if (c := seed_curve(
        [(x, values(groups, (n, *key), m)) for _, x, key, m in layout.columns if (n, *key) in groups]))}


def layout_figures(groups: Groups, layouts: Sequence[Layout], labels: Sequence[str], ylabel: str, *, cols: int = 3,
                   logx: Sequence[str] = ()) -> dict[str, Any]:
    """A figure per ``file`` of ``layouts`` (:func:`attnjax.sweep.plots.curves_figure`): a panel per layout with
    more than one column, titled as it; the files in ``logx`` on a log x axis."""
    from attnjax.sweep.plots import curves_figure

    panels: dict[tuple[str, str], dict[str, Any]] = {}
    for t in layouts:
        if len(t.columns) > 1:
            panels.setdefault((t.file, t.xlabel), {})[t.title] = layout_panel(groups, t, labels)
    return {name: curves_figure(by_title, xlabel, ylabel, cols=cols, logx=name in logx)
            for (name, xlabel), by_title in panels.items()}
