"""The seq2seq-attention report: ``summary.md`` and PNG plots, built from results.json alone.

:func:`write_report` is the experiment's ``report`` hook. Tables give the mean over seeds with its 95%
t-interval (``93.1 [92.0, 94.2]``, in %) of in-distribution (lengths 1..N) and OOD (N+1..M) accuracy,
teacher-forced and greedy, token and whole sequence; "attention minus no attention" is the paired (same seed)
difference. The published numbers (Bahdanau et al. 2014, BLEU) sit beside ours, and the "agrees / differs"
paragraph is computed from our numbers.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from attnjax import stats
from attnjax.plots import plot_weight_maps
from attnjax.results import save_and_close, write_text
from attnjax.sweep.report import pct, seeds_ci_text
from attnjax.sweep import ok_runs
from attnjax.sweep.report import summary_tail

SUMMARY_FILE, CURVES_FILE = "summary.md", "accuracy_vs_length.png"
LABELS = {("rnn_seq2seq", "none"): "RNNencdec", ("rnn_seq2seq", "additive"): "RNNsearch",
          ("rnn_seq2seq", "multiplicative"): "RNN+Luong", ("transformer_seq2seq", "-"): "Transformer"}
ORDER = ("RNNencdec", "RNNsearch", "RNN+Luong", "Transformer")
BASELINE = "RNNencdec"
# Bahdanau et al. (2014), Table 1: BLEU on the WMT'14 En-Fr test set, all sentences, models trained on
# sentences of up to 50 words.
PUBLISHED_BLEU = {"RNNencdec": 17.82, "RNNsearch": 26.75}
HOLD_POINTS = 10.0  # OOD within this many points of in-distribution counts as "holds"
# Bahdanau et al.'s Figure 2 tests sentences up to ~60 words with models trained on <= 50: lengths up to 1.2 N
# are the part of our OOD range their claim "RNNsearch-50 holds past its training length" covers (their -30
# models reach 2x, where RNNsearch-30 declines too but stays above RNNencdec-30).
NEAR_RATIO = 1.2

Key = tuple[str, str, str]  # (task, model label, lr)


def label(model: str, variant: str) -> str:
    return LABELS.get((model, variant), model if variant == "-" else f"{model}+{variant}")






def group(runs: Sequence[dict]) -> dict[Key, dict[int, dict]]:
    """``{(task, label, lr): {seed: run}}``."""
    out: dict[Key, dict[int, dict]] = {}
    for r in runs:
        out.setdefault((r["task"], label(r["model"], r["variant"]), str(r["lr"])), {})[int(r["seed"])] = r
    return out


def _order(keys) -> list[Key]:
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(set(keys), key=lambda k: (k[0], rank.get(k[1], 99), k[1], float(k[2])))


def _row_name(g: Mapping[Key, Any], key: Key) -> str:
    several = len({k[2] for k in g if k[:2] == key[:2]}) > 1
    return f"{key[1]} lr={key[2]}" if several else key[1]


def values(seeds: Mapping[int, dict], metric: str) -> list[float]:
    return [seeds[s][metric] for s in sorted(seeds) if seeds[s].get(metric) is not None]


def band_values(seeds: Mapping[int, dict], metric: str, lo: int, hi: int) -> list[float]:
    """Per seed: the mean of ``metric`` over the lengths ``lo..hi`` (those present)."""
    out = []
    for s in sorted(seeds):
        per = seeds[s]["per_length"]
        got = [per[str(n)][metric] for n in range(lo, hi + 1) if str(n) in per]
        if got:
            out.append(float(np.mean(got)))
    return out


def baseline_key(g: Mapping[Key, Any], key: Key) -> Key | None:
    """The RNNencdec entry a model is paired with: the same task and lr, else the task's only RNNencdec lr."""
    same = (key[0], BASELINE, key[2])
    if same in g:
        return same
    lrs = [k for k in g if k[0] == key[0] and k[1] == BASELINE]
    return lrs[0] if len(lrs) == 1 else None


def paired(g: Mapping[Key, Mapping[int, dict]], a: Key, b: Key, metric: str, band: tuple[int, int] | None = None):
    """Paired (same seed) ``a - b`` of ``metric`` (or of its mean over a length band): ``(mean, low, high)``."""
    seeds = sorted(set(g[a]) & set(g[b]))
    if not seeds:
        return None
    pick = (lambda k: [g[k][s][metric] for s in seeds]) if band is None else (
        lambda k: band_values({s: g[k][s] for s in seeds}, metric, *band))
    x, y = pick(a), pick(b)
    if len(x) != len(seeds) or len(y) != len(seeds) or any(v is None for v in x + y):
        return None
    return stats.paired_difference_ci(x, y)


