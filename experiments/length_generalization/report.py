"""The length-generalization report: ``summary.md`` and PNG plots, built from results.json alone.

:func:`write_report` is the experiment's ``report`` hook. Everything it writes derives from the results
dict (config, environment, cells); the numbers and tables live in
:mod:`experiments.length_generalization_tables`, the published comparison paragraphs and the figures here.
Every verdict paragraph is computed from the numbers: it says "Agrees" only when ours show what the paper
claims, and lists where our protocol differs from the paper's when they do not.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from attnjax import stats
from attnjax.data import TASKS
from attnjax.data.ceilings import position_blind_ceiling
from attnjax.results import save_and_close, write_text
from experiments.length_generalization import tables
from attnjax.sweep.report import ci_text, pct
from attnjax.sweep import ok_runs
from attnjax.sweep.report import summary_tail
from experiments.length_generalization.tables import DELETANG, PAPER, RUOSS_GAIN, SOLVED, Entry, Key

SUMMARY_FILE, CURVES_FILE, HEATMAP_FILE = "summary.md", "accuracy_vs_length.png", "encoding_heatmap.png"
MAPS_FILE = "attention_maps.png"
MAX_NAMED = 3  # a verdict names at most this many under-fit models per task, and counts the rest


# --------------------------------------------------------------------------- protocol

def _seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _lrs(config: Mapping[str, Any], models: Sequence[str]) -> dict[str, str]:
    lrs = config.get("learning_rates", {})
    return {m: str(lrs[m]) for m in models if m in lrs}


def protocol_line(config: Mapping[str, Any], runs: Sequence[dict], results: Mapping[str, Any]) -> str:
    n, m = config["train_max_length"], config["test_max_length"]
    lrs = _lrs(config, list(dict.fromkeys(r["model"] for r in runs)))
    lr_text = (f"lr {next(iter(lrs.values()))} for every model" if len(set(lrs.values())) == 1
               else "lr " + "; ".join(f"{k} {v}" for k, v in lrs.items()))
    seeds = sorted({r["seed"] for r in runs})
    wall = sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in runs)
    env = results.get("environment", {})
    failed = sum(e.get("status") == "failed" for e in results.get("cells", {}).values())
    return (f"Preset `{config.get('preset', '?')}`: trained on input lengths 1..{n}, tested on every length "
            f"1..{m} (OOD score = mean per-token accuracy over lengths {n + 1}..{m}); {config['num_steps']:,} "
            f"steps, batch {config['batch_size']}, {lr_text}; {len(seeds)} seeds ({config.get('num_seeds', '?')} "
            f"configured). {len(runs)} runs ok, {failed} failed; wall time "
            f"{_seconds(wall)} (train + eval). jax {env.get('jax', '?')} on {env.get('backend', '?')} "
            f"({', '.join(env.get('device_kinds', [])) or '?'}), commit {env.get('git_commit', '?')}.")


STATISTIC = (
    "**Statistic.** Each entry reads `OOD mean [95% CI] (best) · in-dist`, in %: the mean over seeds of "
    "the OOD score with its 95% Student-t interval over seeds (clipped to [0, 100]; `n=1`: one seed, no "
    "interval); in parentheses the paper's statistic, the best run (best seed, and with several learning "
    "rates the best over learning rates and seeds; Delétang et al. also take the best of five encodings "
    "for the Transformer); after the dot, the mean in-distribution accuracy (lengths 1..{n}), so every "
    "OOD number is read next to how well the model fit its training range. With several learning rates, "
    "mean and interval use, per (task, model, variant), the lr with the best mean **in-distribution** "
    "accuracy (shown as `@lr`); the test lengths never choose it. `⚠k/n under-fit`: k of the n averaged "
    "runs stayed below {floor} in-distribution accuracy; their OOD score says little about length "
    "generalization.")


def protocol_differences(config: Mapping[str, Any], models: Sequence[str]) -> list[str]:
    """Where our protocol is smaller than Delétang et al.'s, as short phrases (empty when identical)."""
    c, out = config, []
    n, m = c["train_max_length"], c["test_max_length"]
    if n != PAPER["train_max_length"]:
        out.append(f"training lengths 1..{n} (paper 1..{PAPER['train_max_length']})")
    if m != PAPER["test_max_length"]:
        out.append(f"test lengths {n + 1}..{m} (paper 41..{PAPER['test_max_length']})")
    for key, template in (("num_steps", "{:,} training steps"), ("batch_size", "batch {:,}"),
                          ("num_seeds", "{:,} seeds"), ("eval_batch_size", "{:,} test examples per length")):
        if key in c and c[key] != PAPER[key]:
            out.append(f"{template.format(c[key])} (paper {PAPER[key]:,})")
    if c.get("per_example_lengths"):
        out.append("training lengths drawn per example (paper: one length per batch)")
    lr_counts = [len([x for x in v.split(",") if x.strip()]) for v in _lrs(c, models).values()]
    if lr_counts and min(lr_counts) < PAPER["num_lrs"]:
        out.append(f"{min(lr_counts)} learning rate{'s' * (min(lr_counts) > 1)} per model "
                   f"(paper sweeps {PAPER['num_lrs']})")
    if "transformer" in models and isinstance(c.get("transformer"), Mapping):
        diff = [f"{k} {c['transformer'][k]} (paper {v})" for k, v in PAPER["transformer"].items()
                if k in c["transformer"] and c["transformer"][k] != v]
        if diff:
            out.append("Transformer " + ", ".join(diff))
    for model in tables.RECURRENT_ORDER:
        size = c.get(model, {}).get("hidden_size") if model in models and isinstance(c.get(model), Mapping) else None
        if size is not None and size != PAPER["hidden_size"]:
            out.append(f"{model.upper()} hidden size {size} (paper {PAPER['hidden_size']})")
    return out


