"""The seq2seq-attention report from results.json alone: accuracy against source length with and without attention
(mean over seeds [95% t-interval], in %), ours vs Bahdanau et al. (2014), accuracy curves, cross-attention maps."""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from attnjax.plots import plot_weight_maps
from attnjax.sweep import ok_runs
from attnjax.sweep.report import (compare, compare_direction, comparison_table, curves_figure, load_published,
                                 markdown_table, minutes, pct, run_header, save_figures, seeds_ci_text, summary_tail,
                                 write_summary)

CURVES_FILE = "accuracy_vs_length.png"
LABELS = {("rnn_seq2seq", "none"): "RNNencdec", ("rnn_seq2seq", "additive"): "RNNsearch",
          ("rnn_seq2seq", "multiplicative"): "RNN+Luong", ("transformer_seq2seq", "-"): "Transformer"}
ORDER, BASELINE = tuple(LABELS.values()), "RNNencdec"
GREEDY, IN, OOD = "greedy_token_accuracy", "in_greedy_token_accuracy", "ood_greedy_token_accuracy"
METRICS = [("token_accuracy", "TF token"), (GREEDY, "greedy token"), ("greedy_sequence_accuracy", "greedy seq")]
PUBLISHED_BLEU = load_published(__file__)["bahdanau2014"]["bleu"]
# Bahdanau et al.'s Figure 2 goes to 1.2x the -50 models' training length.
NEAR_RATIO, HOLD_TOLERANCE = 1.2, 0.10  # "no deterioration past the training lengths": within 10 points of 0
PROTOCOL = ("synthetic tasks ({tasks}, alphabet {alphabet_size}) of lengths 1..{train_max_length}, not WMT'14 En-Fr "
            "sentences up to 50 words; greedy accuracy per length, not BLEU of beam search",
            "Adam (clip {max_grad_norm}), {num_steps:,} steps of batch {batch_size}, not Adadelta for about 5 days at "
            "batch 80; GRU {rnn_seq2seq[hidden_size]}, embeddings {rnn_seq2seq[embed_dim]}, attention "
            "{rnn_seq2seq[attention_dim]} (paper: 1000, 620, 1000); tanh read-out, not maxout",
            "the RNN+Luong and Transformer (absolute positions: OOD mixes in position extrapolation) models are ours")
Key = tuple[str, str, str]  # (task, model label, lr)


def group(runs: Sequence[dict]) -> dict[Key, dict[int, dict]]:
    """``{(task, label, lr): {seed: run}}``."""
    out: dict[Key, dict[int, dict]] = {}
    for r in runs:
        name = LABELS.get((r["model"], r["variant"]), f"{r['model']}+{r['variant']}")
        out.setdefault((r["task"], name, str(r["lr"])), {})[int(r["seed"])] = r
    return out


def _order(keys) -> list[Key]:
    return sorted(set(keys), key=lambda k: (k[0], ORDER.index(k[1]) if k[1] in ORDER else 99, k[1], float(k[2])))


def _row_name(g: Mapping[Key, Any], key: Key) -> str:
    return f"{key[1]} lr={key[2]}" if len({k[2] for k in g if k[:2] == key[:2]}) > 1 else key[1]


def values(seeds: Mapping[int, dict], metric: str, band: tuple[int, int] | None = None) -> list[float]:
    """Per seed: ``metric``, or the mean of its per-length values over the lengths ``band = (lo, hi)``."""
    if band is None:
        return [seeds[s][metric] for s in sorted(seeds) if seeds[s].get(metric) is not None]
    per = [[seeds[s]["per_length"][str(n)][metric] for n in range(band[0], band[1] + 1)
            if str(n) in seeds[s]["per_length"]] for s in sorted(seeds)]
    return [float(np.mean(p)) for p in per if p]


def paired(g, a: Key, b: Key, metric: str, band: tuple[int, int] | None = None) -> list[float]:
    """Per seed both have: ``a``'s ``metric`` (or its mean over the lengths ``band``) minus ``b``'s."""
    seeds = sorted(set(g[a]) & set(g[b]))
    x, y = (values({s: g[k][s] for s in seeds}, metric, band) for k in (a, b))
    return list(np.subtract(x, y)) if len(x) == len(y) else []


def baseline_key(g: Mapping[Key, Any], key: Key) -> Key | None:
    """The RNNencdec entry a model is paired with: the same task and lr, else the task's only RNNencdec lr."""
    lrs = [k for k in g if k[0] == key[0] and k[1] == BASELINE]
    return (key[0], BASELINE, key[2]) if (key[0], BASELINE, key[2]) in g else lrs[0] if len(lrs) == 1 else None


def underfit(seeds: Mapping[int, dict], floor: float) -> bool:
    return bool(values(seeds, IN)) and float(np.mean(values(seeds, IN))) < floor


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
              *[seeds_ci_text(paired(g, k, b, met), sign=True) for met, _ in greedy]] for k, b in pairs])]
    return out + ["Greedy token accuracy by band of source lengths:", markdown_table(
        ["model", *[f"n={lo}..{hi}" + (" (train)" if hi <= n else "") for lo, hi in bands(n, m)]],
        [[_row_name(g, k), *[seeds_ci_text(values(g[k], GREEDY, b)) for b in bands(n, m)]] for k in keys])]


