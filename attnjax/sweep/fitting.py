"""Train to fit as a study protocol: run a cell until it fits (:class:`attnjax.train.TrainToFit`), record how it
stopped, choose each group's setting on validation (:class:`Entry`), and write that in a report.

A cell that trains to fit records, beside its scores:

* ``steps_trained``, ``stop_reason`` (``"fit"``, ``"flat"`` or ``"budget"``), ``steps_to_fit`` (or None);
* ``val_curve``: ``[[step, validation accuracy], ...]``, the learning curve on held-out in-distribution data;
* ``at_fit`` (only when the config asks to train on past the fit): the scores at the step it first fit.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from attnjax import stats
from attnjax.sweep.plots import label_colors
from attnjax.sweep.report import ci_text, markdown_table, pct, per_seed_means, setting
from attnjax.train import TrainState, TrainToFit, evaluate_lengths

Run = Mapping[str, Any]
# fit(state, num_steps, stop, fit_options) -> (state, history): a study's call of attnjax.train.fit.
TrainFn = Callable[[TrainState, int, Callable, dict[str, Any]], tuple[TrainState, list[dict]]]

FIT_LABELS = {"fit": "fit", "flat": "does not fit at this size", "budget": "under-trained"}


def train_to_fit(train: TrainFn, state: TrainState, num_steps: int, rule: TrainToFit, options: dict[str, Any],
                 score: Callable[[TrainState], dict[str, Any]]
                 ) -> tuple[TrainState, list[dict], dict[str, Any] | None]:
    """Trains until ``rule`` stops the run. With ``rule.stop_at_fit=False``, a run that fits is scored there
    (``score(state)``, returned with its ``step``) and then trains on to the budget, without stopping: the same
    run at two points, so the two scores pair exactly.

    Returns:
        ``(state, history, at_fit)``; ``at_fit`` is None unless the run fit and trained on.
    """
    state, history = train(state, num_steps, dataclasses.replace(rule, stop_at_fit=True), options)
    if history[-1]["stop"] != "fit" or rule.stop_at_fit:
        return state, history, None
    at_fit = {"step": history[-1]["step"], **score(state)}
    if "checkpoint_dir" in options:  # the first part's checkpoints end stopped: the rest gets its own directory
        options = {**options, "checkpoint_dir": os.path.join(options["checkpoint_dir"], "continued")}
    state, more = train(state, num_steps - history[-1]["step"], lambda _: None, options)
    return state, history + more, at_fit


def fit_metrics(history: Sequence[Mapping[str, Any]], rule: TrainToFit) -> dict[str, Any]:
    """What a cell records about its training (see the module docstring), from ``fit``'s history."""
    return {"steps_trained": int(history[-1]["step"]), "stop_reason": history[-1]["stop"],
            "steps_to_fit": rule.steps_to_fit(history),
            "val_curve": [[r["step"], round(r[rule.metric], 4)] for r in history]}


def length_scores(state: TrainState, batches: Callable[[int], Any], n: int, m: int, *, mesh: Any = None,
                  rng: Any = None, in_full: bool = True) -> dict[str, Any]:
    """Per-token accuracy at every length 1..m (``batches(length)``, :func:`attnjax.train.evaluate_lengths`):
    ``train_accuracy``, the mean over the training lengths 1..n; ``ood_score``, over n+1..m; with ``in_full``,
    ``accuracy_per_length``."""
    acc = {k: v["accuracy"] for k, v in evaluate_lengths(state, batches, range(1, m + 1), mesh=mesh, rng=rng).items()}
    return {"train_accuracy": float(np.mean([acc[k] for k in range(1, n + 1)])),
            "ood_score": float(np.mean([acc[k] for k in range(n + 1, m + 1)])),
            **({"accuracy_per_length": {str(k): a for k, a in acc.items()}} if in_full else {})}


def length_validation(batches: Mapping[int, Any], *, mesh: Any = None, rng: Any = None
                      ) -> Callable[[TrainState], dict[str, float]]:
    """Train-to-fit's validation (``fit(validate=...)``) on held-out examples drawn once, ``batches[length]`` at
    the training lengths: ``accuracy``, the mean over lengths (as ``train_accuracy`` is). Never test lengths."""
    def validate(state: TrainState) -> dict[str, float]:
        per_length = evaluate_lengths(state, batches.__getitem__, batches, mesh=mesh, rng=rng)
        return {"accuracy": float(np.mean([v["accuracy"] for v in per_length.values()]))}
    return validate


def stopping_text(config: Mapping[str, Any]) -> str:
    """How a study's cells stop, for its summary: ``config.stopping`` (with ``validate_every``, the steps between
    validations) when it stops at fit, else ``config.num_steps``."""
    stop, budget = config.get("stopping"), f"{config['num_steps']:,} steps"
    if not (stop and stop["stop_at_fit"]):
        return budget
    return (f"train to fit (validation accuracy ≥ {pct(stop['threshold'])}% at {stop['consecutive']} checks in a "
            f"row, every {config['validate_every']:,} steps; or flat: < {pct(stop['min_gain'])} points of gain over "
            f"{stop['flat_steps']:,} steps), at most {budget}")


