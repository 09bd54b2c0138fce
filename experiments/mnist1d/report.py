"""The MNIST-1D report: ``summary.md`` and the sample-efficiency plot, built from results.json alone.

:func:`write_report` is the experiment's ``report`` hook. Tables give mean accuracy with its 95% t-interval
over seeds (``93.1 [92.0, 94.2]``, in %), the train accuracy beside it, parameter counts and the published
numbers (Greydanus & Kobak, test accuracy %). The "agrees / differs" paragraph is computed from the numbers.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from attnjax import stats
from attnjax.results import save_and_close, write_text
from attnjax.sweep.report import pct, seeds_ci_text
from attnjax.sweep import ok_runs
from attnjax.sweep.report import summary_tail

SUMMARY_FILE, CURVE_FILE = "summary.md", "sample_efficiency.png"
# Greydanus & Kobak (MNIST-1D), test accuracy % with 4,000 training examples.
PUBLISHED = {"normal": {"logistic": 32, "mlp": 68, "cnn": 94, "gru": 91},
             "shuffled": {"cnn": 56, "gru": 57, "mlp": 68}}
AGREE_POINTS = 5.0  # |ours - published| within this many points (or inside our CI) counts as agreeing
COLLAPSE_POINTS = 10.0  # a shuffling drop above this many points is a collapse
UNDERFIT = 0.8  # mean train accuracy below this at the largest training size is flagged






def label(model: str, variant: str) -> str:
    return model if variant == "-" else f"{model}+{variant}"


def _held_out(runs: Sequence[dict]) -> str:
    return "test" if any("test_accuracy" in r for r in runs) else "val"


def group(runs: Sequence[dict]) -> dict[tuple, dict[int, dict[str, float]]]:
    """``{(model label, dataset, train_size): {seed: run}}``.

    Several learning rates of one model: on a validation split (the pilot) the best by mean validation
    accuracy is kept; on the test set each lr keeps its own row (``model lr=...``), so that no choice is
    ever made on test accuracy.
    """
    held_out = _held_out(runs)
    key_metric = f"{held_out}_accuracy"
    by_lr: dict[tuple, dict[str, dict[int, dict]]] = {}
    for r in runs:
        key = (label(r["model"], r["variant"]), r["dataset"], int(r["train_size"]))
        by_lr.setdefault(key, {}).setdefault(str(r["lr"]), {})[int(r["seed"])] = r
    several = {k[0] for k, lrs in by_lr.items() if len(lrs) > 1}
    out = {}
    for key, lrs in by_lr.items():
        if held_out == "val" or key[0] not in several:
            out[key] = max(lrs.values(), key=lambda s: np.mean([r[key_metric] for r in s.values()]))
        else:
            for lr, seeds in lrs.items():
                out[(f"{key[0]} lr={lr}", *key[1:])] = seeds
    return out


def _order(labels) -> list[str]:
    rank = {m: i for i, m in enumerate(("logistic", "mlp", "cnn", "gru", "vit1d", "transformer"))}
    return sorted(set(labels), key=lambda s: (rank.get(s.split("+")[0].split(" ")[0], 99), s))


def _values(seeds: Mapping[int, dict], metric: str) -> list[float]:
    return [seeds[s][metric] for s in sorted(seeds) if seeds[s].get(metric) is not None]


def shuffle_drop(g: Mapping[tuple, Mapping[int, dict]], name: str, size: int, metric: str):
    """Paired (same seed) normal - shuffled accuracy: ``(mean, low, high)`` or None."""
    a, b = g.get((name, "normal", size)), g.get((name, "shuffled", size))
    if not a or not b:
        return None
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return stats.paired_difference_ci([a[s][metric] for s in seeds], [b[s][metric] for s in seeds])


def table_shuffle(g, size: int, metric: str) -> str:
    """Normal vs shuffled at one training size."""
    held = metric.split("_")[0]
    rows = ["| model | params | normal " + held + " | normal train | published | shuffled " + held
            + " | shuffled train | published | Δ normal − shuffled |",
            "|---|---:|---|---:|---:|---|---:|---:|---|"]
    for name in _order(m for m, _, s in g if s == size):
        cols = []
        params = next((r["num_params"] for d in ("normal", "shuffled") for r in g.get((name, d, size), {}).values()),
                      None)
        for dataset in ("normal", "shuffled"):
            seeds = g.get((name, dataset, size), {})
            pub = PUBLISHED[dataset].get(name)
            train = _values(seeds, "train_accuracy")
            cols += [seeds_ci_text(_values(seeds, metric)), pct(float(np.mean(train))) if train else "–",
                     "–" if pub is None else str(pub)]
        drop = shuffle_drop(g, name, size, metric)
        drop_text = "–" if drop is None else (
            f"{100 * drop[0]:+.1f}" + ("" if not math.isfinite(drop[1]) else
                                       f" [{100 * drop[1]:+.1f}, {100 * drop[2]:+.1f}]"))
        rows.append(f"| {name} | {params if params is not None else '–'} | " + " | ".join(cols) + f" | {drop_text} |")
    return "\n".join(rows)


def table_sizes(g, dataset: str, metric: str) -> str:
    """Held-out accuracy [CI] and the train − held-out gap per training size, for one dataset."""
    sizes = sorted({s for _, d, s in g if d == dataset})
    head = "| model | " + " | ".join(f"n={s} | gap" for s in sizes) + " |"
    rows = [head, "|---|" + "---|---:|" * len(sizes)]
    for name in _order(m for m, d, _ in g if d == dataset):
        cols = []
        for s in sizes:
            seeds = g.get((name, dataset, s), {})
            test, train = _values(seeds, metric), _values(seeds, "train_accuracy")
            gap = float(np.mean(np.array(train) - np.array(test))) if test and len(test) == len(train) else None
            cols += [seeds_ci_text(test), "–" if gap is None else f"{100 * gap:.1f}"]
        rows.append(f"| {name} | " + " | ".join(cols) + " |")
    return "\n".join(rows)


def verdict(g, size: int, metric: str) -> str | None:
    """The agrees / differs paragraph, from the numbers at training size ``size``."""
    if metric != "test_accuracy":
        return None
    agree, differ = [], []
    for dataset, published in PUBLISHED.items():
        for name, pub in published.items():
            values = _values(g.get((name, dataset, size), {}), metric)
            if not values:
                continue
            mean, low, high = stats.mean_ci(values)
            ours = 100 * mean
            inside = math.isfinite(low) and 100 * low <= pub <= 100 * high
            text = f"{name} {dataset} {ours:.1f} vs {pub}"
            (agree if inside or abs(ours - pub) <= AGREE_POINTS else differ).append(text)
    out = []
    if agree or differ:
        out.append(f"**Published numbers (n={size}).** Agrees (within {AGREE_POINTS:.0f} points or inside our 95% "
                   f"CI): {', '.join(agree) or 'none'}. Differs: {', '.join(differ) or 'none'}.")
    invariant, collapsed, kept = [], [], []
    names = _order(m for m, _, s in g if s == size)
    for name in names:
        drop = shuffle_drop(g, name, size, metric)
        if drop is None:
            continue
        d, low, high = (100 * v for v in drop)
        ci = "" if not math.isfinite(low) else f" [{low:+.1f}, {high:+.1f}]"
        text = f"{name} {d:+.1f}{ci}"
        if name.endswith("+nope"):
            invariant.append((text, math.isfinite(low) and low <= 0 <= high or abs(d) < 1.0))
        elif d > COLLAPSE_POINTS:
            collapsed.append(text)
        else:
            kept.append(text)
    if invariant or collapsed or kept:
        parts = []
        for text, ok in invariant:
            parts.append(f"the Transformer without positions (permutation-invariant with mean pooling) "
                         f"{'loses nothing' if ok else 'changes'} under shuffling ({text} points, normal − shuffled)")
        if collapsed:
            parts.append(f"models that drop more than {COLLAPSE_POINTS:.0f} points: {', '.join(collapsed)}")
        if kept:
            parts.append(f"models within {COLLAPSE_POINTS:.0f} points: {', '.join(kept)}")
        paper_collapse = [m for m in ("cnn", "gru") if any(c.startswith(m + " ") for c in collapsed)]
        tail = ("; as published, CNN and GRU collapse when the order is destroyed" if len(paper_collapse) == 2
                else "; unlike the paper, not both CNN and GRU collapse here" if any(
                    (m, "shuffled", size) in g for m in ("cnn", "gru")) else "")
        body = "; ".join(parts) + tail + "."
        out.append("**Shuffling.** " + body[0].upper() + body[1:])
    underfit = [f"{name} {pct(float(np.mean(train)))}" for name in names
                for train in [_values(g.get((name, "normal", size), {}), "train_accuracy")]
                if train and float(np.mean(train)) < UNDERFIT and name != "logistic"]  # linear: capped by design
    if underfit:
        out.append(f"**Under-fit (normal train accuracy below {100 * UNDERFIT:.0f}% at n={size}):** "
                   f"{', '.join(underfit)}. Their test accuracy and shuffling drops measure a model that has not "
                   "fit the training set, not its inductive bias alone; more steps or width would change them.")
    return "\n\n".join(out) if out else None


# The reference protocol (greydanus/mnist1d, get_model_args and the paper's Table 1 runs).
PAPER_STEPS, PAPER_LR, PAPER_GRU = 8000, 1e-2, "bidirectional, hidden 6, reads out every time step"


def protocol_differences(config: Mapping[str, Any]) -> str:
    """What this run did differently from the published protocol, from its config, with what each may change."""
    lrs = {k: float(v) for k, v in dict(config.get("learning_rates", {})).items() if "," not in str(v)}
    gru = dict(config.get("gru", {}))
    lines = []
    if config.get("num_steps") != PAPER_STEPS:
        lines.append(f"{config.get('num_steps'):,} training steps, not {PAPER_STEPS:,}: a likely reason the MLP "
                     "scores below the published 68% when it has not yet fit its training set, and the attention "
                     "models' under-fit (both untested here: the `paper` preset runs 8,000 steps)")
    off = {k: v for k, v in lrs.items() if v != PAPER_LR}
    if off:
        lines.append("learning rates from the validation pilot, not 1e-2 for all: "
                     + ", ".join(f"{k} {v:g}" for k, v in sorted(off.items())))
    lines.append(f"GRU unidirectional, hidden {gru.get('hidden_size')}, reading out its {gru.get('pooling')} state; "
                 f"the reference's is {PAPER_GRU}. Reading every step of both directions keeps more of a shuffled "
                 "sequence's evidence than one last state: a likely reason our shuffled GRU drops further "
                 "than the published 57%")
    if config.get("max_grad_norm"):
        lines.append(f"Adam after global-norm clipping at {config.get('max_grad_norm')} (the reference does not clip)")
    lines.append(f"the shuffle is one fixed permutation from seed {config.get('permutation_seed')}, not the "
                 "package's own draw; mean and 95% t-interval over seeds where the paper reports one run")
    return "\n".join(f"- {line}." for line in lines)


def sample_efficiency_figure(g, metric: str):
    import matplotlib.pyplot as plt

    datasets = [d for d in ("normal", "shuffled") if any(k[1] == d for k in g)]
    if not datasets or len({k[2] for k in g}) < 2:
        return None
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False, sharey=True)
    names = _order(m for m, _, _ in g)
    colors = {name: plt.get_cmap("tab20")(i % 20) for i, name in enumerate(names)}
    all_sizes = sorted({s for _, _, s in g})
    for ax, dataset in zip(axes[0], datasets):
        for name in _order(m for m, d, _ in g if d == dataset):
            sizes = sorted(s for m, d, s in g if m == name and d == dataset)
            means, lows, highs, trains = [], [], [], []
            for s in sizes:
                values = _values(g[(name, dataset, s)], metric)
                mean, low, high = stats.mean_ci(values)
                means.append(100 * mean)
                lows.append(100 * (low if math.isfinite(low) else mean))
                highs.append(100 * (high if math.isfinite(high) else mean))
                trains.append(100 * float(np.mean(_values(g[(name, dataset, s)], "train_accuracy"))))
            ax.plot(sizes, means, marker="o", label=name, color=colors[name])
            ax.fill_between(sizes, lows, highs, color=colors[name], alpha=0.2)
            ax.plot(sizes, trains, linestyle=":", color=colors[name], alpha=0.7)
        ax.set_xscale("log")
        ax.set_xticks(all_sizes, labels=[str(s) for s in all_sizes])
        ax.minorticks_off()
        ax.set_xlabel("training examples")
        ax.set_title(f"{dataset}: {metric.split('_')[0]} (solid, 95% CI) and train (dotted)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return fig


def summary_markdown(results: Mapping[str, Any], figures: Sequence[str] = ()) -> str:
    config, runs = results["config"], ok_runs(results)
    out = ["# MNIST-1D: normal vs shuffled positions, and sample efficiency", ""]
    if not runs:
        return "\n".join(out + ["No finished cells."]) + "\n"
    metric = f"{_held_out(runs)}_accuracy"
    g = group(runs)
    size = max(s for _, _, s in g)
    seeds = sorted({int(r["seed"]) for r in runs})
    seconds = sum(e.get("seconds", 0.0) for e in results.get("cells", {}).values())
    out += [f"Preset `{config.get('preset')}`: {len(runs)}/{results.get('num_cells', len(runs))} cells ok, "
            f"{len(seeds)} seed(s), {config.get('num_steps')} steps of batch {config.get('batch_size')}, "
            f"{seconds / 60:.1f} min of training and evaluation in all.",
            "", f"Entries: mean {metric.split('_')[0]} accuracy (%) over seeds [95% t-interval]; train accuracy is the "
            "mean over seeds on the training subset. Published: Greydanus & Kobak, test accuracy (%) with 4,000 "
            "training examples. Δ: paired (same seed) normal − shuffled difference in points [95% CI]."]
    out += ["", f"## Table 1: normal vs shuffled (n={size} training examples)", "", table_shuffle(g, size, metric)]
    if len({s for _, _, s in g}) > 1:
        out += ["", "## Table 2: sample efficiency", "",
                "Per training size n: held-out accuracy [95% CI] and the mean train − held-out gap (points)."]
        for dataset in ("normal", "shuffled"):
            if any(d == dataset for _, d, _ in g):
                out += ["", f"### {dataset}", "", table_sizes(g, dataset, metric)]
    text = verdict(g, size, metric)
    if text:
        out += ["", "## Agrees / differs", "", text]
    out += ["", "## Differences from the published protocol", "", protocol_differences(config)]
    if metric != "test_accuracy":
        out += ["", "Scores are on the validation split held out of the training set (learning-rate pilot); "
                "the test set was not evaluated."]
    out += summary_tail(results, figures)
    return "\n".join(out) + "\n"


def write_report(results: dict[str, Any], workdir: str) -> str:
    """Writes ``summary.md`` and ``sample_efficiency.png`` into ``workdir`` and returns the summary."""
    import matplotlib

    matplotlib.use("Agg")

    runs = ok_runs(results)
    written = []
    if runs:
        fig = sample_efficiency_figure(group(runs), f"{_held_out(runs)}_accuracy")
        if fig is not None:
            save_and_close(os.path.join(workdir, CURVE_FILE), fig, dpi=110, bbox_inches="tight")
            written.append(CURVE_FILE)
    text = summary_markdown(results, written)
    write_text(os.path.join(workdir, SUMMARY_FILE), text)
    return text
