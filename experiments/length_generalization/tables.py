"""Numbers and tables of the length-generalization report: pure functions of the ok runs and the config.

A *run* is one ok cell flattened by :func:`experiments.sweep.ok_runs` (task, model, variant, lr, seed and
its metrics). Runs are grouped by *key* ``(task, model, variant)``; each key becomes an :class:`Entry`:

* the learning rate is chosen per key on **in-distribution** accuracy (``train_accuracy``, the mean over
  the training lengths): the lr with the best mean over seeds (ties: the smaller lr). Test lengths never
  choose it. Mean and 95% t-interval over seeds use that lr's runs;
* ``best`` is the paper's statistic: the best OOD score over every seed *and* every lr of the key;
* ``underfit`` counts the chosen-lr runs whose in-distribution accuracy stayed below the config's
  ``min_train_accuracy``: they are flagged in every table, never averaged in silently.

Aggregates over tasks treat tasks as fixed and seeds as the random units: per seed, the scores are
averaged over the tasks (and encodings) that every seed has, then the interval is taken over seeds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from attnjax import stats
from attnjax.data import TASKS
from attnjax.data.tasks import TIERS
from attnjax.sweep.report import ci_text, pct

Run = dict[str, Any]
Key = tuple[str, str, str]  # (task, model, variant)

# Delétang et al. (2022), Table 2: best run (10 seeds x 3 lrs; Transformer: best of five encodings), test
# lengths 41..500, accuracy in %.
DELETANG = {
    "rnn": {"modular_arithmetic": 100.0, "parity_check": 100.0, "stack_manipulation": 56.0,
            "reverse_string": 62.0, "duplicate_string": 50.3, "odds_first": 51.0},
    "transformer": {"modular_arithmetic": 24.2, "parity_check": 52.0, "stack_manipulation": 57.5,
                    "reverse_string": 62.3, "duplicate_string": 52.8, "odds_first": 52.8, "cycle_navigation": 61.9},
    "lstm": {"modular_arithmetic": 100.0, "parity_check": 100.0, "stack_manipulation": 59.1,
             "reverse_string": 60.9, "duplicate_string": 57.6, "odds_first": 55.6},
}
DELETANG_NAMES = {"rnn": "RNN", "transformer": "Transformer", "lstm": "LSTM"}
RUOSS_GAIN = 12.0  # Ruoss et al. (2023): randomized - standard, points of test accuracy, mean over 15 tasks
# The published protocol (Delétang et al. 2022 reference code), to say where ours differs.
PAPER = dict(train_max_length=40, test_max_length=500, num_steps=1_000_000, batch_size=128, num_seeds=10,
             eval_batch_size=512, num_lrs=3, randomized_max_len=2048,
             transformer=dict(num_layers=5, d_model=64, num_heads=8, mlp_dim=256), hidden_size=256)
SOLVED = 0.9  # a run "solves" a task when its accuracy is >= 90% at every test length
RECURRENT_ORDER = ("rnn", "lstm", "gru")


# --------------------------------------------------------------------------- names

def parse_variant(variant: str) -> tuple[str, str, bool] | None:
    """``"dot_product+rope+randomized"`` -> ``("dot_product", "rope", True)``; ``"-"`` -> None."""
    if variant == "-":
        return None
    attention, positional, *rest = variant.split("+")
    return attention, positional, rest == ["randomized"]


def label(model: str, variant: str) -> str:
    """The column name of a model: ``"lstm"`` or ``"transformer dot_product+rope"``."""
    return model if variant == "-" else f"{model} {variant}"


def tier_of(task: str) -> str:
    task_spec = TASKS.get(task)
    return task_spec.tier if task_spec is not None else "other"


def task_order(tasks) -> list[str]:
    """Tasks grouped by tier (regular first), in registry order within a tier; unknown names last."""
    tiers, names = (*TIERS, "other"), list(TASKS)
    return sorted(set(tasks), key=lambda t: (tiers.index(tier_of(t)), names.index(t) if t in names else 0, t))


def key_order(keys) -> list[Key]:
    """(model, variant) pairs: recurrent models first (rnn, lstm, gru), then others in first-seen order."""
    seen = list(dict.fromkeys((m, v) for _, m, v in keys))
    rank = {mv: i for i, mv in enumerate(seen)}
    return sorted(seen, key=lambda mv: (mv[1] != "-", RECURRENT_ORDER.index(mv[0]) if mv[0] in RECURRENT_ORDER
                                        else len(RECURRENT_ORDER), rank[mv]))


# --------------------------------------------------------------------------- entries

@dataclasses.dataclass(frozen=True)
class Entry:
    """One (task, model, variant): its chosen-lr runs (by seed) and the paper's best run over every lr."""

    lr: str
    num_lrs: int
    runs: tuple[Run, ...]
    best_run: Run
    underfit: int

    @property
    def ood(self) -> list[float]:
        return [r["ood_score"] for r in self.runs]

    @property
    def in_dist(self) -> list[float]:
        return [r["train_accuracy"] for r in self.runs]

    @property
    def seeds(self) -> list[Any]:
        return [r["seed"] for r in self.runs]

    @property
    def ci(self) -> tuple[float, float, float]:
        return stats.mean_ci(self.ood)

    @property
    def best(self) -> float:
        return self.best_run["ood_score"]


