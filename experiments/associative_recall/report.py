"""The MQAR report (the report hook): ``summary.md`` and plots from results.json alone. Where a row ran several
learning rates, the best mean *validation* accuracy picks one (never the test set)."""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from attnjax.plots import plot_weight_maps
from attnjax.sweep.layouts import Layout, layout_figures, layout_table
from attnjax.sweep.layouts import values as seed_values
from attnjax.sweep.plots import save_figures
from attnjax.sweep.published import check, comparison_section, load_published, protocol_section
from attnjax.sweep.report import (StudyPage, best_setting, group_runs, held_out_metric, markdown_table, minutes,
                                 paired, pct, run_header, section)

PAIRS_FILE, NOISE_FILE, WIDTH_FILE = "accuracy_vs_pairs.png", "accuracy_vs_noise.png", "accuracy_vs_width.png"
EVAL_NOISE_FILE, MAPS_FILE = "accuracy_vs_test_noise.png", "attention_maps.png"
BASELINE = "dot_product"  # softmax attention: the reference of every Δ vs softmax
PLATEAU = (0.8, 1.2)  # a last training loss within these multiples of ln P: the run ended on the chance plateau
SOLVED = 0.99 - 1e-9  # Zoology stops training at 99% validation accuracy (less slack: a mean of 0.99s is 0.98999...)
# Zoology's attention-free counterparts: approximate attentions, its gated-convolution mixers, recurrent models
SUB_QUADRATIC = ("linear", "performer", "local", "base_conv", "hyena", "based", "rnn", "lstm", "gru")
PUBLISHED = load_published(__file__)["zoology"]
Groups = Mapping[tuple, Mapping[int, dict]]  # (label, seq_len, kv, width, noise) -> {seed: run}


def group(runs: Sequence[dict]) -> dict[tuple, dict[int, dict]]:
    """Runs by (variant or model, seq_len, kv, width, noise) and seed, at the best validation learning rate."""
    runs = [{**r, **{f"test_noise={float(k)}": v for k, v in (r.get("test_accuracy_by_noise") or {}).items()}}
            for r in runs]
    by_lr = group_runs(runs, lambda r: (r["model"] if r["variant"] == "-" else r["variant"], int(r["seq_len"]),
                                        int(r["kv"]), int(r["width"]), float(r["noise"])))
    return {key: best_setting(lrs, "val_accuracy") for key, lrs in by_lr.items()}


def delta(g: Groups, key: tuple, metric: str) -> dict[int, float]:  # key's model − softmax attention, per seed
    return paired(seed_values(g, key, metric), seed_values(g, (BASELINE, *key[1:]), metric))


def order(labels) -> list[str]:
    rank = {BASELINE: 0, "rnn": 90, "lstm": 91, "gru": 92}  # softmax, attention, sub-quadratic, recurrent
    return sorted(set(labels), key=lambda s: (rank.get(s, 10 + 40 * (s in SUB_QUADRATIC)), s))


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


def verdicts(g: Groups, noise: float, metric: str) -> list:
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
                rows.append(check(PUBLISHED["claims"]["solves"], held, tolerance=1 - SOLVED, caveat=caveat, L=L, P=P,
                                  w=w))
        lo, hi = settings[0], settings[-1]
        for n in order(k[0] for k in g if k[0] in SUB_QUADRATIC and k[3:] == (w, noise)) if len(settings) > 1 else []:
            if gap := paired(delta(g, (n, *lo, w, noise), metric), delta(g, (n, *hi, w, noise), metric)):
                rows.append(check(PUBLISHED["claims"]["gap"], list(gap.values()), n=n, lo=lo[1], hi=hi[1], w=w,
                                  caveat="" if solved.get(lo) and solved.get(hi) else "softmax below 99%"))
    return rows


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


def maps_figure(maps: Mapping[str, Any], vocab_size: int, path: str) -> str:
    layers, q = np.asarray(maps["layers"], np.float32), maps["query"]  # [layers, N, L, L]
    names = ["·" if t == 0 else (f"k{t}" if t < vocab_size // 2 else f"v{t}") for t in maps["tokens"]]
    return os.path.basename(plot_weight_maps(
        layers.reshape(-1, *layers.shape[2:]), path, key_labels=names, query_labels=names, max_cols=layers.shape[1],
        titles=[f"layer {i} head {h}" for i in range(layers.shape[0]) for h in range(layers.shape[1])],
        suptitle=f"softmax attention on one test example (rows: queries, columns: keys)\nquery {names[q]} at position "
                 f"{q} recalls v{maps['targets'][q]}; {len(maps['recalled'])}/{len(maps['queries'])} recalled"))


def body(results: Mapping[str, Any], runs: list[dict]) -> list[str]:
    config, g, noise, metric = results["config"], group(runs), float(results["config"]["noise"]), held_out_metric(runs)
    out = [f"{run_header(results, runs)}, vocabulary {config['vocab_size']}, {config['num_steps']} steps of batch "
           f"{config['batch_size']} from {config['num_train']} examples per seed, {minutes(results):.1f} min.", "",
           f"- Entries: mean {metric.split('_')[0]} accuracy (%) at the query positions [95% t-interval over seeds];"
           " train: the fit on training examples; Δ: paired (same seed) differences in points.",
           "- Learning rates (best mean validation accuracy): "
           + ", ".join(sorted({f"{k[0]}={next(iter(s.values()))['lr']}" for k, s in g.items()})) + ".",
           f"- Test sequences also in a training set: at most {100 * max(r.get('test_in_train', 0) for r in runs):.2f}"
           "% (Zoology warns above 0.1%)."]
    for t in layouts(g, noise, metric):
        out += section(t.title, layout_table(g, t, order(k[0] for k in g), baseline=(BASELINE, "softmax"), **t.options))
    if any(r.get("final_train_loss") is not None and r["kv"] > 1 and float(r["noise"]) == noise for r in runs):
        out += section(f"Where training ended: the chance plateau (width {min(k[3] for k in g if k[4] == noise)}, "
                       f"noise {noise})", "A model that knows which tokens are values but not which one a key asks "
                       "for puts equal mass on the P values of the context: accuracy 1/P, loss ln P. Entries: the mean "
                       f"last logged training loss; on it: seeds whose last loss is within {PLATEAU[0]}-{PLATEAU[1]} x "
                       "ln P.", plateau_table(g, noise))
    return out + comparison_section(PUBLISHED["section"], verdicts(g, noise, metric)) + protocol_section(
        PUBLISHED["protocol"])


def figures(results: Mapping[str, Any], runs: list[dict], workdir: str) -> list[str]:
    """The layouts' figures (widths double, 64, 128, ...: a log axis) and softmax attention's maps on one example."""
    g, metric = group(runs), held_out_metric(runs)
    written = save_figures(workdir, layout_figures(
        g, layouts(g, float(results["config"]["noise"]), metric), order(k[0] for k in g),
        f"{metric.split('_')[0]} accuracy at queries (%), 95% CI", logx=[WIDTH_FILE]))
    for maps in [r["attention_maps"] for r in runs if r.get("attention_maps")][:1]:
        written.append(maps_figure(maps, results["config"]["vocab_size"], os.path.join(workdir, MAPS_FILE)))
    return written


PAGE = StudyPage("Multi-query associative recall (Zoology, Arora et al. 2023)", body, figures)
summary_markdown, write_report = PAGE.summary_markdown, PAGE.write_report
