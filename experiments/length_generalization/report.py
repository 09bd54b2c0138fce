"""The length-generalization report: ``summary.md`` and PNG plots, built from results.json alone.

:func:`write_report` is the experiment's ``report`` hook; the tables live in :mod:`.tables`, the comparison with
the published claims (:func:`attnjax.sweep.report.compare`) and the figures here.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from attnjax.data import TASKS
from attnjax.data.ceilings import position_blind_ceiling
from attnjax.sweep import ok_runs
from attnjax.sweep.fitting import stopping_text
from attnjax.sweep.fitting import unfit_curves_figure as unfit_curves_figure_of
from attnjax.sweep.report import (PairedEffect, compare, curves_figure, heatmap_figure, label_colors, markdown_table,
                                 pct, run_facts, save_figures, setting, summary_tail, write_summary)
from experiments.length_generalization import tables
from experiments.length_generalization.tables import DELETANG, RUOSS_GAIN, SOLVED, Entry, Key

CURVES_FILE, HEATMAP_FILE, MAPS_FILE, UNFIT_FILE = (
    "accuracy_vs_length.png", "encoding_heatmap.png", "attention_maps.png", "unfit_curves.png")
STATISTIC = (
    "Entries read `OOD mean [95% CI] (best) · in-dist`, in %: the OOD score's mean and 95% t-interval over seeds, "
    "the best run in parentheses (the paper's statistic, over seeds and settings), then the mean accuracy "
    "on the training lengths 1..{n}. With several settings (recipe, learning rate) each entry uses the one with "
    "the best mean **in-distribution validation** accuracy (`@setting`); test lengths never choose it. "
    "`⚠k/n under-fit`: k of n runs stayed below {floor} in distribution, so their OOD score says little.")
CEILING_NOTE = (
    "Position-blind ceiling (OOD · in-dist): the best accuracy of any predictor that emits one token at every "
    "output position, from the task's data alone (a Transformer without positions or causal mask is one); "
    "classification tasks have none.")
PAPER_TRANSFORMER = dict(num_layers=5, d_model=64, num_heads=8, mlp_dim=256)  # Delétang et al.'s
CLAIMS = ("- (a) Regular tasks: RNN/LSTM solve them at every length, the Transformer does not (Delétang et al.).",
          "- (b) No model without external memory solves reverse/duplicate string (Delétang et al.).",
          f"- (c) Randomized positions raise the Transformer's OOD accuracy by +{RUOSS_GAIN:.1f} points on average "
          "over 15 tasks (Ruoss et al.).")
# The tasks our runs can meet claims (a) and (b) on, with their tag.
CLAIM_TASKS = {"parity_check": "a", "modular_arithmetic": "a", "reverse_string": "b", "duplicate_string": "b"}


def protocol_line(config: Mapping[str, Any], runs: Sequence[dict], results: Mapping[str, Any]) -> str:
    """The summary's first paragraph: preset, lengths, steps, lrs, seeds, failures, wall time, environment."""
    n, m = config["train_max_length"], config["test_max_length"]
    settings = {}
    for r in runs:
        settings.setdefault(r["model"], set()).add(setting(r))
    setting_text = "; ".join(f"{k} {', '.join(sorted(v))}" for k, v in settings.items())
    return (f"Preset `{config.get('preset', '?')}`: trained on lengths 1..{n}, tested on every length 1..{m} (OOD "
            f"score = mean per-token accuracy over {n + 1}..{m}); {stopping_text(config)}, batch "
            f"{config['batch_size']}; {setting_text}; {len({r['seed'] for r in runs})} seeds. "
            + run_facts(results, runs))