def diff_text(d) -> str:
    if d is None:
        return "–"
    mean, low, high = d
    return pct(mean, True) if not math.isfinite(low) else f"{pct(mean, True)} [{pct(low, True)}, {pct(high, True)}]"


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    align = align or "|" + "---|" * len(header)
    return "\n".join(["| " + " | ".join(header) + " |", align, *("| " + " | ".join(r) + " |" for r in rows)])


def underfit(seeds: Mapping[int, dict], floor: float) -> bool:
    v = values(seeds, "in_greedy_token_accuracy")
    return bool(v) and float(np.mean(v)) < floor


def table_task(g, task: str, floor: float, has_ood: bool) -> str:
    """One task: params, lr, in-distribution and OOD accuracies [95% CI] per model."""
    header = ["model", "params", "lr", "in-dist TF token", "in-dist greedy token", "in-dist greedy seq"]
    if has_ood:
        header += ["OOD TF token", "OOD greedy token", "OOD greedy seq"]
    header += ["fit"]
    rows = []
    for key in _order(k for k in g if k[0] == task):
        seeds = g[key]
        params = next(iter(seeds.values())).get("num_params", "–")
        row = [_row_name(g, key), str(params), key[2]]
        metrics = ["in_token_accuracy", "in_greedy_token_accuracy", "in_greedy_sequence_accuracy"]
        if has_ood:
            metrics += ["ood_token_accuracy", "ood_greedy_token_accuracy", "ood_greedy_sequence_accuracy"]
        row += [seeds_ci_text(values(seeds, m)) for m in metrics]
        row.append(f"⚠ under-fit (<{100 * floor:.0f})" if underfit(seeds, floor) else "ok")
        rows.append(row)
    return markdown(header, rows)


def table_paired(g, task: str, has_ood: bool) -> str | None:
    """Attention minus RNNencdec, paired by seed, in points."""
    rows = []
    for key in _order(k for k in g if k[0] == task and k[1] != BASELINE):
        base = baseline_key(g, key)
        if base is None:
            continue
        metrics = ["in_greedy_token_accuracy", "in_greedy_sequence_accuracy"]
        if has_ood:
            metrics += ["ood_greedy_token_accuracy", "ood_greedy_sequence_accuracy"]
        rows.append([f"{_row_name(g, key)} − {_row_name(g, base)}", str(len(set(g[key]) & set(g[base])))]
                    + [diff_text(paired(g, key, base, m)) for m in metrics])
    if not rows:
        return None
    header = ["comparison", "seeds", "Δ in-dist greedy token", "Δ in-dist greedy seq"]
    if has_ood:
        header += ["Δ OOD greedy token", "Δ OOD greedy seq"]
    return markdown(header, rows)


