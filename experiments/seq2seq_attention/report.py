"""The seq2seq-attention report from results.json alone: accuracy against source length with and without attention
(mean over seeds [95% t-interval], in %), ours vs Bahdanau et al. (2014), accuracy curves, cross-attention maps."""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from attnjax.plots import plot_weight_maps
from attnjax.sweep.plots import curves_figure, save_figures
from attnjax.sweep.published import check, comparison_section, load_published, protocol_section
from attnjax.sweep.report import (StudyPage, markdown_table, mean, minutes, paired, pct, run_header, section,
                                 seed_values, seeds_ci_text)

CURVES_FILE = "accuracy_vs_length.png"
LABELS = {("rnn_seq2seq", "none"): "RNNencdec", ("rnn_seq2seq", "additive"): "RNNsearch",
          ("rnn_seq2seq", "multiplicative"): "RNN+Luong", ("transformer_seq2seq", "-"): "Transformer"}
ORDER, BASELINE = tuple(LABELS.values()), "RNNencdec"
GREEDY, IN, OOD = "greedy_token_accuracy", "in_greedy_token_accuracy", "ood_greedy_token_accuracy"
METRICS = [("token_accuracy", "TF token"), (GREEDY, "greedy token"), ("greedy_sequence_accuracy", "greedy seq")]
PUBLISHED = load_published(__file__)["bahdanau2014"]
CLAIMS = PUBLISHED["claims"]
Key = tuple[str, str, str]  # (task, model label, lr)


def group(runs: Sequence[dict]) -> dict[Key, dict[int, dict]]:
    """``{(task, label, lr): {seed: run}}``."""
    out: dict[Key, dict[int, dict]] = {}
    for r in runs:
        out.setdefault((r["task"], _label(r), str(r["lr"])), {})[int(r["seed"])] = r
    return out


def _label(r: Mapping[str, Any]) -> str:
    return LABELS.get((r["model"], r["variant"]), f"{r['model']}+{r['variant']}")


def _order(keys) -> list[Key]:
    return sorted(set(keys), key=lambda k: (k[0], ORDER.index(k[1]) if k[1] in ORDER else 99, k[1], float(k[2])))


def _row_name(g: Mapping[Key, Any], key: Key) -> str:
    return f"{key[1]} lr={key[2]}" if len({k[2] for k in g if k[:2] == key[:2]}) > 1 else key[1]


def values(seeds: Mapping[int, dict], metric: str, band: tuple[int, int] | None = None) -> dict[int, float]:
    """Per seed: ``metric``, or the mean of its per-length values over the lengths ``band = (lo, hi)``."""
    return seed_values(seeds, metric, None if band is None else range(band[0], band[1] + 1))


def diff(g, a: Key, b: Key, metric: str, band: tuple[int, int] | None = None) -> dict[int, float]:
    """Per seed both have: ``a``'s ``metric`` (or its mean over the lengths ``band``) minus ``b``'s."""
    return paired(values(g[a], metric, band), values(g[b], metric, band))


def baseline_key(g: Mapping[Key, Any], key: Key) -> Key | None:
    """The RNNencdec entry a model is paired with: the same task and lr, else the task's only RNNencdec lr."""
    lrs = [k for k in g if k[0] == key[0] and k[1] == BASELINE]
    return (key[0], BASELINE, key[2]) if (key[0], BASELINE, key[2]) in g else lrs[0] if len(lrs) == 1 else None


def underfit(seeds: Mapping[int, dict], floor: float) -> bool:
    return (fit := mean(values(seeds, IN).values())) is not None and fit < floor


