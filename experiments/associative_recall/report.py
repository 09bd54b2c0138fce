"""The MQAR report (the report hook): ``summary.md`` and plots from results.json alone. Where a row ran several
learning rates, the best mean *validation* accuracy picks one (never the test set)."""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from attnjax.plots import plot_weight_maps
from attnjax.sweep import ok_runs
from attnjax.sweep.report import (best_setting, compare, compare_direction, comparison_table, curves_figure,
                                 group_runs, held_out_metric, load_published, markdown_table, minutes, paired, pct,
                                 run_header, save_figures, seeds_ci_text, summary_tail, write_summary)
from experiments.associative_recall import config as study_config

PAIRS_FILE, NOISE_FILE, WIDTH_FILE = "accuracy_vs_pairs.png", "accuracy_vs_noise.png", "accuracy_vs_width.png"
EVAL_NOISE_FILE, MAPS_FILE = "accuracy_vs_test_noise.png", "attention_maps.png"
BASELINE = "dot_product"  # softmax attention: the reference of every Δ vs softmax
PLATEAU = (0.8, 1.2)  # a last training loss within these multiples of ln P: the run ended on the chance plateau
SOLVED = 0.99 - 1e-9  # Zoology stops training at 99% validation accuracy (less slack: a mean of 0.99s is 0.98999...)
# Zoology's attention-free counterparts: approximate attentions, its gated-convolution mixers, recurrent models
SUB_QUADRATIC = ("linear", "performer", "local", "base_conv", "hyena", "based", "rnn", "lstm", "gru")
PUBLISHED = load_published(__file__)["zoology"]["claim"]
Groups = Mapping[tuple, Mapping[int, dict]]  # (label, seq_len, kv, width, noise) -> {seed: run}


def group(runs: Sequence[dict]) -> dict[tuple, dict[int, dict]]:
    """Runs by (variant or model, seq_len, kv, width, noise) and seed, at the best validation learning rate."""
    runs = [{**r, **{f"test_noise={float(k)}": v for k, v in (r.get("test_accuracy_by_noise") or {}).items()}}
            for r in runs]
    by_lr = group_runs(runs, lambda r: (r["model"] if r["variant"] == "-" else r["variant"], int(r["seq_len"]),
                                        int(r["kv"]), int(r["width"]), float(r["noise"])))
    return {key: best_setting(lrs, "val_accuracy") for key, lrs in by_lr.items()}


def order(labels) -> list[str]:
    rank = {BASELINE: 0, "rnn": 90, "lstm": 91, "gru": 92}  # softmax, attention, sub-quadratic, recurrent
    return sorted(set(labels), key=lambda s: (rank.get(s, 10 + 40 * (s in SUB_QUADRATIC)), s))


def seed_values(g: Groups, key: tuple, metric: str) -> dict[int, float]:
    return {s: r[metric] for s, r in sorted((g.get(key) or {}).items()) if r.get(metric) is not None}


def delta(g: Groups, key: tuple, metric: str) -> dict[int, float]:  # key's model − softmax attention, per seed
    return paired(seed_values(g, key, metric), seed_values(g, (BASELINE, *key[1:]), metric))


class Layout(NamedTuple):
    """A table and its panel in ``file``; a column: ``(head, plotted x, (seq_len, kv, width, noise), metric)``."""

    title: str
    file: str
    xlabel: str
    columns: list[tuple[str, float, tuple, str]]
    options: dict = {}


def settings_at(g: Groups, width: int, noise: float) -> list[tuple[int, int]]:
    return sorted({k[1:3] for k in g if k[3:] == (width, noise)}, key=lambda s: (s[1], s[0]))


def layouts(g: Groups, noise: float, metric: str) -> list[Layout]:
    """Accuracy vs pairs (per width), vs training noise, vs width, vs test-time noise (at the first width)."""
    ws, widths, held = sorted({k[3] for k in g if k[4] == noise}), sorted({k[3] for k in g}), metric.split("_")[0]
    levels = sorted({m[11:] for s in g.values() for r in s.values() for m in r if m.startswith("test_noise=")},
                    key=float)
    return ([Layout(f"Accuracy vs number of pairs (width {w}, noise {noise})", PAIRS_FILE, "key-value pairs P",
                    [(f"L={L} P={P} {held}", P, (L, P, w, noise), metric) for L, P in settings_at(g, w, noise)],
                    dict(params=True, change=False)) for w in ws]
            + [Layout(f"Accuracy vs filler noise (L={L}, P={P}, width {w})", NOISE_FILE, "filler noise",
                      [(f"noise={x}", x, (L, P, w, x), metric) for x in sorted({k[4] for k in g})])
               for L, P, w in sorted({k[1:4] for k in g if k[4] != noise})]
            + [Layout(f"Accuracy vs width (L={L}, P={P}, noise {noise})", WIDTH_FILE, "width",
                      [(f"width={x}", x, (L, P, x, noise), metric) for x in widths])
               for L, P in sorted({k[1:3] for k in g if k[4] == noise}, key=lambda s: s[1]) if len(widths) > 1]
            + [Layout(f"Accuracy vs test-time filler noise (L={L}, P={P}, width {ws[0]}, trained at noise {noise})",
                      EVAL_NOISE_FILE, "test-time filler noise",
                      [(f"test noise {x}", float(x), (L, P, ws[0], noise), f"test_noise={x}") for x in levels],
                      dict(train=False)) for L, P in (settings_at(g, ws[0], noise) if levels and ws else [])])