def _reasons(config: Mapping[str, Any], models: Sequence[str], extra: Sequence[str] = ()) -> str:
    found = [*extra, *protocol_differences(config, models)]
    return (" Likely reasons: " + "; ".join(found) + ".") if found else " Our protocol matches the paper's."


# --------------------------------------------------------------------------- verdict paragraphs

def _best_text(name: str, e: Entry, n: int) -> str:
    """The best run (paper statistic) and how many seeds at the chosen lr solve the task too."""
    worst = tables.worst_length(e.best_run, n)
    solved = "solved" if worst >= SOLVED else "not solved"
    seeds = sum(tables.worst_length(r, n) >= SOLVED for r in e.runs)
    return (f"{name} {pct(e.best)} (worst length {pct(worst)}, {solved}; seed mean {pct(e.ci[0])}, "
            f"{seeds}/{len(e.runs)} seeds solve)")


def _underfit_note(name: str, task: str, e: Entry) -> list[str]:
    return [f"{name} under-fits {task} in-distribution ({e.underfit}/{len(e.runs)} runs)"] if e.underfit else []


def claim_regular(es: Mapping[Key, Entry], config: Mapping[str, Any]) -> str | None:
    """(a) RNN/LSTM solve parity_check and modular_arithmetic at every length; the Transformer does not."""
    n, parts, differs, extra, partial = config["train_max_length"], [], [], [], []
    for task in ("parity_check", "modular_arithmetic"):
        recurrent = [(m, es[(task, m, "-")]) for m in ("rnn", "lstm") if (task, m, "-") in es]
        transformer = tables.best_standard_transformer(es, task)
        if not recurrent or transformer is None:
            continue
        ours = [_best_text(m, e, n) for m, e in recurrent]
        ours.append(_best_text(f"transformer (best standard encoding: {transformer[0]})", transformer[1], n))
        published = ", ".join(f"{tables.DELETANG_NAMES[m]} {DELETANG[m][task]:.1f}" for m in ("rnn", "lstm",
                                                                                              "transformer"))
        parts.append(f"{task}: {'; '.join(ours)} — published {published}")
        for m, e in recurrent:
            if tables.worst_length(e.best_run, n) < SOLVED:
                differs.append(f"{m} does not solve {task}")
                extra += _underfit_note(m, task, e)
            elif any(tables.worst_length(r, n) < SOLVED for r in e.runs):
                partial.append(f"not every seed of {m} solves {task}")
        if tables.worst_length(transformer[1].best_run, n) >= SOLVED:
            differs.append(f"the transformer solves {task}")
        elif transformer[1].underfit:
            partial.append(f"the transformer under-fits {task} in-distribution ({transformer[1].underfit}/"
                           f"{len(transformer[1].runs)} runs), so its failure says little")
    if not parts:
        return None
    head = (f"**(a) Regular tasks: RNN/LSTM generalize at every length, the Transformer does not** (Delétang "
            f"et al.). Ours, best run (solved = ≥ {100 * SOLVED:.0f}% at every test length {n + 1}.."
            f"{config['test_max_length']}): " + " | ".join(parts) + ". ")
    if not differs:
        caveat = f" (by the paper's best-run statistic; caveats: {'; '.join(partial)})" if partial else ""
        return head + f"**Agrees**: the recurrent models solve these tasks and the Transformer does not{caveat}."
    return head + f"**Differs**: {'; '.join(differs)}." + _reasons(config, ["rnn", "lstm", "transformer"], extra)