def bands(n: int, m: int) -> list[tuple[int, int]]:
    """Length bands for the trend table: the two halves of 1..N, then N+1..2N, 2N+1..M (those non-empty)."""
    half = max(1, n // 2)
    out = [(1, half)] + ([(half + 1, n)] if n > half else [])
    if m > n:
        out.append((n + 1, min(2 * n, m)))
    if m > 2 * n:
        out.append((2 * n + 1, m))
    return out


def table_trend(g, task: str, n: int, m: int, metric: str) -> str:
    """Greedy accuracy per band of source lengths: how each model degrades as sources get longer."""
    bs = bands(n, m)
    header = ["model"] + [f"n={lo}..{hi}" + (" (train)" if hi <= n else "") for lo, hi in bs]
    rows = [[_row_name(g, key)] + [seeds_ci_text(band_values(g[key], metric, lo, hi)) for lo, hi in bs]
            for key in _order(k for k in g if k[0] == task)]
    return markdown(header, rows)


def pilot_table(g, tasks: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Validation split: mean in-distribution greedy token accuracy per (model, lr) over tasks, and the lr per
    family (``rnn_seq2seq`` variants share one) with the best family mean."""
    lrs = sorted({k[2] for k in g}, key=float)
    names = [nm for nm in ORDER if any(k[1] == nm for k in g)] + sorted({k[1] for k in g} - set(ORDER))
    score: dict[tuple[str, str], float] = {}
    for nm in names:
        for lr in lrs:
            v = [float(np.mean(values(g[(t, nm, lr)], "in_greedy_token_accuracy"))) for t in tasks if (t, nm, lr) in g]
            if v:
                score[(nm, lr)] = float(np.mean(v))
    rows = [[nm] + [pct(score.get((nm, lr))) for lr in lrs] for nm in names]
    families = {"rnn_seq2seq": [nm for nm in names if nm.startswith("RNN")],
                "transformer_seq2seq": [nm for nm in names if nm == "Transformer"]}
    chosen = {}
    for family, members in families.items():
        means = {lr: float(np.mean([score[(nm, lr)] for nm in members])) for lr in lrs
                 if members and all((nm, lr) in score for nm in members)}
        if means:
            best = max(means.values())
            # Ties within 0.1 point go to the smaller learning rate (the more stable one).
            chosen[family] = min((lr for lr, v in means.items() if v >= best - 1e-3), key=float)
            rows.append([f"*{family} (family mean)*"] + [pct(means.get(lr)) for lr in lrs])
    return markdown(["model"] + [f"lr={lr}" for lr in lrs], rows), chosen


# --------------------------------------------------------------------------- published comparison

def published_table(g, tasks: Sequence[str], has_ood: bool) -> str:
    """Bahdanau et al.'s BLEU beside our in-distribution / OOD greedy token accuracy per task."""
    metrics = ("in_greedy_token_accuracy", "ood_greedy_token_accuracy") if has_ood else ("in_greedy_token_accuracy",)
    rows = []
    for name, bleu in PUBLISHED_BLEU.items():
        row = [name, f"{bleu:.2f}"]
        for task in tasks:
            key = next((k for k in _order(g) if k[0] == task and k[1] == name), None)
            row.append("–" if key is None else " / ".join(seeds_ci_text(values(g[key], met)) for met in metrics))
        rows.append(row)
    what = "in-dist / OOD" if has_ood else "in-dist"
    return markdown(["model", "Bahdanau et al. 2014: BLEU (WMT'14 En-Fr, all sentences, trained on ≤ 50 words)"]
                    + [f"ours, {t}: {what} greedy token %" for t in tasks], rows)


def verdict(g, tasks: Sequence[str], n: int, m: int, floor: float) -> str | None:
    """The agrees / differs paragraph from our numbers (RNNsearch vs RNNencdec, per task)."""
    parts = []
    for task in tasks:
        search = [k for k in _order(g) if k[0] == task and k[1] == "RNNsearch"]
        if not search:
            continue
        key = search[0]
        base = baseline_key(g, key)
        if base is None:
            continue
        bits = []
        d = paired(g, key, base, "in_greedy_token_accuracy")
        if d is not None:
            mean, low, high = d
            sig = math.isfinite(low)
            if sig and low > 0:
                bits.append(f"in-distribution RNNsearch beats RNNencdec by {diff_text(d)} points of greedy token "
                            "accuracy (**agrees** with the paper's ordering, 26.75 vs 17.82 BLEU)")
            elif sig and high < 0:
                bits.append(f"in-distribution RNNencdec beats RNNsearch by {diff_text(d)} points (**differs** from "
                            "the paper's ordering)")
            else:
                both_fit = not underfit(g[key], floor) and not underfit(g[base], floor)
                bits.append(f"in-distribution the two are not separated ({diff_text(d)} points; the interval "
                            "contains 0, or one seed) -- **differs** from the paper's clear gap"
                            + (", as both fit the short training sources" if both_fit else ""))
        hs = bands(n, m)
        if len(hs) >= 2 and hs[1][1] <= n:
            common = sorted(set(g[key]) & set(g[base]))
            drop = {}
            for k in (key, base):
                sub = {s: g[k][s] for s in common}
                drop[k] = list(np.subtract(band_values(sub, "greedy_token_accuracy", *hs[0]),
                                           band_values(sub, "greedy_token_accuracy", *hs[1])))
            if common:
                dd = stats.paired_difference_ci(drop[base], drop[key])
                agree = math.isfinite(dd[1]) and dd[1] > 0
                bits.append(f"inside the training range, from lengths {hs[0][0]}..{hs[0][1]} to "
                            f"{hs[1][0]}..{hs[1][1]} RNNencdec loses {pct(float(np.mean(drop[base])))} points and "
                            f"RNNsearch {pct(float(np.mean(drop[key])))} (difference {diff_text(dd)}; "
                            + ("**agrees**: RNNencdec degrades more with length)" if agree else
                               "**differs**: no significantly larger degradation of RNNencdec)"))
        if m > n:
            near = (n + 1, min(m, max(n + 1, math.ceil(NEAR_RATIO * n))))
            common = sorted(set(g[key]) & set(g[base]))
            near_search = band_values({s: g[key][s] for s in common}, "greedy_token_accuracy", *near)
            near_base = band_values({s: g[base][s] for s in common}, "greedy_token_accuracy", *near)
            ind = values(g[key], "in_greedy_token_accuracy")
            if near_search and len(near_search) == len(near_base):
                d_near = stats.paired_difference_ci(near_search, near_base)
                held_near = float(np.mean(ind)) - float(np.mean(near_search)) <= HOLD_POINTS / 100
                bits.append(f"just past the training lengths ({near[0]}..{near[1]}, the paper's 50 -> 60-word "
                            f"ratio) RNNsearch scores {pct(float(np.mean(near_search)))} against RNNencdec's "
                            f"{pct(float(np.mean(near_base)))} ({diff_text(d_near)} points); "
                            + (f"it holds within {HOLD_POINTS:.0f} points of its in-distribution accuracy "
                               "(**agrees** with RNNsearch-50 holding on the longest test sentences)" if held_near
                               else f"it drops more than {HOLD_POINTS:.0f} points (**differs** from RNNsearch-50 "
                                    "holding on the longest test sentences)"))
            ood = values(g[key], "ood_greedy_token_accuracy")
            d_ood = paired(g, key, base, "ood_greedy_token_accuracy")
            held = float(np.mean(ind)) - float(np.mean(ood)) <= HOLD_POINTS / 100
            text = (f"over all test lengths {n + 1}..{m} (up to {m / n:.1f}x the longest training source; the "
                    "paper's Figure 2 goes to about 60 words, 1.2x the training length of its -50 models and 2x that "
                    f"of its -30 models) RNNsearch scores {pct(float(np.mean(ood)))} (in-distribution "
                    f"{pct(float(np.mean(ind)))}), " + ("holding" if held else "not holding")
                    + f" within {HOLD_POINTS:.0f} points, and {diff_text(d_ood)} points over RNNencdec: ")
            if d_ood is not None and math.isfinite(d_ood[1]) and d_ood[1] > 0:
                text += ("attention stays significantly ahead of no attention far past the training lengths "
                         "(**agrees** with RNNsearch-30 staying above RNNencdec-30 in the paper's Figure 2)")
            else:
                text += ("no significant advantage averaged over these lengths (**differs** from RNNsearch-30 "
                         "staying above RNNencdec-30 in the paper's Figure 2)")
            bits.append(text)
        if underfit(g[key], floor):
            bits.append(f"caution: RNNsearch is under-fit here (in-distribution greedy token accuracy below "
                        f"{100 * floor:.0f}%), so these comparisons say little about attention")
        if bits:
            parts.append(f"*{task}*: " + "; ".join(bits) + ".")
    return "\n\n".join(parts) if parts else None


def protocol_differences(config: Mapping[str, Any]) -> list[str]:
    c = config
    rnn = c.get("rnn_seq2seq", {})
    out = [
        f"synthetic reordering tasks ({c['tasks']}) over an alphabet of {c['alphabet_size']} symbols, not WMT'14 "
        "English-French translation with 30,000-word vocabularies; target length = source length, no "
        "end-of-sequence token",
        "per-token and whole-sequence accuracy of greedy decoding per source length, not BLEU of beam search "
        "per sentence-length bucket (the published numbers are BLEU: only the ordering and the trend compare)",
        f"Adam (clip {c['max_grad_norm']}) with one learning rate per model family from a pilot on in-distribution "
        "validation data, not Adadelta",
        "a tanh read-out, not a maxout layer; greedy decoding, not beam search",
        f"GRU {rnn.get('hidden_size')} units per direction and decoder, embeddings {rnn.get('embed_dim')}, "
        f"attention dimension {rnn.get('attention_dim')} (paper: 1000, 620, 1000)",
        f"training sources of length 1..{c['train_max_length']} drawn uniformly per example (paper: natural sentences "
        f"up to 50 words), evaluation at every length 1..{c['test_max_length']} with {c['eval_batch_size']} fresh "
        "examples each",
        f"{c['num_steps']:,} steps of batch {c['batch_size']} (paper: about 5 days, batch 80), {c['num_seeds']} seeds "
        "with 95% t-intervals (paper: one run)",
        "the RNN+Luong and Transformer models are ours (same data and evaluation); the Transformer uses absolute "
        f"{config.get('transformer_seq2seq', {}).get('positional', '?')} positions, so its OOD scores mix attention "
        "with position extrapolation",
    ]
    return out


# --------------------------------------------------------------------------- figures

def curves_figure(g, tasks: Sequence[str], n: int, m: int):
    import matplotlib.pyplot as plt

    metrics = [("greedy_token_accuracy", "greedy token accuracy (%)"),
               ("greedy_sequence_accuracy", "greedy sequence accuracy (%)")]
    fig, axes = plt.subplots(len(metrics), len(tasks), figsize=(5.2 * len(tasks), 3.6 * len(metrics)),
                             squeeze=False, sharex=True, sharey=True)
    names = sorted({k[1:] for k in g}, key=lambda k: (ORDER.index(k[0]) if k[0] in ORDER else 99, float(k[1])))
    colors = {nm: plt.get_cmap("tab10")(i % 10) for i, nm in enumerate(names)}
    lengths = list(range(1, m + 1))
    for col, task in enumerate(tasks):
        for row, (metric, ylabel) in enumerate(metrics):
            ax = axes[row][col]
            ax.axvspan(0.5, n + 0.5, color="0.85", alpha=0.6, label="training lengths" if col == row == 0 else None)
            for key in _order(k for k in g if k[0] == task):
                seeds = g[key]
                table = np.array([[seeds[s]["per_length"][str(k)][metric] for k in lengths] for s in sorted(seeds)])
                mean, low, high = stats.mean_ci_per_column(table)
                color = colors[key[1:]]
                ax.plot(lengths, 100 * mean, color=color, label=_row_name(g, key) if col == 0 and row == 0 else None)
                if np.all(np.isfinite(low)):
                    ax.fill_between(lengths, 100 * np.clip(low, 0, 1), 100 * np.clip(high, 0, 1), color=color,
                                    alpha=0.2)
            ax.set_ylim(-2, 102)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(task)
            if row == len(metrics) - 1:
                ax.set_xlabel("source length")
            if col == 0:
                ax.set_ylabel(ylabel)
    fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.suptitle("Accuracy vs source length (mean over seeds, 95% CI band; grey: training lengths)")
    fig.tight_layout()
    return fig


def write_attention_maps(runs: Sequence[dict], workdir: str) -> list[str]:
    """One PNG per (model with maps, length): the cross-attention of one example, rows = output positions."""
    written = []
    for r in runs:
        for length, entry in sorted(r.get("attention_maps", {}).items(), key=lambda kv: int(kv[0])):
            name = label(r["model"], r["variant"])
            fname = f"attention_{r['task']}_{name.replace('+', '_')}_n{length}.png"
            hits = sum(p == t for p, t in zip(entry["prediction"], entry["target"]))
            weights = np.asarray(entry["weights"])
            # One RNN panel gets a larger canvas, so the title and the per-token labels stay readable.
            plot_weight_maps(weights, os.path.join(workdir, fname), titles=entry["titles"],
                             query_labels=[f"{t}:{p}" for t, p in zip(entry["target"], entry["prediction"])],
                             key_labels=[str(s) for s in entry["source"]], max_cols=4,
                             panel_size=(6.4, 5.6) if len(weights) == 1 else (3.2, 3.0),
                             suptitle=f"{name} on {r['task']}, length {length} (seed {r['seed']}): "
                                      f"{hits}/{len(entry['target'])} greedy tokens right\n"
                                      "rows: target:prediction, columns: source")
            written.append(fname)
    return written


# --------------------------------------------------------------------------- summary

def summary_markdown(results: Mapping[str, Any], figures: Sequence[str] = ()) -> str:
    config, runs = results["config"], ok_runs(results)
    out = ["# Attention vs no attention in seq2seq (Bahdanau et al. 2014): accuracy vs source length", ""]
    if not runs:
        return "\n".join(out + ["No finished cells."] + summary_tail(results, figures)) + "\n"
    n, m = config["train_max_length"], config["test_max_length"]
    floor = config.get("min_train_accuracy", 0.9)
    split = runs[0].get("eval_split", "test")
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    g = group(runs)
    seeds = sorted({int(r["seed"]) for r in runs})
    seconds = sum(e.get("seconds", 0.0) for e in results.get("cells", {}).values())
    env = results.get("environment", {})
    lrs = config.get("learning_rates", {})
    out += [f"Preset `{config.get('preset')}`: {len(runs)}/{results.get('num_cells', len(runs))} cells ok, "
            f"{len(seeds)} seed(s); trained on source lengths 1..{n} (per example), scored on {split} examples at "
            f"every length 1..{m} ({config['eval_batch_size']} per length); {config['num_steps']:,} steps of batch "
            f"{config['batch_size']}, lr " + "; ".join(f"{k} {v}" for k, v in lrs.items()) + f"; {seconds / 60:.1f} "
            f"min of training and evaluation in all (jax {env.get('jax', '?')} on {env.get('backend', '?')}).",
            "",
            "Entries: mean over seeds [95% t-interval], in %. *in-dist*: mean over lengths 1.."
            f"{n} (the training range, fresh examples)" + (f"; *OOD*: mean over lengths {n + 1}..{m}" if m > n else "")
            + ". *TF*: teacher-forced "
            "(the decoder reads the true previous token); *greedy*: the model decodes from its own predictions; "
            "*token*: share of right output tokens; *seq*: share of outputs right at every position. "
            f"*fit*: in-distribution greedy token accuracy below {100 * floor:.0f}% is flagged as under-fit: such a "
            "model's length curve says little about attention."]
    has_ood = m > n
    for i, task in enumerate(tasks, 1):
        out += ["", f"## Table {i}: {task}", "", table_task(g, task, floor, has_ood)]
        t = table_paired(g, task, has_ood)
        if t:
            out += ["", "Attention minus no attention (paired by seed, points [95% CI]):", "", t]
        out += ["", "Greedy token accuracy by band of source lengths:", "",
                table_trend(g, task, n, m, "greedy_token_accuracy")]
    if split == "validation":
        table, chosen = pilot_table(g, tasks)
        out += ["", "## Learning-rate pilot (validation split, in-distribution lengths only)", "",
                "Mean in-distribution greedy token accuracy (%) over tasks; the lr of a family is the best family "
                "mean (ties within 0.1 point: the smaller lr).", "", table, "",
                "Chosen: " + ", ".join(f"{k} {v}" for k, v in chosen.items()) + "."]
    flagged = [f"{_row_name(g, k)} on {k[0]}" for k in _order(g) if underfit(g[k], floor)]
    if flagged:
        out += ["", f"**Under-fit** (in-distribution greedy token accuracy below {100 * floor:.0f}%): "
                + ", ".join(flagged) + ". Their OOD numbers measure a model that has not learned the task."]
    out += ["", "## Published numbers beside ours", "", published_table(g, tasks, has_ood),
            "", "The paper also shows (its Figure 2) that RNNencdec's BLEU falls steeply as sentences get longer while "
            "RNNsearch-50's stays flat up to and past 50 words. BLEU and accuracy are different scales: only the "
            "ordering and the shape against length are comparable."]
    text = verdict(g, tasks, n, m, floor)
    if text:
        out += ["", "## Agrees / differs", "", text]
    out += ["", "## Differences from the paper's protocol", "", *[f"- {d}" for d in protocol_differences(config)]]
    if split == "validation":
        out += ["", "Scores are on the in-distribution validation stream (learning-rate pilot); no test length was "
                "evaluated."]
    out += summary_tail(results, figures)
    return "\n".join(out) + "\n"


def write_report(results: dict[str, Any], workdir: str) -> str:
    """Writes ``summary.md``, ``accuracy_vs_length.png`` and the attention maps into ``workdir``; returns the
    summary."""
    import matplotlib

    matplotlib.use("Agg")

    runs = ok_runs(results)
    written = []
    if runs:
        config = results["config"]
        tasks = list(dict.fromkeys(r["task"] for r in runs))
        fig = curves_figure(group(runs), tasks, config["train_max_length"], config["test_max_length"])
        save_and_close(os.path.join(workdir, CURVES_FILE), fig, dpi=110, bbox_inches="tight")
        written.append(CURVES_FILE)
        written += write_attention_maps(runs, workdir)
    text = summary_markdown(results, written)
    write_text(os.path.join(workdir, SUMMARY_FILE), text)
    return text