def table(g: Groups, t: Layout, train: bool = True, params: bool = False, change: bool = True) -> str:
    """A row per model; per column: accuracy [CI], train fit, Δ vs softmax; last, the change from first to last."""
    first, last = t.columns[0], t.columns[-1]
    head = ["model", *["params"] * params, *[h for c in t.columns for h in (c[0], *["train"] * train, "Δ vs softmax")],
            *[f"Δ {last[0]} − {first[0]}"] * change]
    rows = []
    for n in order(k[0] for k in g if k[1:] in {c[2] for c in t.columns}):
        row = [n, *[next(str(next(iter(g[(n, *c[2])].values()))["num_params"]) for c in t.columns[::-1]
                         if g.get((n, *c[2])))] * params]
        for _, _, tail, metric in t.columns:
            fit = list(seed_values(g, (n, *tail), "train_accuracy").values())
            row += [seeds_ci_text(seed_values(g, (n, *tail), metric)),
                    *[pct(float(np.mean(fit))) if fit else "–"] * train,
                    "–" if n == BASELINE else seeds_ci_text(delta(g, (n, *tail), metric), sign=True)]
        moved = paired(seed_values(g, (n, *last[2]), last[3]), seed_values(g, (n, *first[2]), first[3]))
        rows.append(row + [seeds_ci_text(moved, sign=True)] * change)
    return markdown_table(head, rows)


def verdicts(g: Groups, noise: float, metric: str) -> str:
    """Zoology's claims per width: softmax solves each setting; sub-quadratic models' Δ vs softmax falls with P."""
    rows = []
    for w in sorted({k[3] for k in g if k[4] == noise}):
        settings, solved = settings_at(g, w, noise), {}
        for L, P in settings:
            held, fit = (list(seed_values(g, (BASELINE, L, P, w, noise), m).values())
                         for m in (metric, "train_accuracy"))
            if held:
                solved[L, P] = np.mean(held) >= SOLVED
                caveat = f"train fit {pct(np.mean(fit))}%: budget" if not solved[L, P] and np.mean(fit) < SOLVED else ""
                rows.append(compare(f"softmax attention solves L={L} P={P} (width {w})", held, 1.0,
                                    tolerance=1 - SOLVED, caveat=caveat))
        lo, hi = settings[0], settings[-1]
        for n in order(k[0] for k in g if k[0] in SUB_QUADRATIC and k[3:] == (w, noise)) if len(settings) > 1 else []:
            gap = paired(delta(g, (n, *lo, w, noise), metric), delta(g, (n, *hi, w, noise), metric))
            if gap:
                rows.append(compare_direction(
                    f"{n}: gap to softmax grows, P={lo[1]} → {hi[1]} (width {w}; Δ at P={lo[1]} − at P={hi[1]})",
                    list(gap.values()),
                    "grows (> 0)", caveat="" if solved.get(lo) and solved.get(hi) else "softmax below 99%"))
    return comparison_table(rows)


def plateau_table(g: Groups, noise: float) -> str:
    """Per model and setting (first width): the mean last logged training loss and how many seeds ended within
    :data:`PLATEAU` x ln P, the loss of a uniform guess among the P values of the context (accuracy 1/P)."""
    w = min(k[3] for k in g if k[4] == noise)
    settings = [s for s in settings_at(g, w, noise) if s[1] > 1]  # ln 1 = 0: no plateau to tell apart
    head = ["model", *[f"L={L} P={P} (1/P = {pct(1 / P)}%, ln P = {math.log(P):.2f})" for L, P in settings]]
    rows = []
    for n in order(k[0] for k in g if k[3:] == (w, noise)):
        row = [n]
        for L, P in settings:
            losses = list(seed_values(g, (n, L, P, w, noise), "final_train_loss").values())
            on = sum(PLATEAU[0] <= x / math.log(P) <= PLATEAU[1] for x in losses)
            row.append(f"{np.mean(losses):.2f} ({on}/{len(losses)} on it)" if losses else "–")
        rows.append(row)
    return markdown_table(head, rows)