def claim_memory(es: Mapping[Key, Entry], config: Mapping[str, Any]) -> str | None:
    """(b) No model without external memory generalizes on reverse_string / duplicate_string."""
    n, parts, solvers, under = config["train_max_length"], [], [], []
    for task in ("reverse_string", "duplicate_string"):
        ours = {tables.label(m, v): e for (t, m, v), e in es.items() if t == task}
        if not ours:
            continue
        name, top = max(ours.items(), key=lambda item: item[1].best)
        solved = [k for k, e in ours.items() if tables.worst_length(e.best_run, n) >= SOLVED]
        solvers += [f"{k} on {task}" for k in solved]
        underfit = [k for k, e in ours.items() if e.underfit]
        if underfit:  # names only while they stay readable; a full grid has a dozen per task
            names = f" ({', '.join(underfit)})" if len(underfit) <= MAX_NAMED else ""
            under.append(f"{len(underfit)} of {len(ours)} models on {task}{names}")
        published = max(DELETANG[m][task] for m in ("rnn", "lstm", "transformer"))
        parts.append(f"{task}: best of our {len(ours)} models {_best_text(name, top, n)}, {len(solved)} solve it "
                     f"— published best without external memory {published:.1f}")
    if not parts:
        return None
    head = ("**(b) No model without external memory generalizes on reverse/duplicate string** (Delétang et al.; "
            f"only memory-augmented RNNs do). Ours, best run (solved = ≥ {100 * SOLVED:.0f}% at every test length): "
            + " | ".join(parts) + ". ")
    if not solvers:
        caveat = f" (under-fit in-distribution, so uninformative: {'; '.join(under)})" if under else ""
        return head + f"**Agrees**: none of our models solves them{caveat}."
    models = list(dict.fromkeys(m for _, m, _ in es))
    return head + f"**Differs**: {'; '.join(solvers)} solve(s) it." + _reasons(
        config, models, ["shorter test lengths are easier to reach from the training range"])


def claim_randomized(effects: Sequence[tables.Effect], config: Mapping[str, Any]) -> str | None:
    """(c) Randomized positions improve the Transformer's OOD accuracy on average (+12.0, Ruoss et al.)."""
    if not effects:
        return None
    e = effects[-1]
    mean, low, high = (100 * x for x in e.diff)
    head = (f"**(c) Randomized positions improve the Transformer's OOD accuracy** (Ruoss et al.: "
            f"+{RUOSS_GAIN:.1f} points on average over 15 tasks and five encodings). Ours ({e.name}, "
            f"{len(e.by_task)} tasks, {len(e.seeds)} paired seeds): {pct(e.standard)} → {pct(e.randomized)}, "
            f"Δ = {ci_text(*e.diff, sign=True)} points. ")
    extra = []
    if config.get("randomized_eval", "random") != "random":
        extra.append(f"positions at test time are {config['randomized_eval']} (Ruoss et al. randomize them too)")
    if config.get("randomized_max_len", PAPER["randomized_max_len"]) != PAPER["randomized_max_len"]:
        extra.append(f"positions drawn from [0, {config['randomized_max_len']}) (paper 2048)")
    if len(e.by_task) < 15:
        extra.append(f"{len(e.by_task)} of the 15 tasks")
    reasons = _reasons(config, ["transformer"], extra)
    if not math.isfinite(low):
        return head + "**Inconclusive**: one seed gives no interval, so no agreement is claimed." + reasons
    if low > 0 and low <= RUOSS_GAIN <= high:
        return head + f"**Agrees**: a significant gain, and +{RUOSS_GAIN:.1f} lies inside our interval."
    if low > 0:
        size = "smaller" if high < RUOSS_GAIN else "larger"
        return (head + f"**Agrees in direction, differs in size**: a significant gain, {size} than "
                f"+{RUOSS_GAIN:.1f} (outside our interval)." + reasons)
    if high < 0:
        return head + "**Differs**: randomized positions lower OOD accuracy here." + reasons
    return head + f"**Differs**: no significant change (the interval includes 0; mean {mean:+.1f})." + reasons


# --------------------------------------------------------------------------- figures

def _grid(n: int, cols: int = 5, extra_height: float = 0.0):
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * max(cols, 2), 2.9 * rows + 0.4 + extra_height),
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return plt, fig, list(axes.flat[:n])


