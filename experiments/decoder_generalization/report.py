"""The decoder-only length-generalization report: ``summary.md`` and one plot, built from results.json alone (the
encoder-vs-decoder table also reads the encoder study's committed results.json, and is left out without it).

Runs are grouped by ``(task, model, variant)`` into an :class:`~attnjax.sweep.fitting.Entry` at the setting with
the best in-distribution validation accuracy (the encoder study's rule, :func:`tables.entries`); its ``ood_score``
is the free-running per-token accuracy. Aggregates over tasks average each seed over the tasks every seed has,
then take the 95% t-interval over seeds. Words and published numbers are data (``published.json``).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from attnjax.data.tasks import ALL_TASKS
from attnjax.sweep import load_results, ok_runs
from attnjax.sweep.fitting import stopping_text, underfit_flag
from attnjax.sweep.pages import RESULTS_ROOT
from attnjax.sweep.plots import length_curves_figure, save_figures
from attnjax.sweep.published import differences, load_published, protocol_section
from attnjax.sweep.report import (PairedEffect, ci_text, markdown_table, paired_effect, pct, per_seed_means, run_facts,
                                 seeds_ci_text, setting, spec_section, summary_tail, write_summary)
from experiments.decoder_generalization.config import lengths
from experiments.length_generalization import tables
from experiments.length_generalization.report import PAGE as ENCODER_PAGE
from experiments.length_generalization.tables import Entry, Key

PUBLISHED = load_published(__file__)
PAGE, KAZEMNEJAD = PUBLISHED["page"], PUBLISHED["kazemnejad2023"]
CURVES_FILE = "accuracy_vs_length.png"
LM, NOPE = "transformer_lm", "dot_product+nope"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository


def metric_table(es: Mapping[Key, Entry], metric: str) -> str:
    """Model × task: ``OOD mean [CI] · in-dist`` of ``ood_<metric>``/``in_dist_<metric>``, the under-fit flag of the
    entry, and the mean over the tasks every seed has."""
    tasks = tables.task_order(t for t, _, _ in es)
    rows = []
    for model, variant in tables.key_order(es):
        row, by_task = [tables.label(model, variant)], {}
        for task in tasks:
            if (e := es.get((task, model, variant))) is None:
                row.append("–")
                continue
            ood = {r["seed"]: r[f"ood_{metric}"] for r in e.runs}
            by_task[task] = ood
            in_dist = float(np.mean([r[f"in_dist_{metric}"] for r in e.runs]))
            row.append(f"{seeds_ci_text(ood)} · {pct(in_dist)}{underfit_flag(e.underfit, len(e.runs))}")
        seeds, means = per_seed_means(by_task)
        rows.append(row + [seeds_ci_text(list(means)) if seeds else "–"])
    return markdown_table(["model", *tasks, "all tasks"], rows)


def teacher_forced_table(es: Mapping[Key, Entry]) -> str:
    """Model × task: teacher-forced OOD per-token accuracy · exact match (means over seeds)."""
    tasks, mean = tables.task_order(t for t, _, _ in es), lambda e, k: pct(np.mean([r[k] for r in e.runs]))
    return markdown_table(["model", *tasks], [[tables.label(*mv), *(
        f"{mean(e, 'ood_token')} · {mean(e, 'ood_exact')}" if (e := es.get((t, *mv))) else "–" for t in tasks)]
        for mv in tables.key_order(es)])


def reciprocal_ranks(scores: Mapping[str, float]) -> dict[str, float]:
    """``1 / rank`` of each name by its score, the highest first; tied names share the mean of their ranks."""
    values = np.array(list(scores.values()), np.float64)
    return {k: 1.0 / (1 + np.sum(values > v) + (np.sum(values == v) - 1) / 2) for k, v in scores.items()}


def mean_reciprocal_ranks(es: Mapping[Key, Entry], metric: str, encodings: Sequence[str]
                          ) -> tuple[dict[str, float], int]:
    """The MRR of each of ``encodings`` (``transformer_lm dot_product+<encoding>``) over the (task, seed) pairs that
    have every one of them, ranked by ``ood_<metric>``; returns ``({encoding: MRR}, number of pairs)``."""
    queries: dict[tuple[str, int], dict[str, float]] = {}
    for (task, model, variant), e in es.items():
        encoding = variant.removeprefix("dot_product+")
        if model == LM and encoding in encodings:
            for r in e.runs:
                queries.setdefault((task, r["seed"]), {})[encoding] = r[f"ood_{metric}"]
    full = [q for q in queries.values() if set(q) == set(encodings)]
    ranks = [reciprocal_ranks(q) for q in full]
    return {k: float(np.mean([rr[k] for rr in ranks])) for k in encodings} if full else {}, len(full)


def mrr_table(es: Mapping[Key, Entry]) -> str | None:
    """Kazemnejad et al.'s encodings: our MRR by free-running OOD exact match and per-token accuracy beside theirs;
    None unless every one of them ran on some (task, seed)."""
    encodings = list(KAZEMNEJAD["mrr"])
    exact, n = mean_reciprocal_ranks(es, "greedy_exact", encodings)
    token, _ = mean_reciprocal_ranks(es, "greedy_token", encodings)
    if not n:
        return None
    rows = [[KAZEMNEJAD["names"][k], f"{exact[k]:.2f}", f"{token[k]:.2f}", f"{KAZEMNEJAD['mrr'][k]:.2f}"]
            for k in encodings]
    return (markdown_table(["encoding", "ours: exact match", "ours: per-token", "Kazemnejad et al. (exact match)"],
                           rows, align="lrrr") + f"\n\n{n} (task, seed) rankings.")


def paired(es: Mapping[Key, Entry], treatment: Key, control: Key, metric: str) -> dict[Any, tuple[float, float]]:
    """``{seed: (control, treatment)}`` of ``ood_<metric>`` over the seeds both entries have."""
    c = {r["seed"]: r[f"ood_{metric}"] for r in es[control].runs}
    return {r["seed"]: (c[r["seed"]], r[f"ood_{metric}"]) for r in es[treatment].runs if r["seed"] in c}


def nope_effects(es: Mapping[Key, Entry], metric: str) -> list[PairedEffect]:
    """NoPE (treatment) against every other ``transformer_lm`` variant (control), paired by task and seed; then
    NoPE against all of them at once."""
    others = [v for m, v in tables.key_order(es) if m == LM and v != NOPE]
    effects, everything = [], {}
    for v in others:
        cells = {(t, v): paired(es, (t, LM, NOPE), (t, LM, v), metric) for t, m, w in es
                 if (m, w) == (LM, v) and (t, LM, NOPE) in es}
        if cells and (effect := paired_effect(v.removeprefix("dot_product+"), cells)) is not None:
            effects.append(effect)
            everything.update(cells)
    if len(effects) > 1 and (effect := paired_effect("**every other variant**", everything)) is not None:
        effects.append(effect)
    return effects


def verdict(effect: PairedEffect) -> str:
    """Whether the interval of NoPE − other lies above 0, below 0, or holds it."""
    _, low, high = effect.diff
    return ("one seed" if not np.isfinite(low) else "NoPE better" if low > 0 else "NoPE worse" if high < 0
            else "no significant difference")


def nope_section(es: Mapping[Key, Entry]) -> list[str]:
    """The NoPE question: a paired effect per other variant, exact match and per-token, and the answer in words."""
    exact, token = nope_effects(es, "greedy_exact"), {e.name: e for e in nope_effects(es, "greedy_token")}
    if not exact:
        return []
    rows = [[e.name, ci_text(*e.diff, sign=True), verdict(e), ci_text(*token[e.name].diff, sign=True),
             verdict(token[e.name]), str(len(e.seeds)), str(len(e.by_group))] for e in exact]
    table = markdown_table(["NoPE vs", "Δ exact [95% CI]", "exact", "Δ per-token [95% CI]", "per-token", "seeds",
                            "tasks"], rows)
    named = [e for e in exact if not e.name.startswith("**")]
    counts = {k: [e.name for e in named if verdict(e) == k] for k in ("NoPE better", "NoPE worse")}
    answer = (f"**Answer (exact match):** NoPE is significantly better than {len(counts['NoPE better'])} and worse "
              f"than {len(counts['NoPE worse'])} of {len(named)} variants"
              + "".join(f"; {k.split()[1]} than {', '.join(v)}" for k, v in counts.items() if v) + ".")
    return spec_section(PAGE["nope"], table, answer)


def encoder_table(es: Mapping[Key, Entry], config: Mapping[str, Any]) -> tuple[str, str] | None:
    """Per (task, family) in both protocols: encoder and decoder per-token OOD over the test lengths both scored,
    paired by seed; returns ``(table, the lengths)``, or None without committed encoder runs that match."""
    encoder = load_results(os.path.join(ROOT, RESULTS_ROOT, config["encoder_run"])) if config["encoder_run"] else None
    if encoder is None:
        return None
    enc_config = encoder["config"]
    enc_es = tables.entries(ok_runs(encoder), enc_config["min_train_accuracy"])
    cells, spans = {}, set()
    for (task, model, variant), e in es.items():
        other = enc_es.get((task, "transformer" if model == LM else model, variant))
        n, m = lengths(config, task)
        if other is None or n != enc_config["train_max_length"]:
            continue
        ks = range(n + 1, min(m, enc_config["test_max_length"]) + 1)
        spans.add(f"{ks.start}..{ks.stop - 1}")
        enc = {r["seed"]: np.mean([r["accuracy_per_length"][str(k)] for k in ks]) for r in other.runs}
        dec = {r["seed"]: np.mean([r["per_length"][str(k)]["greedy_token"] for k in ks]) for r in e.runs}
        if both := {s: (enc[s], dec[s]) for s in dec if s in enc}:
            cells[(task, tables.label(model, variant))] = both
    effects = [paired_effect(label, {(t, label): v}) for (t, label), v in cells.items()]
    if not effects:
        return None
    rows = [[t, e.name, pct(e.control), pct(e.treatment), ci_text(*e.diff, sign=True), str(len(e.seeds))]
            for (t, _), e in zip(cells, effects)]
    if len(cells) > 1 and (every := paired_effect("all", cells)) is not None:
        rows.append(["**all**", f"{len(cells)} pairs", pct(every.control), pct(every.treatment),
                     ci_text(*every.diff, sign=True), str(len(every.seeds))])
    header = ["task", "model", "encoder OOD", "decoder OOD", "Δ decoder − encoder [95% CI]", "seeds"]
    return markdown_table(header, rows), ", ".join(sorted(spans))


def accuracy_figure(es: Mapping[Key, Entry], config: Mapping[str, Any]):
    """One panel per task: free-running per-token accuracy vs input length per model (mean, 95% band over seeds);
    under-fit entries dashed, the training lengths shaded, chance dotted."""
    tasks = tables.task_order(t for t, _, _ in es)
    shown = {t: {tables.label(*mv): es[(t, *mv)] for mv in tables.key_order(es) if (t, *mv) in es} for t in tasks}
    panels = {}
    for t, lines in shown.items():
        xs = list(range(1, lengths(config, t)[1] + 1))
        panels[t] = {k: (xs, [[r["per_length"][str(x)]["greedy_token"] for x in xs] for r in e.runs])
                     for k, e in lines.items()}
    return length_curves_figure(
        panels, {t: lengths(config, t)[0] for t in tasks}, xlabel="input length",
        ylabel="free-running per-token accuracy (%)", classes={t: ALL_TASKS[t].output_size for t in tasks},
        dashed={t: {k for k, e in lines.items() if e.underfit} for t, lines in shown.items()},
        dashed_label=f"dashed: ≥1 run under-fit (in-dist < {pct(config['min_train_accuracy'])}%)",
        title="Decoder-only: accuracy vs input length (free-running; mean over seeds, 95% CI band)")


def protocol_line(config: Mapping[str, Any], runs: Sequence[dict], results: Mapping[str, Any]) -> str:
    """The page's first paragraph: preset, lengths, stopping, batch, settings, seeds, run facts."""
    spans = "; ".join(f"{t} 1..{n} → {m}" for t in tables.task_order(r["task"] for r in runs)
                      for n, m in [lengths(config, t)])
    settings: dict[str, set[str]] = {}
    for r in runs:
        settings.setdefault(r["model"], set()).add(setting(r))
    chosen = "; ".join(f"{k} " + ", ".join(sorted(v)) for k, v in settings.items())
    return (f"Preset `{config['preset']}`, decoder-only (input, separator, answer, END; loss on the answer and END): "
            f"training → longest test input length: {spans}; {stopping_text(config)}, batch {config['batch_size']}; "
            f"{chosen}; {len({r['seed'] for r in runs})} seeds. " + run_facts(results, runs))