def bands(n: int, m: int) -> list[tuple[int, int]]:
    """The two halves of the training lengths 1..N, then N+1..2N and 2N+1..M (those non-empty)."""
    half = max(1, n // 2)
    return [(lo, hi) for lo, hi in ((1, half), (half + 1, n), (n + 1, min(2 * n, m)), (2 * n + 1, m)) if lo <= hi]


def task_tables(g, task: str, n: int, m: int, floor: float) -> list[str]:
    """Accuracies per model; attention minus RNNencdec, paired by seed; greedy token accuracy per length band."""
    keys, spans = _order(k for k in g if k[0] == task), [("in", "in-dist")] + [("ood", "OOD")] * (m > n)
    columns = [(f"{p}_{met}", f"{span} {name}") for p, span in spans for met, name in METRICS]
    rows = [[_row_name(g, k), next(iter(g[k].values())).get("num_params", "–"), k[2],
             *[seeds_ci_text(values(g[k], met)) for met, _ in columns],
             f"⚠ under-fit (<{100 * floor:.0f})" if underfit(g[k], floor) else "ok"] for k in keys]
    out = [markdown_table(["model", "params", "lr", *[name for _, name in columns], "fit"], rows)]
    greedy = [(met, name) for met, name in columns if "greedy" in met]
    pairs = [(k, b) for k in keys if k[1] != BASELINE and (b := baseline_key(g, k))]
    if pairs:
        out += ["Attention minus no attention (paired by seed, points):", markdown_table(
            ["comparison", "seeds", *[f"Δ {name}" for _, name in greedy]],
            [[f"{_row_name(g, k)} − {_row_name(g, b)}", len(set(g[k]) & set(g[b])),
              *[seeds_ci_text(diff(g, k, b, met), sign=True) for met, _ in greedy]] for k, b in pairs])]
    return out + ["Greedy token accuracy by band of source lengths:", markdown_table(
        ["model", *[f"n={lo}..{hi}" + (" (train)" if hi <= n else "") for lo, hi in bands(n, m)]],
        [[_row_name(g, k), *[seeds_ci_text(values(g[k], GREEDY, b)) for b in bands(n, m)]] for k in keys])]


def pilot_table(g, tasks: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Per family (RNN variants share one lr): mean in-dist greedy token accuracy per lr; the best (ties: smaller)."""
    lrs, rows, chosen = sorted({k[2] for k in g}, key=float), [], {}
    for family, members in (("rnn_seq2seq", ORDER[:3]), ("transformer_seq2seq", ORDER[3:])):
        members = [nm for nm in members if any(k[1] == nm for k in g)]
        per = {lr: [[mean(values(g[(t, nm, lr)], IN).values()) for t in tasks if (t, nm, lr) in g] for nm in members]
               for lr in lrs}
        if means := {lr: float(np.mean([np.mean(p) for p in v])) for lr, v in per.items() if v and all(v)}:
            chosen[family] = min((lr for lr, v in means.items() if v >= max(means.values()) - 1e-3), key=float)
            rows.append([family, *[pct(means.get(lr)) for lr in lrs]])
    return markdown_table(["family (mean over models and tasks)", *[f"lr={lr}" for lr in lrs]], rows), chosen


def comparisons(g, task: str, n: int, m: int, floor: float) -> list:
    """Bahdanau et al.'s claims about RNNsearch and RNNencdec against our differences, paired by seed."""
    key = next((k for k in _order(g) if k[0] == task and k[1] == "RNNsearch"), None)
    base = baseline_key(g, key) if key else None
    if base is None or not set(g[key]) & set(g[base]):
        return []
    half = max(1, n // 2)
    fields = dict(task=task, n=n, m=m, half=half, bleu=PUBLISHED["bleu"],
                  caveat="RNNsearch under-fit" if underfit(g[key], floor) else "")
    out = [check(CLAIMS["lead"], list(diff(g, key, base, IN).values()), **fields)]
    if n > half:  # inside the training lengths: does RNNsearch's lead grow with length?
        lead = [diff(g, key, base, GREEDY, band) for band in ((half + 1, n), (1, half))]
        out.append(check(CLAIMS["growth"], list(paired(*lead).values()), upper=half + 1, **fields))
    if m > n:
        near = (n + 1, min(m, max(n + 1, math.ceil(PUBLISHED["near_ratio"] * n))))
        loss = paired(values(g[key], GREEDY, (1, n)), values(g[key], GREEDY, near))
        out += [check(CLAIMS["hold"], list(loss.values()), near=near, **fields),
                check(CLAIMS["ood"], list(diff(g, key, base, OOD).values()), upper=n + 1, **fields)]
    return out


def figures(results: Mapping[str, Any], runs: Sequence[dict], workdir: str) -> list[str]:
    """Greedy accuracy against source length (a panel per metric and task), and one PNG per cross-attention map."""
    n, m, g = results["config"]["train_max_length"], results["config"]["test_max_length"], group(runs)
    xs, panels = list(range(1, m + 1)), {}
    for met, name in METRICS[1:]:
        for k in _order(g):
            ys = [[run["per_length"][str(x)][met] for x in xs] for run in g[k].values()]
            panels.setdefault(f"{k[0]}: {name} (trained on 1..{n})", {})[_row_name(g, k)] = (xs, ys)
    written = save_figures(workdir, {CURVES_FILE: curves_figure(panels, "source length", "accuracy (%)",
                                                                cols=len({k[0] for k in g}))})
    for r in runs:
        for length, e in sorted(r.get("attention_maps", {}).items(), key=lambda kv: int(kv[0])):
            name, weights = _label(r), np.asarray(e["weights"])
            written.append(f"attention_{r['task']}_{name.replace('+', '_')}_n{length}.png")
            plot_weight_maps(weights, os.path.join(workdir, written[-1]), titles=e["titles"], max_cols=4,
                             query_labels=[f"{t}:{p}" for t, p in zip(e["target"], e["prediction"])],
                             key_labels=[str(s) for s in e["source"]],
                             panel_size=(6.4, 5.6) if len(weights) == 1 else (3.2, 3.0),
                             suptitle=f"{name} on {r['task']}, length {length} (seed {r['seed']}): "
                             f"{sum(p == t for p, t in zip(e['prediction'], e['target']))}/"
                             f"{len(e['target'])} greedy tokens right\nrows: target:prediction, columns: source")
    return written


def body(results: Mapping[str, Any], runs: list[dict]) -> list[str]:
    config = results["config"]
    n, m, floor = config["train_max_length"], config["test_max_length"], config.get("min_train_accuracy", 0.9)
    split, tasks, g = runs[0].get("eval_split", "test"), list(dict.fromkeys(r["task"] for r in runs)), group(runs)
    out = [f"{run_header(results, runs)}, {minutes(results):.1f} min in all; {split} examples at every length. "
           f"*in-dist*: lengths 1..{n} (trained on); *OOD*: {n + 1}..{m}; *TF*: teacher-forced; *greedy*: decoded "
           f"from its own tokens; *seq*: all right; *fit*: in-dist greedy token ≥ {100 * floor:.0f}%."]
    for i, task in enumerate(tasks, 1):
        out += section(f"Table {i}: {task}", *task_tables(g, task, n, m, floor))
    if split == "validation":
        table, chosen = pilot_table(g, tasks)
        out += section("Learning-rate pilot (validation, in-distribution lengths)", table,
                       "Chosen: " + ", ".join(f"{k} {v}" for k, v in chosen.items()) + ".")
    if rows := [c for task in tasks for c in comparisons(g, task, n, m, floor)]:
        out += comparison_section(PUBLISHED["section"], rows, points=100 * CLAIMS["hold"]["tolerance"])
    return out + protocol_section(PUBLISHED["protocol"], **config)


PAGE = StudyPage("Attention vs no attention in seq2seq (Bahdanau et al. 2014): accuracy vs source length", body,
                 figures)
summary_markdown, write_report = PAGE.summary_markdown, PAGE.write_report