def accuracy_figure(es: Mapping[Key, Entry], config: Mapping[str, Any]):
    """One panel per task: accuracy vs length per model (mean, 95% CI band over seeds, chosen lr)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n, floor = config["train_max_length"], config.get("min_train_accuracy")
    columns, tasks = tables.key_order(es), tables.task_order(t for t, _, _ in es)
    legend_height = 0.17 * -(-(len(columns) + 3) // 3) + 0.15  # inches below the panels
    plt, fig, axes = _grid(len(tasks), extra_height=legend_height)
    cmap = plt.get_cmap("tab10" if len(columns) <= 10 else "tab20")
    colors = {mv: cmap(i % cmap.N) for i, mv in enumerate(columns)}
    for ax, task in zip(axes, tasks):
        ax.axvspan(0.5, n + 0.5, color="0.85", zorder=0)
        if task in TASKS:
            ax.axhline(1.0 / TASKS[task].output_size, color="0.4", linestyle=":", linewidth=1)
        for mv in columns:
            e = es.get((task, *mv))
            if e is None:
                continue
            lengths = sorted(set.intersection(*(set(map(int, r["accuracy_per_length"])) for r in e.runs)))
            acc = np.array([[r["accuracy_per_length"][str(k)] for k in lengths] for r in e.runs])
            mean, low, high = stats.mean_ci_per_column(acc)
            ax.plot(lengths, mean, color=colors[mv], linewidth=1.2, linestyle="--" if e.underfit else "-")
            if acc.shape[0] > 1:
                ax.fill_between(lengths, np.clip(low, 0, 1), np.clip(high, 0, 1), color=colors[mv],
                                alpha=0.15 if len(columns) <= 6 else 0.06, linewidth=0)
        ax.set_title(f"{task} ({tables.tier_of(task)})", fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=7)
    for ax in axes:
        ax.set_xlabel("input length", fontsize=8)
        ax.set_ylabel("per-token accuracy", fontsize=8)
    handles = [Line2D([], [], color=colors[mv], label=tables.label(*mv)) for mv in columns]
    handles += [Patch(color="0.85", label=f"training lengths 1..{n}"),
                Line2D([], [], color="0.4", linestyle=":", label="chance (1 / output classes)"),
                Line2D([], [], color="0.2", linestyle="--",
                       label=f"dashed: ≥1 run under-fit (in-dist < {pct(floor)}%)" if floor is not None
                       else "dashed: under-fit")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle("Accuracy vs input length (mean over seeds, 95% CI band; lr chosen in-distribution)", fontsize=10)
    fig.tight_layout(rect=(0, legend_height / fig.get_size_inches()[1], 1, 1))
    return fig


def encoding_heatmap(es: Mapping[Key, Entry]):
    """Encoding (× standard/randomized) × task heatmap of mean OOD accuracy; None without attention models."""
    rows = [mv for mv in tables.key_order(es) if mv[1] != "-"]
    if not rows:
        return None
    tasks = tables.task_order(t for t, _, _ in es)
    several = len({(m, tables.parse_variant(v)[0]) for m, v in rows}) > 1
    values = np.array([[es[(t, *mv)].ci[0] if (t, *mv) in es else np.nan for t in tasks] for mv in rows])
    with np.errstate(invalid="ignore"):
        values = np.column_stack([values, np.nanmean(values, axis=1)]) if values.size else values
    plt, fig, (ax,) = _grid(1)
    fig.set_size_inches(1.0 + 0.75 * (len(tasks) + 1) + 2.0, 1.2 + 0.38 * len(rows))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    # An entry with under-fit runs (below the in-distribution floor) is marked, as in the tables.
    underfit = [[(t, *mv) in es and es[(t, *mv)].underfit > 0 for t in tasks] + [False] for mv in rows]
    for (i, j), v in np.ndenumerate(values):
        if math.isfinite(v):
            mark = "⚠" if underfit[i][j] else ""
            ax.text(j, i, f"{100 * v:.0f}{mark}", ha="center", va="center", fontsize=7,
                    color="w" if v < 0.6 else "k")
    names = [tables.label(*mv) if several else mv[1].split("+", 1)[1] for mv in rows]
    ax.set_yticks(range(len(rows)), labels=names, fontsize=7)
    ax.set_xticks(range(len(tasks) + 1), labels=[*tasks, "mean"], fontsize=7, rotation=45, ha="right")
    fig.colorbar(image, ax=ax, label="mean OOD accuracy")
    ax.set_title("Mean OOD accuracy by encoding (standard / randomized) and task\n"
                 "⚠: some seeds under-fit their training lengths", fontsize=9)
    fig.tight_layout()
    return fig


def attention_map_figure(runs: Sequence[dict], config: Mapping[str, Any]):
    """One row per attention model variant that stored maps: its last-layer weights (mean over heads) on one
    example at the longest training length and at the longest test length; None if no run stored any."""
    import matplotlib.pyplot as plt

    with_maps = [r for r in runs if r.get("attention_maps")]
    if not with_maps:
        return None
    fig, axes = plt.subplots(len(with_maps), 2, figsize=(7.0, 3.2 * len(with_maps)), squeeze=False)
    for row, run in zip(axes, with_maps):
        for ax, (length, weights) in zip(row, sorted(run["attention_maps"].items(), key=lambda kv: int(kv[0]))):
            ax.imshow(np.asarray(weights), cmap="viridis", vmin=0.0)
            where = "training" if int(length) <= config["train_max_length"] else "test"
            title = f"{tables.label(run['model'], run['variant'])}\n{run['task']}, input length {length} ({where})"
            ax.set_title(title, fontsize=7)
            ax.set_xlabel("key position", fontsize=7)
            ax.set_ylabel("query position", fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the report

CEILING_NOTE = (
    "Position-blind ceiling (OOD · in-dist): the best accuracy of any predictor that emits one token at every "
    "output position of an example, computed from the task's data alone (2,048 examples per length, no model). "
    "A Transformer without positional encoding and without a causal mask is such a predictor (its blank "
    "positions all get the same representation); a score at this ceiling is the majority-token rule, not "
    "length generalization. Classification tasks (one output position) have none.")


def position_blind_ceilings(tasks: Sequence[str], config: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """task -> (in-dist, OOD) :func:`~attnjax.data.ceilings.position_blind_ceiling` at the config's lengths, for
    the known sequence tasks of ``tasks``."""
    known = [TASKS[t] for t in tasks if t in TASKS and not TASKS[t].is_classification]
    return {t.name: position_blind_ceiling(t, config["train_max_length"], config["test_max_length"]) for t in known}


def summary_markdown(results: Mapping[str, Any], figures: Sequence[str] = ()) -> str:
    """The whole summary.md from ``results``; ``figures`` are the PNG file names to link."""
    config, runs = results["config"], ok_runs(results)
    floor = config.get("min_train_accuracy")
    es = tables.entries(runs, floor)
    out = ["# Length generalization", "", protocol_line(config, runs, results), "",
           STATISTIC.format(n=config["train_max_length"], floor=f"{pct(floor)}%" if floor is not None else "–")]
    if es:
        ceilings = position_blind_ceilings(sorted({t for t, _, _ in es}), config)
        out += ["", "## Table 1: OOD accuracy by task and model", "", tables.table1(es, floor, ceilings), "",
                "Published columns: Delétang et al. (2022), best run over 10 seeds × 3 learning rates (Transformer: "
                "best of five encodings), test lengths 41..500."]
        if ceilings:
            out += ["", CEILING_NOTE]
    effects = tables.randomization_effects(es)
    if effects:
        out += ["", "## Table 2: randomized vs standard positions (Transformer)", "", tables.table2(effects), "",
                "Cells: standard → randomized OOD mean (%). Δ: paired difference (same task, seed, attention, "
                "encoding; each version at its in-distribution lr), averaged over tasks per seed, 95% t-interval "
                "over seeds."]
    similarity = tables.table3(es, floor)
    if similarity:
        out += ["", "## Table 3: OOD accuracy by similarity function and encoding", "",
                "Each entry: OOD mean over tasks and seeds [95% CI over seeds of the task average] · mean "
                "in-distribution accuracy; ⚠ counts the runs below the under-fit floor.", "", similarity]
    claims = [p for p in (claim_regular(es, config), claim_memory(es, config), claim_randomized(effects, config))
              if p]
    if claims:
        out += ["", "## Agreement with the published claims", "", *[line for p in claims for line in (p, "")]]
        out.pop()
    out += summary_tail(results, figures)
    return "\n".join(out) + "\n"


def write_report(results: dict[str, Any], workdir: str) -> str:
    """Writes ``summary.md`` and the PNG plots into ``workdir`` (atomically) and returns the summary."""
    import matplotlib

    matplotlib.use("Agg")

    config = results["config"]
    es = tables.entries(ok_runs(results), config.get("min_train_accuracy"))
    written = []
    for name, make in ((CURVES_FILE, lambda: accuracy_figure(es, config) if es else None),
                       (HEATMAP_FILE, lambda: encoding_heatmap(es)),
                       (MAPS_FILE, lambda: attention_map_figure(ok_runs(results), config))):
        fig = make()
        if fig is None:
            continue
        save_and_close(os.path.join(workdir, name), fig, dpi=110, bbox_inches="tight")  # keep the legend
        written.append(name)
    text = summary_markdown(results, written)
    write_text(os.path.join(workdir, SUMMARY_FILE), text)
    return text