def choose_lr(runs: Sequence[Run]) -> str:
    """The lr (as written in the cell) with the best mean in-distribution accuracy; ties: the smaller lr."""
    by_lr: dict[str, list[float]] = {}
    for r in runs:
        by_lr.setdefault(str(r["lr"]), []).append(r["train_accuracy"])
    return max(sorted(by_lr, key=float), key=lambda lr: float(np.mean(by_lr[lr])))


def entries(runs: Sequence[Run], min_train_accuracy: float | None) -> dict[Key, Entry]:
    """Every (task, model, variant) of ``runs`` as an :class:`Entry`."""
    groups: dict[Key, list[Run]] = {}
    for r in runs:
        groups.setdefault((r["task"], r["model"], r["variant"]), []).append(r)
    out = {}
    for key, group in groups.items():
        lr = choose_lr(group)
        chosen = tuple(sorted((r for r in group if str(r["lr"]) == lr), key=lambda r: r["seed"]))
        under = 0 if min_train_accuracy is None else sum(r["train_accuracy"] < min_train_accuracy for r in chosen)
        out[key] = Entry(lr, len({str(r["lr"]) for r in group}), chosen,
                         max(group, key=lambda r: r["ood_score"]), under)
    return out


def worst_length(run: Run, train_max_length: int) -> float:
    """The run's lowest accuracy over the test lengths (beyond ``train_max_length``)."""
    return min(a for k, a in run["accuracy_per_length"].items() if int(k) > train_max_length)


def per_seed_means(cells: Mapping[Any, Mapping[Any, Sequence[float]]]) -> tuple[list[Any], np.ndarray]:
    """``{unit: {seed: values}}`` -> (seeds every unit has, ``[n_seeds, len(values)]`` means over units)."""
    common = set.intersection(*(set(by_seed) for by_seed in cells.values())) if cells else set()
    seeds = sorted(common)
    rows = [np.mean([cells[u][s] for u in cells], axis=0) for s in seeds]
    return seeds, np.asarray(rows, dtype=np.float64)


# --------------------------------------------------------------------------- formatting





def entry_text(e: Entry, min_train_accuracy: float | None) -> str:
    """``OOD mean [lo, hi] (best) · in-dist mean``, the chosen lr when several were swept, the under-fit flag."""
    text = f"{ci_text(*e.ci)} ({pct(e.best)}) · {pct(float(np.mean(e.in_dist)))}"
    if e.num_lrs > 1:
        text += f" @{e.lr}"
    if e.underfit:
        text += f" ⚠{e.underfit}/{len(e.runs)} under-fit"
    return text


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


# --------------------------------------------------------------------------- table 1