def pilot_table(g, tasks: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Per family (RNN variants share one lr): mean in-dist greedy token accuracy per lr; the best (ties: smaller)."""
    lrs, rows, chosen = sorted({k[2] for k in g}, key=float), [], {}
    for family, members in (("rnn_seq2seq", ORDER[:3]), ("transformer_seq2seq", ORDER[3:])):
        members = [nm for nm in members if any(k[1] == nm for k in g)]
        per = {lr: [[np.mean(values(g[(t, nm, lr)], IN)) for t in tasks if (t, nm, lr) in g] for nm in members]
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
    caveat, half = "RNNsearch under-fit" if underfit(g[key], floor) else "", max(1, n // 2)
    out = [compare_direction(f"{task}: RNNsearch − RNNencdec, lengths 1..{n}", paired(g, key, base, IN),
                             "ahead: {RNNsearch} vs {RNNencdec} BLEU".format(**PUBLISHED_BLEU), caveat=caveat)]
    if n > half:  # inside the training lengths: does RNNsearch's lead grow with length?
        lead = [paired(g, key, base, GREEDY, band) for band in ((half + 1, n), (1, half))]
        out.append(compare_direction(f"{task}: RNNsearch − RNNencdec at lengths {half + 1}..{n} minus at 1..{half}",
                                     list(np.subtract(*lead)), "RNNencdec falls with length (Fig. 2)", caveat=caveat))
    if m > n:
        near = (n + 1, min(m, max(n + 1, math.ceil(NEAR_RATIO * n))))
        loss = np.subtract(values(g[key], GREEDY, (1, n)), values(g[key], GREEDY, near))
        out += [compare(f"{task}: RNNsearch's loss from 1..{n} to {near[0]}..{near[1]}", list(loss), 0.0,
                        tolerance=HOLD_TOLERANCE, caveat=caveat),
                compare_direction(f"{task}: RNNsearch − RNNencdec, lengths {n + 1}..{m}", paired(g, key, base, OOD),
                                  "RNNsearch-30 ahead to 2x its training length (Fig. 2)", caveat=caveat)]
    return out


def write_figures(results: Mapping[str, Any], runs: Sequence[dict], workdir: str) -> list[str]:
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
            name = LABELS.get((r["model"], r["variant"]), f"{r['model']}+{r['variant']}")
            weights = np.asarray(e["weights"])
            written.append(f"attention_{r['task']}_{name.replace('+', '_')}_n{length}.png")
            plot_weight_maps(weights, os.path.join(workdir, written[-1]), titles=e["titles"], max_cols=4,
                             query_labels=[f"{t}:{p}" for t, p in zip(e["target"], e["prediction"])],
                             key_labels=[str(s) for s in e["source"]],
                             panel_size=(6.4, 5.6) if len(weights) == 1 else (3.2, 3.0),
                             suptitle=f"{name} on {r['task']}, length {length} (seed {r['seed']}): "
                             f"{sum(p == t for p, t in zip(e['prediction'], e['target']))}/"
                             f"{len(e['target'])} greedy tokens right\nrows: target:prediction, columns: source")
    return written


def summary_markdown(results: Mapping[str, Any], figures: Sequence[str] = ()) -> str:
    config, runs = results["config"], ok_runs(results)
    out = ["# Attention vs no attention in seq2seq (Bahdanau et al. 2014): accuracy vs source length", ""]
    if not runs:
        return "\n".join(out + ["No finished cells."] + summary_tail(results, figures)) + "\n"
    n, m, floor = config["train_max_length"], config["test_max_length"], config.get("min_train_accuracy", 0.9)
    split, tasks, g = runs[0].get("eval_split", "test"), list(dict.fromkeys(r["task"] for r in runs)), group(runs)
    out += [f"{run_header(results, runs)}, {minutes(results):.1f} min in all; {split} examples at every length. "
            f"*in-dist*: lengths 1..{n} (trained on); *OOD*: {n + 1}..{m}; *TF*: teacher-forced; *greedy*: decoded "
            f"from its own tokens; *seq*: all right; *fit*: in-dist greedy token ≥ {100 * floor:.0f}%."]
    for i, task in enumerate(tasks, 1):
        out += ["", f"## Table {i}: {task}"] + [x for t in task_tables(g, task, n, m, floor) for x in ("", t)]
    if split == "validation":
        table, chosen = pilot_table(g, tasks)
        out += ["", "## Learning-rate pilot (validation, in-distribution lengths)", "", table, "",
                "Chosen: " + ", ".join(f"{k} {v}" for k, v in chosen.items()) + "."]
    if rows := [c for task in tasks for c in comparisons(g, task, n, m, floor)]:
        out += ["", "## Ours vs published", "", "Bahdanau et al. 2014. A direction *agrees* when our interval excludes"
                f" 0 on its side, a loss when it is within {100 * HOLD_TOLERANCE:.0f} points of 0.", "",
                comparison_table(rows)]
    out += ["", "## Differences from the paper's protocol", "", *[f"- {d.format(**config)}." for d in PROTOCOL]]
    return "\n".join(out + summary_tail(results, figures)) + "\n"


def write_report(results: dict[str, Any], workdir: str) -> str:
    """Writes ``summary.md``, ``accuracy_vs_length.png`` and the attention maps; returns the summary."""
    runs = ok_runs(results)
    return write_summary(workdir, summary_markdown(results, write_figures(results, runs, workdir) if runs else []))
