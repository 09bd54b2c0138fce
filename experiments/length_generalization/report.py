"""The length-generalization report: ``summary.md`` and PNG plots, built from results.json alone.

:func:`write_report` is the experiment's ``report`` hook; the tables live in :mod:`.tables`, the page's words in
``page.json``, the published numbers and claims in ``published.json`` (checked by
:func:`attnjax.sweep.published.check`), the figures here.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from attnjax.data import TASKS
from attnjax.data.ceilings import position_blind_ceiling
from attnjax.sweep import ok_runs
from attnjax.sweep.fitting import stopping_text
from attnjax.sweep.fitting import unfit_curves_figure as unfit_curves_figure_of
from attnjax.sweep.plots import heatmap_figure, length_curves_figure, map_rows_figure, save_figures
from attnjax.sweep.published import check, comparison_section, differences, protocol_section
from attnjax.sweep.report import (PairedEffect, load_json, pct, run_facts, setting, spec_section, summary_tail,
                                 write_summary)
from experiments.length_generalization import tables
from experiments.length_generalization.tables import DELETANG, PUBLISHED, RUOSS_GAIN, SOLVED, Entry, Key

CURVES_FILE, HEATMAP_FILE, MAPS_FILE, UNFIT_FILE = (
    "accuracy_vs_length.png", "encoding_heatmap.png", "attention_maps.png", "unfit_curves.png")
PAGE = load_json(__file__, "page.json")  # the page's headings and notes
CEILING_NOTE = PAGE["ceiling_note"]
PAPER = PUBLISHED["protocol"]["paper"]  # Delétang et al.'s protocol (their reference code: the paper preset)


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
    ours = {
        "training lengths": f"1..{n}", "test lengths": f"{n + 1}..{c['test_max_length']}",
        "training steps": f"≤ {c['num_steps']:,}, train to fit" if c.get("stopping", {}).get("stop_at_fit")
        else f"{c['num_steps']:,}", "batch": c["batch_size"], "seeds": c.get("num_seeds", 10),
        "test examples per length": c.get("eval_batch_size", 512), "learning rates per model": lrs,
        "recipe": "per model, from the recipe pilot" if c.get("recipes") else "Adam, constant rate",
        "training lengths drawn": "per example" if c.get("per_example_lengths") else "per batch",
        "randomized positions drawn from": f"[0, {c.get('randomized_max_len', 2048)})",
        "test-time positions": c.get("randomized_eval", "random"),
        **{k: block.get(k.split()[1]) for k in PAPER if k.startswith("Transformer ") and "transformer" in models},
        **{f"{m.upper()} hidden size": c.get(m, {}).get("hidden_size") for m in tables.RECURRENT_ORDER if m in models}}
    return differences(ours, PAPER)


def comparison_rows(es: Mapping[Key, Entry], effects: Sequence[PairedEffect], n: int) -> list[list[str]]:
    """One row per published number our runs meet: claim, ours, published, verdict (:func:`check`), seeds."""
    rows = []
    for task, tag in PUBLISHED["deletang2022"]["claim_tasks"].items():
        found = [(m, es[(task, m, "-")]) for m in ("rnn", "lstm") if (task, m, "-") in es]
        if best := tables.best_standard_transformer(es, task):  # the paper's: best of the standard encodings
            found.append((f"transformer {best[0]}", best[1]))
        for name, e in found:
            c = check(PUBLISHED["deletang2022"]["claim"], e.ood, published=DELETANG[name.split()[0]][task] / 100,
                      caveat=f"{e.underfit}/{len(e.runs)} runs under-fit" if e.underfit else "", tag=tag, task=task,
                      name=name)
            solved = sum(tables.worst_length(r, n) >= SOLVED for r in e.runs)
            rows.append([*c.row(), f"{solved}/{len(e.runs)} seeds solve"])
    if effects:
        e = effects[-1]
        zero = e.diff[1] <= 0 and RUOSS_GAIN / 100 <= e.diff[2]  # as consistent with no gain as with +12.0
        c = check(PUBLISHED["ruoss2023"]["claim"], e.deltas, published=RUOSS_GAIN / 100, name=e.name,
                  tasks=len(e.by_group), caveat="interval includes 0" if zero else "")
        rows.append([*c.row(), f"{c.change} ({len(e.seeds)} paired seeds)"])
    return rows


def accuracy_figure(es: Mapping[Key, Entry], config: Mapping[str, Any]):
    """One panel per task: accuracy vs length per model (mean, 95% CI band over seeds, chosen lr); under-fit
    entries dashed, the training lengths shaded, chance dotted."""
    xs, tasks = list(range(1, config["test_max_length"] + 1)), tables.task_order(t for t, _, _ in es)
    shown = {t: {tables.label(*mv): es[(t, *mv)] for mv in tables.key_order(es) if (t, *mv) in es} for t in tasks}
    names = {t: f"{t} ({TASKS[t].tier})" for t in tasks}
    return length_curves_figure(
        {names[t]: {k: (xs, [[r["accuracy_per_length"][str(x)] for x in xs] for r in e.runs]) for k, e in lines.items()}
         for t, lines in shown.items()}, config["train_max_length"], xlabel="input length",
        ylabel="per-token accuracy (%)", classes={names[t]: TASKS[t].output_size for t in tasks},
        dashed={names[t]: {k for k, e in lines.items() if e.underfit} for t, lines in shown.items()},
        dashed_label=f"dashed: ≥1 run under-fit (in-dist < {pct(config['min_train_accuracy'])}%)",
        title="Accuracy vs input length (mean over seeds, 95% CI band; lr chosen in-distribution)")


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
    return map_rows_figure([[(f"{tables.label(r['model'], r['variant'])}\n{r['task']}, input length {k} "
                              f"({'training' if int(k) <= config['train_max_length'] else 'test'})", weights)
                             for k, weights in sorted(r["attention_maps"].items(), key=lambda kv: int(kv[0]))]
                            for r in runs if r.get("attention_maps")])


def summary_markdown(results: Mapping[str, Any], figures: Sequence[str] = ()) -> str:
    """The whole summary.md from ``results``; ``figures`` are the PNG file names to link."""
    config, runs = results["config"], ok_runs(results)
    n, floor = config["train_max_length"], config["min_train_accuracy"]
    es = tables.entries(runs, floor)
    out = ["# Length generalization", "", protocol_line(config, runs, results), "",
           PAGE["statistic"].format(n=n, floor=f"{pct(floor)}%")]
    train_to_fit = all(r.get("val_curve") for r in runs)
    if train_to_fit and len({(r["model"], setting(r)) for r in runs}) > len({r["model"] for r in runs}):
        table, chosen = tables.pilot_table(runs)  # a pilot's page (and a fit check's) leads with its answer
        out += spec_section(PAGE["pilot"], table, chosen="; ".join(f"{m} {s}" for m, s in chosen.items()))
    if check_table := tables.fit_check_table(runs):
        out += spec_section(PAGE["fit_check"], check_table)
    if es:
        ceilings = {t: position_blind_ceiling(TASKS[t], n, config["test_max_length"]) for t in {t for t, _, _ in es}
                    if not TASKS[t].is_classification}
        out += spec_section(PAGE["table1"], tables.table1(es, ceilings)) + (["", CEILING_NOTE] if ceilings else [])
    if runs and train_to_fit:
        curves = PAGE["curves_note"].format(file=UNFIT_FILE) if UNFIT_FILE in figures else ""
        out += spec_section(PAGE["fit"], "\n".join(tables.fit_counts(es, floor)), tables.fit_table(es), curves=curves)
    if effects := tables.randomization_effects(es):
        out += spec_section(PAGE["table2"], tables.table2(effects))
    if similarity := tables.table3(es, floor):
        out += spec_section(PAGE["table3"], similarity)
    if rows := comparison_rows(es, effects, n):
        models = list(dict.fromkeys(r["model"] for r in runs))
        out += (comparison_section(PUBLISHED["section"], rows, gain=RUOSS_GAIN, solved=pct(SOLVED))
                + protocol_section(PUBLISHED["protocol"], protocol_differences(config, models)))
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