def best_standard_transformer(es: Mapping[Key, Entry], task: str, model: str = "transformer"
                              ) -> tuple[str, Entry] | None:
    """The paper's Transformer statistic: the best run over the standard (not randomized) encodings of
    dot-product attention (any attention when no dot-product run exists)."""
    standard = {v: e for (t, m, v), e in es.items() if t == task and m == model and v != "-"
                and not parse_variant(v)[2]}
    dot = {v: e for v, e in standard.items() if parse_variant(v)[0] == "dot_product"}
    pool = dot or standard
    return max(pool.items(), key=lambda ve: ve[1].best) if pool else None


def table1(es: Mapping[Key, Entry], min_train_accuracy: float | None,
           ceilings: Mapping[str, tuple[float, float]] | None = None) -> str:
    """Task × model OOD table, rows grouped by tier, the paper's columns beside ours.

    ``ceilings``: task -> (in-distribution, OOD) position-blind ceiling (:mod:`attnjax.data.ceilings`), shown
    as ``OOD · in-dist`` in its own column for the tasks it has (None or empty: no column).
    """
    columns = key_order(es)
    models = {m for _, m, _ in es}
    multi = [m for m in dict.fromkeys(m for m, v in columns if v != "-")
             if len({v for (_, mm, v) in es if mm == m and v != "-" and not parse_variant(v)[2]}) > 1]
    published = [m for m in DELETANG if m in models]
    header = ["tier", "task", *(label(m, v) for m, v in columns), *(f"{m}: best standard encoding" for m in multi),
              *(["position-blind ceiling"] if ceilings else []),
              *(f"Delétang {DELETANG_NAMES[m]}" for m in published)]
    rows, previous_tier = [], None
    for task in task_order(t for t, _, _ in es):
        tier = tier_of(task)
        row = [tier if tier != previous_tier else "", task]
        previous_tier = tier
        row += [entry_text(es[(task, m, v)], min_train_accuracy) if (task, m, v) in es else "–" for m, v in columns]
        for m in multi:
            best = best_standard_transformer(es, task, m)
            row.append(f"{pct(best[1].best)} ({parse_variant(best[0])[1]})" if best else "–")
        if ceilings:
            row.append(f"{pct(ceilings[task][1])} · {pct(ceilings[task][0])}" if task in ceilings else "–")
        row += [pct(DELETANG[m][task] / 100) if task in DELETANG[m] else "–" for m in published]
        rows.append(row)
    return markdown(header, rows)


# --------------------------------------------------------------------------- table 2: randomized positions

@dataclasses.dataclass(frozen=True)
class Effect:
    """Randomized − standard OOD over paired (task, seed) runs of one encoding (or of all of them)."""

    name: str
    by_task: dict[str, tuple[float, float]]  # task -> (standard mean, randomized mean) over the common seeds
    seeds: list[Any]
    standard: float
    randomized: float
    diff: tuple[float, float, float]  # paired mean difference and its 95% CI over seeds


def _effect(name: str, cells: Mapping[tuple[str, str], Mapping[Any, tuple[float, float]]]) -> Effect | None:
    seeds, means = per_seed_means(cells)
    if not seeds:
        return None
    by_task = {}
    for task in task_order(t for t, _ in cells):
        task_seeds, task_means = per_seed_means({u: v for u, v in cells.items() if u[0] == task})
        if task_seeds:
            by_task[task] = tuple(task_means.mean(axis=0))
    return Effect(name, by_task, seeds, float(means[:, 0].mean()), float(means[:, 1].mean()),
                  stats.paired_difference_ci(means[:, 1], means[:, 0]))