def protocol_differences(config: Mapping[str, Any], models: Sequence[str]) -> list[str]:
    """Where our protocol differs from the papers' (Delétang et al.'s reference code: the ``paper`` preset)."""
    c, n, block = config, config["train_max_length"], config.get("transformer", {})
    lrs = min((len(str(v).split(",")) for k, v in c.get("learning_rates", {}).items() if k in models), default=3)
    settings = [
        ("training lengths", f"1..{n}", "1..40"), ("test lengths", f"{n + 1}..{c['test_max_length']}", "41..500"),
        ("training steps", f"≤ {c['num_steps']:,}, train to fit" if c.get("stopping", {}).get("stop_at_fit")
         else f"{c['num_steps']:,}", "1,000,000"), ("batch", c["batch_size"], 128),
        ("seeds", c.get("num_seeds", 10), 10), ("test examples per length", c.get("eval_batch_size", 512), 512),
        ("learning rates per model", lrs, 3),
        ("recipe", "per model, from the recipe pilot" if c.get("recipes") else "Adam, constant rate",
         "Adam, constant rate"),
        ("training lengths drawn", "per example" if c.get("per_example_lengths") else "per batch", "per batch"),
        ("randomized positions drawn from", f"[0, {c.get('randomized_max_len', 2048)})", "[0, 2048)"),
        ("test-time positions", c.get("randomized_eval", "random"), "random"),
        *((f"Transformer {k}", block.get(k), v) for k, v in PAPER_TRANSFORMER.items() if "transformer" in models),
        *((f"{m.upper()} hidden size", c.get(m, {}).get("hidden_size"), 256) for m in tables.RECURRENT_ORDER
          if m in models)]
    return [f"{name}: {ours} (paper {paper})" for name, ours, paper in settings if str(ours) != str(paper)]


def comparison_rows(es: Mapping[Key, Entry], effects: Sequence[PairedEffect], n: int) -> list[list[str]]:
    """One row per published number our runs meet: claim, ours, published, verdict (:func:`compare`), seeds."""
    rows = []
    for task, tag in CLAIM_TASKS.items():
        found = [(m, es[(task, m, "-")]) for m in ("rnn", "lstm") if (task, m, "-") in es]
        if best := tables.best_standard_transformer(es, task):  # the paper's: best of the standard encodings
            found.append((f"transformer {best[0]}", best[1]))
        for name, e in found:
            c = compare(f"({tag}) {task}: {name}", e.ood, DELETANG[name.split()[0]][task] / 100,
                        caveat=f"{e.underfit}/{len(e.runs)} runs under-fit" if e.underfit else "")
            solved = sum(tables.worst_length(r, n) >= SOLVED for r in e.runs)
            rows.append([*c.row(), f"{solved}/{len(e.runs)} seeds solve"])
    if effects:
        e = effects[-1]
        zero = e.diff[1] <= 0 and RUOSS_GAIN / 100 <= e.diff[2]  # as consistent with no gain as with +12.0
        c = compare(f"(c) randomized − standard: {e.name}, {len(e.by_group)} task(s)", e.deltas, RUOSS_GAIN / 100,
                    caveat="interval includes 0" if zero else "", difference=True)
        sign = ("one seed" if not math.isfinite(c.low) else "significant gain" if c.low > 0 else
                "significant loss" if c.high < 0 else "no significant change")
        rows.append([*c.row(), f"{sign} ({len(e.seeds)} paired seeds)"])
    return rows


