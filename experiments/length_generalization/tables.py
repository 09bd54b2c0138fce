"""The numbers and tables of the length-generalization report: pure functions of the ok runs and the config.

Runs are grouped by ``(task, model, variant)`` into an :class:`~attnjax.sweep.fitting.Entry` at the setting (recipe
and learning rate) with the best mean **in-distribution validation** accuracy (ties: the smaller lr; test lengths
never choose it). Aggregates over tasks average each seed's scores over the tasks every seed has, then take the 95%
t-interval over seeds.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from attnjax import stats
from attnjax.data import TASKS
from attnjax.data.tasks import ALL_TASKS, TIERS
from attnjax.sweep import fitting
from attnjax.sweep.fitting import Entry, choose_setting, fit_count_line, fit_text, underfit_flag  # noqa: F401
from attnjax.sweep.published import load_published
from attnjax.sweep.report import PairedEffect, ci_text, markdown_table, paired_effect, pct, per_seed_means, setting

Run = dict[str, Any]
Key = tuple[str, str, str]  # (task, model, variant)

# Delétang et al. (2022), Table 2: best run (10 seeds x 3 lrs; Transformer: best of five encodings), test
# lengths 41..500, accuracy in %.
PUBLISHED = load_published(__file__)
DELETANG = PUBLISHED["deletang2022"]["accuracy"]  # model -> task -> %
DELETANG_NAMES = PUBLISHED["deletang2022"]["names"]
RUOSS_GAIN = PUBLISHED["ruoss2023"]["randomized_gain_points"]
SOLVED = 0.9  # a run "solves" a task when its accuracy is >= 90% at every test length
RECURRENT_ORDER = ("rnn", "lstm", "gru")


def parse_variant(variant: str) -> tuple[str, str, bool] | None:
    """``"dot_product+rope+randomized"`` -> ``("dot_product", "rope", True)``; ``"-"`` -> None."""
    if variant == "-":
        return None
    attention, positional, *rest = variant.split("+")
    return attention, positional, rest == ["randomized"]


def label(model: str, variant: str) -> str:
    """The column name of a model: ``"lstm"`` or ``"transformer dot_product+rope"``."""
    return model if variant == "-" else f"{model} {variant}"


def task_order(tasks) -> list[str]:
    """Tasks grouped by tier (regular first), in registry order within a tier (the decoder study's decimal
    addition too)."""
    return sorted(set(tasks), key=lambda t: (TIERS.index(ALL_TASKS[t].tier), list(ALL_TASKS).index(t)))


def model_rank(model: str) -> tuple[int, str]:
    """Recurrent models first (rnn, lstm, gru), then the others by name."""
    return (RECURRENT_ORDER.index(model), "") if model in RECURRENT_ORDER else (len(RECURRENT_ORDER), model)


def key_order(keys) -> list[tuple[str, str]]:
    """(model, variant) pairs: recurrent models first (rnn, lstm, gru), then others in first-seen order."""
    seen = list(dict.fromkeys((m, v) for _, m, v in keys))
    return sorted(seen, key=lambda mv: (mv[1] != "-", model_rank(mv[0])[0], seen.index(mv)))


def entries(runs: Sequence[Run], min_train_accuracy: float) -> dict[Key, Entry]:
    """Every (task, model, variant) of ``runs`` as an :class:`~attnjax.sweep.fitting.Entry`."""
    return fitting.entries(runs, lambda r: (r["task"], r["model"], r["variant"]), min_train_accuracy)


def worst_length(run: Run, train_max_length: int) -> float:
    """The run's lowest accuracy over the test lengths (beyond ``train_max_length``)."""
    return min(a for k, a in run["accuracy_per_length"].items() if int(k) > train_max_length)


def best_standard_transformer(es: Mapping[Key, Entry], task: str) -> tuple[str, Entry] | None:
    """The paper's Transformer statistic: the best run over the standard (not randomized) encodings of
    dot-product attention (any attention when no dot-product run exists); ``(variant, entry)``."""
    standard = {v: e for (t, m, v), e in es.items() if (t, m) == (task, "transformer") and not parse_variant(v)[2]}
    pool = {v: e for v, e in standard.items() if parse_variant(v)[0] == "dot_product"} or standard
    return max(pool.items(), key=lambda ve: ve[1].best) if pool else None


def table1(es: Mapping[Key, Entry], ceilings: Mapping[str, tuple[float, float]]) -> str:
    """Task × model OOD table, rows grouped by tier, the paper's columns beside ours; ``ceilings``: task ->
    (in-distribution, OOD) position-blind ceiling, shown as ``OOD · in-dist`` in its own column."""
    columns, models = key_order(es), {m for _, m, _ in es}
    several = len({v for _, m, v in es if m == "transformer" and not parse_variant(v)[2]}) > 1
    published = [m for m in DELETANG if m in models]
    header = ["tier", "task", *(label(m, v) for m, v in columns),
              *(["transformer: best standard encoding"] if several else []),
              *(["position-blind ceiling"] if ceilings else []), *(f"Delétang {DELETANG_NAMES[m]}" for m in published)]
    rows, previous_tier = [], None
    for task in task_order(t for t, _, _ in es):
        tier = TASKS[task].tier
        row, previous_tier = [tier if tier != previous_tier else "", task], tier
        row += [es[(task, m, v)].text() if (task, m, v) in es else "–" for m, v in columns]
        if several:
            best = best_standard_transformer(es, task)
            row.append(f"{pct(best[1].best)} ({parse_variant(best[0])[1]})" if best else "–")
        if ceilings:
            row.append(f"{pct(ceilings[task][1])} · {pct(ceilings[task][0])}" if task in ceilings else "–")
        rows.append(row + [pct(DELETANG[m][task] / 100) if task in DELETANG[m] else "–" for m in published])
    return markdown_table(header, rows)