def val_accuracy(run: Run) -> float:
    """The in-distribution validation accuracy a run stopped at (runs without train-to-fit: ``train_accuracy``)."""
    return run["val_curve"][-1][1] if run.get("val_curve") else run["train_accuracy"]


def choose_setting(runs: Sequence[Run]) -> str:
    """The :func:`~attnjax.sweep.report.setting` of ``runs`` with the best mean :func:`val_accuracy`; ties: the
    smaller lr."""
    by_setting: dict[str, list[float]] = {}
    for r in runs:
        by_setting.setdefault(setting(r), []).append(val_accuracy(r))
    order = sorted(by_setting, key=lambda s: (float(s.rpartition("@")[2]), s))
    return max(order, key=lambda s: float(np.mean(by_setting[s])))


@dataclasses.dataclass(frozen=True)
class Entry:
    """One group's runs at its chosen setting (:func:`choose_setting`), in seed order; ``best``: the best OOD
    score over every seed and setting (a paper's statistic); ``underfit``: chosen runs below the floor in
    distribution."""

    setting: str
    num_settings: int
    runs: tuple[Run, ...]
    best: float
    underfit: int

    ood = property(lambda self: [r["ood_score"] for r in self.runs])
    in_dist = property(lambda self: [r["train_accuracy"] for r in self.runs])
    seeds = property(lambda self: [r["seed"] for r in self.runs])
    ci = property(lambda self: stats.mean_ci(self.ood))

    def text(self) -> str:
        """``OOD mean [lo, hi] (best) · in-dist mean``, ``@setting`` when several were swept, the under-fit flag."""
        chosen = f" @{self.setting}" if self.num_settings > 1 else ""
        return (f"{ci_text(*self.ci)} ({pct(self.best)}) · {pct(float(np.mean(self.in_dist)))}{chosen}"
                f"{underfit_flag(self.underfit, len(self.runs))}")


def underfit_flag(k: int, n: int) -> str:
    """`` ⚠k/n under-fit`` when ``k`` of ``n`` runs under-fit, else empty."""
    return f" ⚠{k}/{n} under-fit" if k else ""


def entries(runs: Sequence[Run], key: Callable[[Run], Any], min_train_accuracy: float) -> dict[Any, Entry]:
    """Every group ``key(run)`` of ``runs`` as an :class:`Entry`; ``min_train_accuracy``: the in-distribution
    floor below which a chosen run counts as under-fit."""
    groups: dict[Any, list[Run]] = {}
    for r in runs:
        groups.setdefault(key(r), []).append(r)
    out = {}
    for k, group in groups.items():
        chosen_setting = choose_setting(group)
        chosen = tuple(sorted((r for r in group if setting(r) == chosen_setting), key=lambda r: r["seed"]))
        out[k] = Entry(chosen_setting, len({setting(r) for r in group}), chosen, max(r["ood_score"] for r in group),
                       sum(r["train_accuracy"] < min_train_accuracy for r in chosen))
    return out


def fit_label(run: Run) -> str:
    """``fit`` (reached the fit threshold), ``does not fit at this size`` (stopped flat below it) or
    ``under-trained`` (stopped by the budget while still rising)."""
    return "fit" if run.get("steps_to_fit") is not None else FIT_LABELS[run["stop_reason"]]


def fit_text(runs: Sequence[Run]) -> str:
    """``k/n fit``, the median steps to fit, and the other runs' labels: ``2/3 fit @1,250 · 1 under-trained``."""
    fitted = [r["steps_to_fit"] for r in runs if fit_label(r) == "fit"]
    text = f"{len(fitted)}/{len(runs)} fit" + (f" @{int(np.median(fitted)):,}" if fitted else "")
    others = [fit_label(r) for r in runs if fit_label(r) != "fit"]
    return text + "".join(f" · {others.count(k)} {k}" for k in dict.fromkeys(others))


def fit_count_line(name: str, runs: Sequence[Run], min_train_accuracy: float) -> str:
    """``- name: k of n runs (p%) below X% in distribution; a fit, b under-trained, ...``."""
    below, labels = sum(r["train_accuracy"] < min_train_accuracy for r in runs), [fit_label(r) for r in runs]
    return (f"- {name}: {below} of {len(runs)} runs ({pct(below / len(runs))}%) below {pct(min_train_accuracy)}% in "
            f"distribution; " + ", ".join(f"{labels.count(k)} {k}" for k in FIT_LABELS.values() if k in labels))


