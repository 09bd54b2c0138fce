"""Tables and plots for the length-generalization experiment (pure functions of results.json)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

Run = dict[str, Any]


def _grouped(runs: Sequence[Run], key: str) -> tuple[list[str], list[str], dict[tuple[str, str], list[float]]]:
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    models = list(dict.fromkeys(r["model"] for r in runs))
    values: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        values.setdefault((r["task"], r["model"]), []).append(float(r[key]))
    return tasks, models, values


def _cell(xs: list[float] | None) -> str:
    if not xs:
        return "–"
    spread = float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0
    return f"{100 * np.mean(xs):.1f} ± {100 * spread:.1f} (best {100 * max(xs):.1f})"


def markdown_table(runs: Sequence[Run], key: str = "ood_score") -> str:
    """Task × model table of ``key`` in percent: ``mean ± std over seeds (best seed)``."""
    tasks, models, values = _grouped(runs, key)
    lines = ["| task | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for t in tasks:
        lines.append(f"| {t} | " + " | ".join(_cell(values.get((t, m))) for m in models) + " |")
    return "\n".join(lines)


def summary_markdown(results: dict[str, Any]) -> str:
    """The whole ``summary.md``: settings line, OOD table, in-distribution table."""
    c, runs = results["config"], results["runs"]
    seeds = sorted({r["seed"] for r in runs})
    n, m = c["train_max_length"], c["test_max_length"]
    head = (f"# Length generalization\n\nTrained on input lengths 1..{n}, tested on every length 1..{m}; "
            f"{c['num_steps']} steps, batch {c['batch_size']}, Adam lr {c['learning_rate']}, clip "
            f"{c['max_grad_norm']}, seeds {seeds}. Per-token accuracy (%) at the blank positions, "
            f"mean ± std over seeds (best seed).\n")
    ood = f"\n## OOD score: mean accuracy over lengths {n + 1}..{m}\n\n" + markdown_table(runs, "ood_score") + "\n"
    ind = f"\n## In-distribution accuracy: lengths 1..{n}\n\n" + markdown_table(runs, "train_accuracy") + "\n"
    note = ("\nChance is 50% on these binary tasks. Delétang et al. (2022) report (best of 10 seeds × 3 lrs, "
            "test lengths 41..500) LSTM / Transformer: parity 100 / 52.0, reverse_string 60.9 / 62.3, "
            "duplicate_string 57.6 / 52.8.\n")
    return head + ood + ind + note


def accuracy_figure(results: dict[str, Any]):
    """One panel per task: accuracy vs test length per model (mean over seeds, band = min..max)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    runs, n = results["runs"], results["config"]["train_max_length"]
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    models = list(dict.fromkeys(r["model"] for r in runs))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.4), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        for model in models:
            sel = [r for r in runs if r["task"] == task and r["model"] == model]
            if not sel:
                continue
            lengths = sorted(int(k) for k in sel[0]["accuracy_per_length"])
            acc = np.array([[r["accuracy_per_length"][str(k)] for k in lengths] for r in sel])
            line, = ax.plot(lengths, acc.mean(0), label=model)
            ax.fill_between(lengths, acc.min(0), acc.max(0), alpha=0.2, color=line.get_color())
        ax.axvline(n + 0.5, color="gray", linestyle="--", linewidth=1)
        ax.axhline(0.5, color="gray", linestyle=":", linewidth=1)
        ax.set_title(task)
        ax.set_xlabel("input length")
        ax.set_ylim(0.0, 1.02)
    axes[0][0].set_ylabel("per-token accuracy")
    axes[0][-1].legend(loc="lower left")
    fig.tight_layout()
    return fig