def accuracy_figure(es: Mapping[Key, Entry], config: Mapping[str, Any]):
    """One panel per task: accuracy vs length per model (mean, 95% CI band over seeds, chosen lr); under-fit
    entries dashed, the training lengths shaded, chance dotted."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n, xs = config["train_max_length"], list(range(1, config["test_max_length"] + 1))
    tasks = tables.task_order(t for t, _, _ in es)
    shown = {t: {tables.label(*mv): es[(t, *mv)] for mv in tables.key_order(es) if (t, *mv) in es} for t in tasks}
    panels = {f"{t} ({TASKS[t].tier})": {k: (xs, [[r["accuracy_per_length"][str(x)] for x in xs] for r in e.runs])
                                         for k, e in lines.items()} for t, lines in shown.items()}
    fig = curves_figure(panels, "input length", "per-token accuracy (%)", cols=5)
    colors = label_colors(k for lines in shown.values() for k in lines)  # curves_figure's colors repeat after 10
    for ax, (task, lines) in zip(fig.axes, shown.items()):
        bands = iter(ax.collections)  # one per line with several seeds, in the lines' order
        for line, (k, e) in zip(list(ax.lines), lines.items()):
            line.set(color=colors[k], linestyle="--" if e.underfit else "-")
            if len(e.runs) > 1:
                next(bands).set(color=colors[k], alpha=0.2 if len(colors) <= 6 else 0.06)
        ax.axvspan(0.5, n + 0.5, color="0.85", zorder=0)
        ax.axhline(100 / TASKS[task].output_size, color="0.4", linestyle=":", linewidth=1)
    fig.legends[0].remove()
    fig.tight_layout()
    fig.legend(handles=[*(Line2D([], [], color=c, label=k) for k, c in colors.items()),
                        Patch(color="0.85", label=f"training lengths 1..{n}"),
                        Line2D([], [], color="0.4", linestyle=":", label="chance (1 / output classes)"),
                        Line2D([], [], color="0.2", linestyle="--",
                               label=f"dashed: ≥1 run under-fit (in-dist < {pct(config['min_train_accuracy'])}%)")],
               loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Accuracy vs input length (mean over seeds, 95% CI band; lr chosen in-distribution)", y=1.02)
    return fig


def unfit_curves_figure(runs: Sequence[dict], config: Mapping[str, Any]):
    """Validation curves of the runs that did not fit, a panel per task (:func:`attnjax.sweep.fitting.unfit_curves_figure`)."""
    return unfit_curves_figure_of(runs, lambda r: r["task"], lambda r: tables.label(r["model"], r["variant"]),
                                  config["stopping"]["threshold"], tables.task_order(r["task"] for r in runs))


def encoding_heatmap(es: Mapping[Key, Entry]):
    """Encoding (× standard/randomized) × task heatmap of mean OOD accuracy, ⚠ on entries with under-fit runs;
    None without attention models."""
    rows, tasks = [mv for mv in tables.key_order(es) if mv[1] != "-"], tables.task_order(t for t, _, _ in es)
    if not rows:
        return None
    several = len({(m, tables.parse_variant(v)[0]) for m, v in rows}) > 1
    grid = [[es.get((t, *mv)) for t in tasks] for mv in rows]
    values = np.array([[e.ci[0] if e else np.nan for e in row] for row in grid])
    with np.errstate(invalid="ignore"):
        values = np.column_stack([values, np.nanmean(values, axis=1)])
    return heatmap_figure(
        values, [tables.label(*mv) if several else mv[1].split("+", 1)[1] for mv in rows], [*tasks, "mean"],
        "Mean OOD accuracy by encoding (standard / randomized) and task\n⚠: some seeds under-fit",
        "mean OOD accuracy", marks=[["⚠" if e and e.underfit else "" for e in row] + [""] for row in grid])


def attention_map_figure(runs: Sequence[dict], config: Mapping[str, Any]):
    """Per attention variant that stored maps: last-layer weights (mean over heads) on one example at the
    longest training and the longest test length; None if no run stored any."""
    import matplotlib.pyplot as plt

    with_maps = [r for r in runs if r.get("attention_maps")]
    if not with_maps:
        return None
    fig, axes = plt.subplots(len(with_maps), 2, figsize=(7.0, 3.2 * len(with_maps)), squeeze=False)
    for row, run in zip(axes, with_maps):
        for ax, (length, weights) in zip(row, sorted(run["attention_maps"].items(), key=lambda kv: int(kv[0]))):
            ax.imshow(np.asarray(weights), cmap="viridis", vmin=0.0)
            where = "training" if int(length) <= config["train_max_length"] else "test"
            name = tables.label(run["model"], run["variant"])
            ax.set_title(f"{name}\n{run['task']}, input length {length} ({where})", fontsize=7)
            ax.set_xlabel("key position", fontsize=7)
            ax.set_ylabel("query position", fontsize=7)
    fig.tight_layout()
    return fig


def summary_markdown(results: Mapping[str, Any], figures: Sequence[str] = ()) -> str:
    """The whole summary.md from ``results``; ``figures`` are the PNG file names to link."""
    config, runs = results["config"], ok_runs(results)
    n, floor = config["train_max_length"], config["min_train_accuracy"]
    es = tables.entries(runs, floor)
    out = ["# Length generalization", "", protocol_line(config, runs, results), "",
           STATISTIC.format(n=n, floor=f"{pct(floor)}%")]
    train_to_fit = all(r.get("val_curve") for r in runs)
    if train_to_fit and len({(r["model"], setting(r)) for r in runs}) > len({r["model"] for r in runs}):
        table, chosen = tables.pilot_table(runs)  # a pilot's page (and a fit check's) leads with its answer
        out += ["", "## Recipe pilot: in-distribution validation accuracy", "", table, "",
                "Validation accuracy at the step each run stopped (held-out examples at the training lengths; test "
                "lengths play no part). Chosen per model (bold): the best mean over the tasks, ties to fewer steps: "
                + "; ".join(f"{m} {s}" for m, s in chosen.items()) + "."]
    if check := tables.fit_check_table(runs):
        out += ["", "## Stopping at fit vs training to the budget", "", check, "",
                "Runs that fit, scored when they first fit and again after training on to the step budget (the same "
                "run, so the two are paired by seed); Δ > 0: training past the fit raised the OOD score."]
    if es:
        ceilings = {t: position_blind_ceiling(TASKS[t], n, config["test_max_length"]) for t in {t for t, _, _ in es}
                    if not TASKS[t].is_classification}
        out += ["", "## Table 1: OOD accuracy by task and model", "", tables.table1(es, ceilings), "",
                "Delétang columns: their best run over 10 seeds × 3 learning rates (Transformer: best of five "
                "encodings), test lengths 41..500.", *(["", CEILING_NOTE] if ceilings else [])]
    if runs and train_to_fit:
        out += ["", "## Fit: steps to fit and why runs stopped", "", *tables.fit_counts(es, floor), "",
                tables.fit_table(es), "",
                "Entries: runs that reached the fit threshold on held-out examples of the training lengths, the "
                "median step at which they did, then the others: *under-trained* (stopped by the step budget while "
                "still rising) or *does not fit at this size* (stopped flat below the threshold)."
                + (f" Their validation curves: `{UNFIT_FILE}`." if UNFIT_FILE in figures else "")]
    effects = tables.randomization_effects(es)
    if effects:
        out += ["", "## Table 2: randomized vs standard positions (Transformer)", "", tables.table2(effects), "",
                "Cells: standard → randomized OOD mean (%). Δ: paired per (task, seed, attention, encoding), each "
                "version at its in-distribution lr, averaged over tasks per seed; 95% t-interval over seeds."]
    if similarity := tables.table3(es, floor):
        out += ["", "## Table 3: OOD accuracy by similarity function and encoding", "",
                "OOD mean over tasks and seeds [95% CI over seeds of the task average] · in-distribution mean.",
                "", similarity]
    if rows := comparison_rows(es, effects, n):
        models = list(dict.fromkeys(r["model"] for r in runs))
        out += ["", "## Ours vs published", "", *CLAIMS, "",
                markdown_table(["claim", "ours [95% CI]", "published", "verdict", "note"], rows), "",
                "Ours: mean over seeds at the in-distribution lr; published: Delétang et al.'s best run, Ruoss et "
                "al.'s mean gain. *agrees*: the published number lies in our interval; *inconclusive*: one seed, "
                "under-fit runs, or an interval holding both 0 and the published gain. A seed *solves* a task "
                f"with ≥ {pct(SOLVED)}% accuracy at every test length.", "",
                "## Differences from the published protocol", "",
                *([f"- {d}" for d in protocol_differences(config, models)] or ["None."])]
    return "\n".join(out + summary_tail(results, figures)) + "\n"


def write_report(results: dict[str, Any], workdir: str) -> str:
    """Writes ``summary.md`` and the PNG plots into ``workdir`` (atomically) and returns the summary."""
    import matplotlib

    matplotlib.use("Agg")
    config, runs = results["config"], ok_runs(results)
    es = tables.entries(runs, config["min_train_accuracy"])
    written = save_figures(workdir, {
        CURVES_FILE: accuracy_figure(es, config) if es else None, HEATMAP_FILE: encoding_heatmap(es),
        MAPS_FILE: attention_map_figure(runs, config),
        UNFIT_FILE: unfit_curves_figure(runs, config) if "stopping" in config else None})
    return write_summary(workdir, summary_markdown(results, written))