def randomization_effects(es: Mapping[Key, Entry]) -> list[PairedEffect]:
    """Randomized (treatment) vs standard (control) OOD, grouped by task: one :class:`PairedEffect` per (model,
    attention, encoding) having both versions, then one over all of them. Pairs: same task, seed, model, attention
    and encoding; each version at its own in-distribution lr."""
    pairs: dict[tuple[str, str, str], dict[tuple[str, str], dict[Any, tuple[float, float]]]] = {}
    for (task, model, variant), rand in es.items():
        std = es.get((task, model, variant.removesuffix("+randomized")))
        if not variant.endswith("+randomized") or std is None:
            continue
        std_by_seed = dict(zip(std.seeds, std.ood))
        if both := {s: (std_by_seed[s], o) for s, o in zip(rand.seeds, rand.ood) if s in std_by_seed}:
            pairs.setdefault((model, *parse_variant(variant)[:2]), {})[(task, model)] = both
    several = len({(m, a) for m, a, _ in pairs}) > 1
    effects = [paired_effect(f"{m} {a}+{p}" if several else p, cells) for (m, a, p), cells in pairs.items()]
    everything = {(t, f"{m} {a}+{p}"): v for (m, a, p), cells in pairs.items() for (t, _), v in cells.items()}
    if len(pairs) > 1:
        effects.append(paired_effect("all variants" if several else "all encodings", everything))
    return [e for e in effects if e is not None]


def table2(effects: Sequence[PairedEffect]) -> str:
    """One row per effect (the last, over everything, in bold): per task standard → randomized."""
    tasks = task_order(t for e in effects for t in e.by_group)
    rows = [[f"**{e.name}**" if e is effects[-1] else e.name,
             *[f"{pct(e.by_group[t][0])} → {pct(e.by_group[t][1])}" if t in e.by_group else "–" for t in tasks],
             pct(e.control), pct(e.treatment), ci_text(*e.diff, sign=True), str(len(e.seeds)),
             f"+{RUOSS_GAIN:.1f} (15 tasks)" if e is effects[-1] else "–"] for e in effects]
    return markdown_table(["encoding", *tasks, "standard", "randomized", "Δ randomized − standard [95% CI]", "seeds",
                           "Ruoss et al. Δ"], rows)


def table3(es: Mapping[Key, Entry], min_train_accuracy: float) -> str | None:
    """Attention (similarity) × encoding: ``OOD mean [CI] · in-dist mean`` and the under-fit flag over the tasks
    every cell has, the CI over seeds of the task average; None unless at least two attentions were run."""
    cells: dict[tuple[str, str], dict[str, dict[Any, tuple[float, float]]]] = {}
    for (task, model, variant), e in es.items():
        if (parsed := parse_variant(variant)) is not None:
            encoding = parsed[1] + ("+randomized" if parsed[2] else "")
            cells.setdefault((parsed[0], encoding), {})[f"{model}/{task}"] = dict(zip(e.seeds, zip(e.ood, e.in_dist)))
    attentions, encodings = list(dict.fromkeys(a for a, _ in cells)), list(dict.fromkeys(p for _, p in cells))
    if len(attentions) < 2:
        return None
    common = set.intersection(*(set(units) for units in cells.values()))

    def text(a: str, p: str) -> str:
        by_unit = {u: cells[(a, p)][u] for u in common} if (a, p) in cells else {}
        seeds, means = per_seed_means(by_unit)  # [n_seeds, (ood, in-dist)]
        if not seeds:
            return "–"
        fits = [fit for by_seed in by_unit.values() for s, (_, fit) in by_seed.items() if s in seeds]
        flag = underfit_flag(sum(fit < min_train_accuracy for fit in fits), len(fits))
        return f"{ci_text(*stats.mean_ci(means[:, 0]))} · {pct(float(np.mean(means[:, 1])))}{flag}"

    tasks = sorted({u.split("/", 1)[1] for u in common})
    return (markdown_table(["attention", *encodings], [[a, *(text(a, p) for p in encodings)] for a in attentions])
            + f"\n\nTasks in every cell ({len(tasks)}): {', '.join(tasks) or 'none'}.")


def fit_table(es: Mapping[Key, Entry]) -> str:
    """Task × model: runs that reached the fit threshold, the median steps to fit, and why the others stopped."""
    columns = key_order(es)
    rows = [[task, *(fit_text(es[(task, m, v)].runs) if (task, m, v) in es else "–" for m, v in columns)]
            for task in task_order(t for t, _, _ in es)]
    return markdown_table(["task", *(label(m, v) for m, v in columns)], rows)


def fit_counts(es: Mapping[Key, Entry], min_train_accuracy: float) -> list[str]:
    """Per model family: runs below ``min_train_accuracy`` in distribution, and the runs of each fit label."""
    return [fit_count_line(model, [r for (_, m, _), e in es.items() if m == model for r in e.runs], min_train_accuracy)
            for model in sorted({m for _, m, _ in es}, key=model_rank)]


def pilot_table(runs: Sequence[Run]) -> tuple[str, dict[str, str]]:
    """The recipe pilot per (model, setting) over the tasks (:func:`attnjax.sweep.fitting.pilot_table`)."""
    return fitting.pilot_table(runs, setting, lambda r: r["task"], task_order(r["task"] for r in runs), model_rank)


def fit_check_table(runs: Sequence[Run]) -> str | None:
    """Stopping at fit vs the budget per (task, model) (:func:`attnjax.sweep.fitting.fit_check_table`)."""
    return fitting.fit_check_table(runs, lambda r: (r["task"], label(r["model"], r["variant"])), ("task", "model"))