def protocol_differences(config: Mapping[str, Any]) -> list[str]:
    """Where our protocol differs from Kazemnejad et al.'s (``published.json``), then the fixed differences."""
    block = config["transformer_lm"]
    ours = {"model": f"{block['num_layers']} layers, d_model {block['d_model']}, {block['num_heads']} heads",
            "training steps": f"≤ {config['num_steps']:,}, train to fit", "batch": config["batch_size"],
            "learning rates": f"{config['learning_rates'][LM]} ({config['recipes'][LM]})", "seeds": config["num_seeds"],
            "test examples per length": config["eval_batch_size"],
            "scores": "per-token and exact match, teacher-forced and free-running"}
    return differences(ours, PUBLISHED["protocol"]["paper"])


def summary_markdown(results: Mapping[str, Any], figures: Sequence[str] = ()) -> str:
    """The whole summary.md from ``results``; ``figures`` are the PNG file names to link."""
    config, runs = results["config"], ok_runs(results)
    floor = config["min_train_accuracy"]
    es = tables.entries(runs, floor)
    out = ["# Length generalization in decoder-only models", "", protocol_line(config, runs, results), "",
           PAGE["statistic"].format(floor=f"{pct(floor)}%")]
    if len({(r["model"], setting(r)) for r in runs}) > len({r["model"] for r in runs}):
        table, chosen = tables.pilot_table(runs)  # a recipe pilot's page leads with its answer
        out += spec_section(ENCODER_PAGE["pilot"], table, chosen="; ".join(f"{m} {s}" for m, s in chosen.items()))
    if es:
        out += spec_section(PAGE["free_token"], metric_table(es, "greedy_token"))
        out += spec_section(PAGE["free_exact"], metric_table(es, "greedy_exact"))
        out += spec_section(PAGE["teacher_forced"], teacher_forced_table(es))
        out += spec_section(PAGE["fit"], "\n".join(tables.fit_counts(es, floor)), tables.fit_table(es))
        if mrr := mrr_table(es):
            out += spec_section(PAGE["mrr"], mrr)
        out += nope_section(es)
        if pairs := encoder_table(es, config):
            out += spec_section(PAGE["encoder"], pairs[0], lengths=pairs[1], run=config["encoder_run"])
        out += protocol_section(PUBLISHED["protocol"], protocol_differences(config))
    return "\n".join(out + summary_tail(results, figures)) + "\n"


def write_report(results: dict[str, Any], workdir: str) -> str:
    """Writes ``summary.md`` and the plot into ``workdir`` (atomically) and returns the summary."""
    import matplotlib

    matplotlib.use("Agg")
    es = tables.entries(ok_runs(results), results["config"]["min_train_accuracy"])
    written = save_figures(workdir, {CURVES_FILE: accuracy_figure(es, results["config"]) if es else None})
    return write_summary(workdir, summary_markdown(results, written))
