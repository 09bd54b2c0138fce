"""What every study's figures share: a color per label, curves over seeds with their 95% bands, accuracy
against length with the training lengths shaded, heatmaps, rows of attention maps, and saving them beside a
page. Each function returns a matplotlib figure (None where there is nothing to draw); :func:`save_figures`
writes them."""

from __future__ import annotations

import math
import os
from typing import Any, Collection, Iterable, Mapping, Sequence

import numpy as np

from attnjax import stats
from attnjax.results import save_and_close

Curves = Mapping[str, tuple[Sequence[float], Sequence[Sequence[float]]]]  # label -> (xs, [per-seed ys])


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


def curves_figure(panels: Mapping[str, Curves], xlabel: str, ylabel: str, cols: int = 4, logx: bool = False):
    """One panel per title; in each, one line per label: the mean over seeds with its 95% band.

    Args:
        panels: ``{title: {label: (xs, [per-seed ys])}}``; ys as fractions, drawn in %.
    Returns:
        The matplotlib figure (save it with :func:`save_figures`).
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


def length_curves_figure(panels: Mapping[str, Curves], train_length: int | Mapping[str, int], *, xlabel: str,
                         ylabel: str, title: str, classes: Mapping[str, int] | None = None,
                         dashed: Mapping[str, Collection[str]] | None = None, dashed_label: str = "", cols: int = 5):
    """Accuracy against length (:func:`curves_figure`'s panels) with the training lengths ``1..train_length`` (a
    mapping: per panel) shaded: a color per label over every panel (``tab20`` past 10 labels; fainter bands past 6),
    the labels in ``dashed[panel]`` dashed (explained by ``dashed_label``), and chance, ``1 / classes[panel]``,
    dotted."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig = curves_figure(panels, xlabel, ylabel, cols=cols)
    colors = label_colors(k for lines in panels.values() for k in lines)  # curves_figure's colors repeat after 10
    for ax, (name, lines) in zip(fig.axes, panels.items()):
        bands = iter(ax.collections)  # one per line with several seeds, in the lines' order
        for line, (k, (_, ys)) in zip(list(ax.lines), lines.items()):
            line.set(color=colors[k], linestyle="--" if k in (dashed or {}).get(name, ()) else "-")
            if len(ys) > 1:
                next(bands).set(color=colors[k], alpha=0.2 if len(colors) <= 6 else 0.06)
        n = train_length[name] if isinstance(train_length, Mapping) else train_length
        ax.axvspan(0.5, n + 0.5, color="0.85", zorder=0)
        if classes:
            ax.axhline(100 / classes[name], color="0.4", linestyle=":", linewidth=1)
    fig.legends[0].remove()
    fig.tight_layout()
    fig.legend(handles=[*(Line2D([], [], color=c, label=k) for k, c in colors.items()),
                        Patch(color="0.85", label="training lengths" if isinstance(train_length, Mapping)
                              else f"training lengths 1..{train_length}"),
                        *([Line2D([], [], color="0.4", linestyle=":", label="chance (1 / output classes)")]
                          if classes else []),
                        *([Line2D([], [], color="0.2", linestyle="--", label=dashed_label)] if dashed_label else [])],
               loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title, y=1.02)
    return fig


def map_rows_figure(rows: Sequence[Sequence[tuple[str, Any]]]):
    """Attention maps in rows of panels, one ``(title, [T, S] weights)`` each (a row per run, say); None
    without any."""
    import matplotlib.pyplot as plt

    if not rows:
        return None
    cols = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(3.5 * cols, 3.2 * len(rows)), squeeze=False)
    for ax_row, row in zip(axes, rows):
        for ax, (title, weights) in zip(ax_row, row):
            ax.imshow(np.asarray(weights), cmap="viridis", vmin=0.0)
            ax.set_title(title, fontsize=7)
            ax.set_xlabel("key position", fontsize=7)
            ax.set_ylabel("query position", fontsize=7)
    fig.tight_layout()
    return fig


def save_figures(workdir: str, figures: Mapping[str, Any]) -> list[str]:
    """Saves every figure that is not None as ``workdir/<name>`` (110 dpi; a tight box keeps legends placed
    below the axes); returns the names saved, in order."""
    written = [name for name, fig in figures.items() if fig is not None]
    for name in written:
        save_and_close(os.path.join(workdir, name), figures[name], dpi=110, bbox_inches="tight")
    return written