def panel(g: Groups, t: Layout) -> dict:
    """:func:`curves_figure`'s ``{label: (xs, per-seed ys)}`` of a layout, over the seeds every point of a line has."""
    lines = {n: [(x, seed_values(g, (n, *tail), m)) for _, x, tail, m in t.columns if (n, *tail) in g]
             for n in order(k[0] for k in g)}
    seeds = {n: sorted(set.intersection(*(set(v) for _, v in pts))) for n, pts in lines.items() if pts}
    return {n: ([x for x, _ in lines[n]], [[v[s] for _, v in lines[n]] for s in ss]) for n, ss in seeds.items() if ss}


def maps_figure(maps: Mapping[str, Any], vocab_size: int, path: str) -> str:
    layers, q = np.asarray(maps["layers"], np.float32), maps["query"]  # [layers, N, L, L]
    names = ["·" if t == 0 else (f"k{t}" if t < vocab_size // 2 else f"v{t}") for t in maps["tokens"]]
    return os.path.basename(plot_weight_maps(
        layers.reshape(-1, *layers.shape[2:]), path, key_labels=names, query_labels=names, max_cols=layers.shape[1],
        titles=[f"layer {i} head {h}" for i in range(layers.shape[0]) for h in range(layers.shape[1])],
        suptitle=f"softmax attention on one test example (rows: queries, columns: keys)\nquery {names[q]} at position "
                 f"{q} recalls v{maps['targets'][q]}; {len(maps['recalled'])}/{len(maps['queries'])} recalled"))


def summary_markdown(results: Mapping[str, Any], figure_files: Sequence[str] = ()) -> str:
    config, runs = results["config"], ok_runs(results)
    out = ["# Multi-query associative recall (Zoology, Arora et al. 2023)", ""]
    if not runs:
        return "\n".join(out + ["No finished cells."] + summary_tail(results, figure_files)) + "\n"
    g, noise = group(runs), float(config["noise"])
    metric = held_out_metric(runs)
    out += [f"{run_header(results, runs)}, vocabulary {config['vocab_size']}, {config['num_steps']} steps of batch "
            f"{config['batch_size']} from {config['num_train']} examples per seed, {minutes(results):.1f} min.", "",
            f"- Entries: mean {metric.split('_')[0]} accuracy (%) at the query positions [95% t-interval over seeds];"
            " train: the fit on training examples; Δ: paired (same seed) differences in points.",
            "- Learning rates (best mean validation accuracy): "
            + ", ".join(sorted({f"{k[0]}={next(iter(s.values()))['lr']}" for k, s in g.items()})) + ".",
            f"- Test sequences also in a training set: at most {100 * max(r.get('test_in_train', 0) for r in runs):.2f}"
            "% (Zoology warns above 0.1%)."]
    for t in layouts(g, noise, metric):
        out += ["", f"## {t.title}", "", table(g, t, **t.options)]
    if any(r.get("final_train_loss") is not None and r["kv"] > 1 and float(r["noise"]) == noise for r in runs):
        w = min(k[3] for k in g if k[4] == noise)
        out += ["", f"## Where training ended: the chance plateau (width {w}, noise {noise})", "",
                "A model that knows which tokens are values but not which one a key asks for puts equal mass on the "
                "P values of the context: accuracy 1/P, loss ln P. Entries: the mean last logged training loss; "
                f"on it: seeds whose last loss is within {PLATEAU[0]}-{PLATEAU[1]} x ln P.", "",
                plateau_table(g, noise)]
    out += ["", "## Ours vs published", "", verdicts(g, noise, metric), "", PUBLISHED]
    out += ["", "## Protocol", "", "Differences" + study_config.__doc__.split("Differences", 1)[1].rstrip()]
    return "\n".join(out + summary_tail(results, figure_files)) + "\n"


def write_report(results: dict[str, Any], workdir: str) -> str:
    """Writes ``summary.md`` and the plots into ``workdir`` and returns the summary."""
    runs, written = ok_runs(results), []
    if runs:
        g, panels = group(runs), {}
        metric = held_out_metric(runs)
        for t in layouts(g, float(results["config"]["noise"]), metric):
            if len(t.columns) > 1:
                panels.setdefault((t.file, t.xlabel), {})[t.title] = panel(g, t)
        written = save_figures(workdir, {name: curves_figure(
            by_title, xlabel, f"{metric.split('_')[0]} accuracy at queries (%), 95% CI", cols=3,
            logx=name == WIDTH_FILE) for (name, xlabel), by_title in panels.items()})  # widths double: 64, 128, ...
        for maps in [r["attention_maps"] for r in runs if r.get("attention_maps")][:1]:  # softmax, one example
            written.append(maps_figure(maps, results["config"]["vocab_size"], os.path.join(workdir, MAPS_FILE)))
    return write_summary(workdir, summary_markdown(results, written))