def pilot_table(runs: Sequence[Run], setting: Callable[[Run], str], column: Callable[[Run], str],
                columns: Sequence[str], model_rank: Callable[[str], Any] = str) -> tuple[str, dict[str, str]]:
    """A recipe pilot: one row per (model, ``setting(run)``) with the validation accuracy per ``column(run)``
    (in the order ``columns``), its mean, the runs that fit and the mean steps trained. Per model the chosen
    setting (best mean validation accuracy, ties to fewer steps) is in bold. Returns the table and
    ``{model: chosen setting}``."""
    groups: dict[tuple[str, str], dict[str, Run]] = {}
    for r in runs:
        groups.setdefault((r["model"], setting(r)), {})[column(r)] = r
    score = {k: (float(np.mean([val_accuracy(r) for r in g.values()])),
                 -float(np.mean([r["steps_trained"] for r in g.values()]))) for k, g in groups.items()}
    best: dict[str, str] = {}
    for model, s in sorted(groups, key=lambda k: score[k], reverse=True):
        best.setdefault(model, s)
    chosen = {model: best[model] for model in sorted(best, key=model_rank)}
    rows = []
    for model, s in sorted(groups, key=lambda k: (model_rank(k[0]), k[1])):
        g, bold = groups[(model, s)], "**" if chosen[model] == s else ""
        rows.append([f"{bold}{model}{bold}", f"{bold}{s}{bold}", *(pct(val_accuracy(g[c])) if c in g else "–"
                                                               for c in columns),
                     f"{bold}{pct(score[(model, s)][0])}{bold}", f"{sum(fit_label(r) == 'fit' for r in g.values())}/{len(g)}",
                     f"{-score[(model, s)][1]:,.0f}"])
    return markdown_table(["model", "recipe@lr", *columns, "mean", "fit", "mean steps"], rows), chosen


def fit_check_table(runs: Sequence[Run], unit: Callable[[Run], tuple[str, ...]], unit_names: Sequence[str]
                    ) -> str | None:
    """Stopping at fit vs training on to the budget, for the runs that fit and trained on (``at_fit``): per
    ``unit(run)`` the OOD score at both points and the paired difference (budget − fit) with its 95% CI over
    seeds; the last row averages each seed over the units every seed has. None without such runs."""
    pairs: dict[tuple[str, ...], dict[Any, tuple[float, float]]] = {}
    for r in runs:
        if r.get("at_fit"):
            pairs.setdefault(unit(r), {})[r["seed"]] = (r["at_fit"]["ood_score"], r["ood_score"])
    if not pairs:
        return None

    def row(name: Sequence[str], by_unit: Mapping[Any, Mapping[Any, tuple[float, float]]]) -> list[str]:
        seeds, means = per_seed_means(by_unit)  # [n_seeds, (at fit, at budget)]
        return [*name, pct(float(means[:, 0].mean())), pct(float(means[:, 1].mean())),
                ci_text(*stats.mean_ci(means[:, 1] - means[:, 0]), sign=True), str(len(seeds))]

    rows = [row(name, {name: by_seed}) for name, by_seed in sorted(pairs.items())]
    rows.append(row(("**all**", f"{len(pairs)} units", *[""] * (len(unit_names) - 2)), pairs))
    return markdown_table([*unit_names, "OOD at fit", "OOD at budget", "Δ budget − fit [95% CI]", "seeds"], rows)


def unfit_curves_figure(runs: Sequence[Run], panel: Callable[[Run], str], line: Callable[[Run], str],
                        threshold: float, panel_order: Sequence[str] | None = None):
    """Validation curves of the runs that never reached the fit threshold, one panel per ``panel(run)``, one
    color per ``line(run)``: solid lines stopped at the budget (under-trained), dashed ones stopped flat (does
    not fit at this size); the threshold dotted. None if every run fit (or none recorded a curve)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    unfit = [r for r in runs if r.get("val_curve") and fit_label(r) != "fit"]
    if not unfit:
        return None
    panels = [p for p in (panel_order or []) if any(panel(r) == p for r in unfit)] or list(
        dict.fromkeys(panel(r) for r in unfit))
    cols = min(5, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    colors = label_colors(line(r) for r in unfit)
    for ax, name in zip(axes.flat, panels):
        for r in (r for r in unfit if panel(r) == name):
            steps, accuracy = zip(*r["val_curve"])
            ax.plot(steps, 100 * np.asarray(accuracy), color=colors[line(r)], linewidth=0.8,
                    linestyle="-" if fit_label(r) == "under-trained" else "--")
        ax.axhline(100 * threshold, color="0.4", linestyle=":", linewidth=1)
        ax.set_ylim(top=max(ax.get_ylim()[1], 100 * threshold + 1))  # the threshold stays in view
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel("validation accuracy (%)", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.legend(handles=[*(Line2D([], [], color=c, label=k) for k, c in colors.items()),
                        Line2D([], [], color="0.2", label="solid: under-trained (budget)"),
                        Line2D([], [], color="0.2", linestyle="--", label="dashed: does not fit (flat)"),
                        Line2D([], [], color="0.4", linestyle=":", label="fit threshold")],
               loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
    fig.suptitle("In-distribution validation accuracy of the runs that did not fit", y=1.02)
    return fig