def randomization_effects(es: Mapping[Key, Entry]) -> list[Effect]:
    """One :class:`Effect` per (model, attention, encoding) having both versions, then one over all of them.

    Pairs: same task, seed, model, attention and encoding; each version at its own in-distribution lr.
    """
    pairs: dict[tuple[str, str, str], dict[tuple[str, str], dict[Any, tuple[float, float]]]] = {}
    for (task, model, variant), rand in es.items():
        parsed = parse_variant(variant)
        if parsed is None or not parsed[2] or (task, model, variant[: -len("+randomized")]) not in es:
            continue
        std = es[(task, model, variant[: -len("+randomized")])]
        std_by_seed = dict(zip(std.seeds, std.ood))
        both = {s: (std_by_seed[s], o) for s, o in zip(rand.seeds, rand.ood) if s in std_by_seed}
        if both:
            pairs.setdefault((model, parsed[0], parsed[1]), {})[(task, model)] = both
    several = len({(m, a) for m, a, _ in pairs}) > 1
    effects = [_effect(f"{m} {a}+{p}" if several else p, cells) for (m, a, p), cells in pairs.items()]
    everything = {(t, f"{m} {a}+{p}"): v for (m, a, p), cells in pairs.items() for (t, _), v in cells.items()}
    effects.append(_effect("all variants" if several else "all encodings", everything) if len(pairs) > 1 else None)
    return [e for e in effects if e is not None]


def table2(effects: Sequence[Effect]) -> str:
    tasks = task_order(t for e in effects for t in e.by_task)
    header = ["encoding", *tasks, "standard", "randomized", "Δ randomized − standard [95% CI]", "seeds",
              "Ruoss et al. Δ"]
    rows = []
    for i, e in enumerate(effects):
        cells = [f"{pct(e.by_task[t][0])} → {pct(e.by_task[t][1])}" if t in e.by_task else "–" for t in tasks]
        overall = i == len(effects) - 1
        rows.append([f"**{e.name}**" if overall else e.name, *cells, pct(e.standard), pct(e.randomized),
                     ci_text(*e.diff, sign=True), str(len(e.seeds)),
                     f"+{RUOSS_GAIN:.1f} (15 tasks)" if overall else "–"])
    return markdown(header, rows)


# --------------------------------------------------------------------------- table 3: similarity

def table3(es: Mapping[Key, Entry], min_train_accuracy: float | None) -> str | None:
    """Attention (similarity) × encoding: ``OOD mean [CI] · in-dist mean`` over the tasks every cell has,
    the CI over seeds of the task average, and a ``⚠k/n under-fit`` flag counting the runs below
    ``min_train_accuracy`` in distribution.

    None unless at least two attentions were run.
    """
    cells: dict[tuple[str, str], dict[str, dict[Any, tuple[float, float]]]] = {}
    for (task, model, variant), e in es.items():
        parsed = parse_variant(variant)
        if parsed is not None:
            encoding = parsed[1] + ("+randomized" if parsed[2] else "")
            cells.setdefault((parsed[0], encoding), {})[f"{model}/{task}"] = dict(zip(e.seeds, zip(e.ood, e.in_dist)))
    attentions = list(dict.fromkeys(a for a, _ in cells))
    if len(attentions) < 2:
        return None
    encodings = list(dict.fromkeys(p for _, p in cells))
    common = set.intersection(*(set(units) for units in cells.values()))
    rows = []
    for a in attentions:
        row = [a]
        for p in encodings:
            by_unit = {u: cells[(a, p)][u] for u in common} if (a, p) in cells else {}
            seeds, means = per_seed_means(by_unit)  # [n_seeds, (ood, in-dist)]
            if not seeds:
                row.append("–")
                continue
            text = f"{ci_text(*stats.mean_ci(means[:, 0]))} · {pct(float(np.mean(means[:, 1])))}"
            runs = [fit for by_seed in by_unit.values() for s, (_, fit) in by_seed.items() if s in seeds]
            under = 0 if min_train_accuracy is None else sum(fit < min_train_accuracy for fit in runs)
            row.append(text + (f" ⚠{under}/{len(runs)} under-fit" if under else ""))
        rows.append(row)
    tasks = sorted({u.split("/", 1)[1] for u in common})
    note = f"\n\nTasks in every cell ({len(tasks)}): {', '.join(tasks) or 'none'}."
    return markdown(["attention", *encodings], rows) + note
