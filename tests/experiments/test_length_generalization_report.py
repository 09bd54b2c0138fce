"""The length-generalization report from synthetic results dicts (no training): tables, verdicts, files."""

import math
import os

import matplotlib
import pytest

from attnjax import stats
from attnjax.data import TASKS, ceilings
from experiments.length_generalization import report
from experiments.length_generalization import tables

matplotlib.use("Agg")

N, M = 4, 8  # train lengths 1..4, test lengths 5..8


def _entry(task, model, variant, lr, seed, ood, in_dist, status="ok", per_length=None):
    cell = {"task": task, "model": model, "variant": variant, "lr": lr, "seed": seed}
    cid = "/".join(f"{k}={v}" for k, v in cell.items())
    if status == "failed":
        return cid, {"cell": cell, "status": "failed", "error": "FloatingPointError: loss is nan at step 12"}
    acc = {str(k): in_dist for k in range(1, N + 1)}
    acc.update({str(k): ood for k in range(N + 1, M + 1)})
    acc.update(per_length or {})
    metrics = {"train_accuracy": in_dist, "ood_score": ood, "accuracy_per_length": acc, "num_params": 10,
               "train_seconds": 10.0, "eval_seconds": 2.0, "final_train_loss": 0.1}
    return cid, {"cell": cell, "status": "ok", "metrics": metrics}


def _results(specs, **config):
    """``specs``: tuples of :func:`_entry` arguments."""
    base = dict(preset="cpu", train_max_length=N, test_max_length=M, num_steps=3000, batch_size=32, num_seeds=3,
                first_seed=0, eval_batch_size=128, min_train_accuracy=0.9, randomized_eval="random",
                randomized_max_len=2048, learning_rates={"rnn": "1e-3", "lstm": "1e-3", "transformer": "1e-3"},
                transformer={"num_layers": 2, "d_model": 64, "num_heads": 4, "mlp_dim": 128},
                rnn={"hidden_size": 128}, lstm={"hidden_size": 128})
    base.update(config)
    cells = dict(_entry(*s) for s in specs)
    return {"experiment": "length_generalization", "config": base, "cells": cells,
            "environment": {"jax": "0.7.0", "backend": "cpu", "device_kinds": ["cpu"], "git_commit": "abc123"},
            "num_cells": len(cells), "num_failed": sum(e["status"] == "failed" for e in cells.values())}


def _seeds(task, model, variant, oods, in_dist=1.0, lr="1e-3"):
    in_dist = in_dist if isinstance(in_dist, (list, tuple)) else [in_dist] * len(oods)
    return [(task, model, variant, lr, s, o, i) for s, (o, i) in enumerate(zip(oods, in_dist))]


def _table(markdown, title):
    """The rows of the markdown table under ``title`` as dicts keyed by its header."""
    lines = markdown.split(title, 1)[1].splitlines()[1:]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[start:end]]
    return [dict(zip(rows[0], r)) for r in rows[2:]]


def _paragraph(markdown, tag):
    found = [line for line in markdown.splitlines() if line.startswith(f"**({tag})")]
    return found[0] if found else None


STD, RAND = "dot_product+sinusoidal", "dot_product+sinusoidal+randomized"


def test_table1_grouped_by_tier_with_published_columns():
    specs = []
    for task in ("duplicate_string", "bucket_sort", "reverse_string", "parity_check"):  # not in tier order
        specs += _seeds(task, "lstm", "-", [0.6, 0.6, 0.6]) + _seeds(task, "rnn", "-", [0.55, 0.55, 0.55])
        specs += _seeds(task, "transformer", STD, [0.5, 0.5, 0.5])
    text = report.summary_markdown(_results(specs))
    rows = _table(text, "## Table 1")
    assert [r["task"] for r in rows] == ["parity_check", "reverse_string", "duplicate_string", "bucket_sort"]
    assert [r["tier"] for r in rows] == ["regular", "context_free", "context_sensitive", ""]
    assert list(rows[0])[2:5] == ["rnn", "lstm", f"transformer {STD}"]  # recurrent models first
    by_task = {r["task"]: r for r in rows}
    assert (by_task["parity_check"]["Delétang RNN"], by_task["parity_check"]["Delétang Transformer"],
            by_task["parity_check"]["Delétang LSTM"]) == ("100.0", "52.0", "100.0")
    assert by_task["duplicate_string"]["Delétang LSTM"] == "57.6"
    assert by_task["bucket_sort"]["Delétang Transformer"] == "–"  # no published number
    assert by_task["reverse_string"]["lstm"] == "60.0 [60.0, 60.0] (60.0) · 100.0"


def test_position_blind_ceiling_column_for_sequence_tasks_only():
    specs = _seeds("reverse_string", "lstm", "-", [0.6, 0.6, 0.6]) + _seeds("parity_check", "lstm", "-", [1.0] * 3)
    text = report.summary_markdown(_results(specs))
    by_task = {r["task"]: r for r in _table(text, "## Table 1")}
    in_dist, ood = ceilings.position_blind_ceiling(TASKS["reverse_string"], N, M)
    assert by_task["reverse_string"]["position-blind ceiling"] == f"{100 * ood:.1f} · {100 * in_dist:.1f}"
    assert by_task["parity_check"]["position-blind ceiling"] == "–"  # one output position: no ceiling
    assert report.CEILING_NOTE in text
    assert "position-blind" not in report.summary_markdown(_results(_seeds("parity_check", "lstm", "-", [1.0] * 3)))


def test_published_columns_only_for_models_run():
    text = report.summary_markdown(_results(_seeds("parity_check", "lstm", "-", [1.0, 1.0])))
    header = _table(text, "## Table 1")[0]
    assert "Delétang LSTM" in header and "Delétang RNN" not in header and "Delétang Transformer" not in header


def test_entry_mean_ci_best_in_dist_and_underfit_flag():
    specs = _seeds("reverse_string", "lstm", "-", [0.6, 0.7, 0.8], in_dist=[1.0, 0.95, 0.5])
    specs += _seeds("reverse_string", "rnn", "-", [0.6, 0.7, 0.8], in_dist=[1.0, 0.95, 0.92])
    row = _table(report.summary_markdown(_results(specs)), "## Table 1")[0]
    half = 4.302653 * 0.1 / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n), by hand
    expected = f"70.0 [{100 * (0.7 - half):.1f}, {100 * (0.7 + half):.1f}] (80.0)"
    assert row["lstm"] == f"{expected} · 81.7 ⚠1/3 under-fit"  # in-dist mean (100 + 95 + 50) / 3
    assert row["rnn"] == f"{expected} · 95.7"  # all fit: no flag
    # The floor comes from the config.
    row = _table(report.summary_markdown(_results(specs, min_train_accuracy=0.96)), "## Table 1")[0]
    assert row["lstm"].endswith("⚠2/3 under-fit") and row["rnn"].endswith("⚠2/3 under-fit")


def test_lr_chosen_on_in_distribution_accuracy_not_test_lengths():
    # lr 3e-4 has the better OOD score but the worse in-distribution accuracy: 1e-3 must be chosen.
    specs = _seeds("parity_check", "transformer", STD, [0.50, 0.52, 0.54], in_dist=0.99, lr="1e-3")
    specs += _seeds("parity_check", "transformer", STD, [0.80, 0.82, 0.84], in_dist=0.70, lr="3e-4")
    results = _results(specs, learning_rates={"transformer": "1e-3,3e-4"})
    cell = _table(report.summary_markdown(results), "## Table 1")[0][f"transformer {STD}"]
    assert cell.startswith("52.0 [") and "(84.0)" in cell and "@1e-3" in cell  # best = paper stat over lrs
    assert "under-fit" not in cell  # the under-fit lr is not the averaged one
    es = tables.entries(report.ok_runs(results), 0.9)
    assert es[("parity_check", "transformer", STD)].lr == "1e-3"
    # Ties go to the smaller lr, whatever the order in the file.
    tie = [{"lr": "1e-3", "train_accuracy": 0.9}, {"lr": "3e-4", "train_accuracy": 0.9}]
    assert tables.choose_lr(tie) == "3e-4" and tables.choose_lr(tie[::-1]) == "3e-4"


def _randomized_specs(diffs_by_task, std_by_seed=(0.3, 0.6, 0.9), encoding="sinusoidal"):
    specs = []
    for task, diffs in diffs_by_task.items():
        specs += _seeds(task, "transformer", f"dot_product+{encoding}", list(std_by_seed))
        specs += _seeds(task, "transformer", f"dot_product+{encoding}+randomized",
                        [s + d for s, d in zip(std_by_seed, diffs)])
    return specs


def test_paired_difference_ci_table2():
    # Per seed, the task-averaged difference is 0.10, 0.12, 0.14; the seeds share a large offset
    # (0.3 / 0.6 / 0.9) that pairing removes.
    specs = _randomized_specs({"parity_check": [0.08, 0.12, 0.16], "reverse_string": [0.12, 0.12, 0.12]})
    specs.append(("parity_check", "transformer", STD, "1e-3", 3, 0.5, 1.0))  # no randomized partner: not paired
    text = report.summary_markdown(_results(specs, num_seeds=4))
    (row,) = _table(text, "## Table 2")
    mean, low, high = stats.paired_difference_ci([0.70, 0.72, 0.74], [0.6, 0.6, 0.6])
    assert (mean, low, high) == pytest.approx((0.12, 0.12 - 4.302653 * 0.02 / math.sqrt(3),
                                               0.12 + 4.302653 * 0.02 / math.sqrt(3)), abs=1e-6)
    assert row["Δ randomized − standard [95% CI]"] == f"+12.0 [{100 * low:+.1f}, {100 * high:+.1f}]"
    assert row["seeds"] == "3" and row["parity_check"] == "60.0 → 72.0" and row["Ruoss et al. Δ"].startswith("+12.0")
    _, unpaired_low, _ = stats.mean_ci([0.3 + 0.10, 0.6 + 0.12, 0.9 + 0.14])
    assert unpaired_low < 0.6 < low + 0.6  # a separate interval would not show the gain


def test_table2_overall_row_over_encodings():
    specs = _randomized_specs({"parity_check": [0.1, 0.1, 0.1]}, encoding="sinusoidal")
    specs += _randomized_specs({"parity_check": [0.3, 0.3, 0.3]}, encoding="rope")
    rows = _table(report.summary_markdown(_results(specs)), "## Table 2")
    assert [r["encoding"] for r in rows] == ["sinusoidal", "rope", "**all encodings**"]
    assert [r["Δ randomized − standard [95% CI]"].split()[0] for r in rows] == ["+10.0", "+30.0", "+20.0"]
    assert rows[0]["Ruoss et al. Δ"] == "–" and rows[2]["Ruoss et al. Δ"].startswith("+12.0")


def test_table3_similarity_only_with_several_attentions():
    specs = []
    for attention, ood in (("dot_product", 0.6), ("cosine", 0.7)):
        for task in ("parity_check", "reverse_string"):
            specs += _seeds(task, "transformer", f"{attention}+rope", [ood - 0.02, ood, ood + 0.02])
    specs += _seeds("bucket_sort", "transformer", "cosine+rope", [0.1, 0.1, 0.1])  # not in every cell: left out
    specs += _seeds("parity_check", "transformer", "l2+rope", [0.5] * 3, in_dist=[0.95, 0.5, 0.7])
    specs += _seeds("reverse_string", "transformer", "l2+rope", [0.5] * 3, in_dist=[0.95, 0.95, 0.95])
    text = report.summary_markdown(_results(specs))
    rows = {r["attention"]: r for r in _table(text, "## Table 3")}
    assert rows["dot_product"]["rope"].startswith("60.0 [") and rows["cosine"]["rope"].startswith("70.0 [")
    # In-distribution fit beside every OOD number; runs under the 90% floor are counted, never hidden.
    assert rows["cosine"]["rope"].endswith("· 100.0")
    assert rows["l2"]["rope"].startswith("50.0 [") and rows["l2"]["rope"].endswith("· 83.3 ⚠2/6 under-fit")
    assert "Tasks in every cell (2): parity_check, reverse_string" in text
    assert "## Table 3" not in report.summary_markdown(_results(specs[:6]))  # dot_product alone


def _regular_specs(lstm_parity=1.0, transformer_parity=0.55):
    specs = _seeds("parity_check", "lstm", "-", [lstm_parity] * 3) + _seeds("parity_check", "rnn", "-", [1.0] * 3)
    specs += _seeds("parity_check", "transformer", STD, [transformer_parity - 0.05, transformer_parity,
                                                         transformer_parity - 0.02])
    return specs


def test_claim_regular_agrees_and_differs():
    agrees = _paragraph(report.summary_markdown(_results(_regular_specs())), "a")
    assert "**Agrees**" in agrees and "Differs" not in agrees
    assert "Transformer 52.0" in agrees
    assert "transformer (best standard encoding: dot_product+sinusoidal) 55.0" in agrees
    differs = _paragraph(report.summary_markdown(_results(_regular_specs(lstm_parity=0.6))), "a")
    assert "**Differs**: lstm does not solve parity_check" in differs and "Agrees" not in differs
    assert "Likely reasons" in differs and "training lengths 1..4 (paper 1..40)" in differs
    assert "3,000 training steps (paper 1,000,000)" in differs and "LSTM hidden size 128 (paper 256)" in differs
    assert "per example" not in differs
    per_example = report.summary_markdown(_results(_regular_specs(lstm_parity=0.6), per_example_lengths=True))
    assert "training lengths drawn per example (paper: one length per batch)" in _paragraph(per_example, "a")
    underfit = _regular_specs()
    underfit[-1] = underfit[-1][:6] + (0.5,)  # one transformer seed fits badly in-distribution
    caveat = _paragraph(report.summary_markdown(_results(underfit)), "a")
    assert "**Agrees**" in caveat and "the transformer under-fits parity_check in-distribution (1/3 runs)" in caveat
    solved = _paragraph(report.summary_markdown(_results(_regular_specs(transformer_parity=0.99))), "a")
    assert "**Differs**: the transformer solves parity_check" in solved


def test_claim_regular_needs_every_length():
    # OOD mean 0.95 but one test length at 0.7: not solved "at every length".
    specs = _regular_specs()
    specs[0] = ("parity_check", "lstm", "-", "1e-3", 0, 0.95, 1.0, "ok", {"8": 0.7, "5": 1.0, "6": 1.05, "7": 1.05})
    for s in (1, 2):
        specs[s] = ("parity_check", "lstm", "-", "1e-3", s, 0.95, 1.0, "ok", {"8": 0.7})
    assert "**Differs**: lstm does not solve parity_check" in _paragraph(
        report.summary_markdown(_results(specs)), "a")


def test_claim_memory_agrees_and_differs():
    specs = _seeds("reverse_string", "lstm", "-", [0.6, 0.62, 0.61]) + _seeds("reverse_string", "transformer", STD,
                                                                             [0.55, 0.5, 0.52])
    agrees = _paragraph(report.summary_markdown(_results(specs)), "b")
    assert "**Agrees**" in agrees and "published best without external memory 62.3" in agrees
    assert "under-fit" not in agrees
    underfit = specs + _seeds("reverse_string", "rnn", "-", [0.5, 0.5, 0.5], in_dist=[0.6, 1.0, 1.0])
    caveat = _paragraph(report.summary_markdown(_results(underfit)), "b")
    assert "**Agrees**: none of our models solves them (under-fit in-distribution, so uninformative: 1 of 3 " \
           "models on reverse_string (rnn))" in caveat
    many = underfit + [spec for p in ("rope", "alibi", "t5") for spec in
                       _seeds("reverse_string", "transformer", f"dot_product+{p}", [0.5] * 3, in_dist=0.6)]
    counted = _paragraph(report.summary_markdown(_results(many)), "b")
    assert "so uninformative: 4 of 6 models on reverse_string)" in counted and "reverse_string (" not in counted
    specs += _seeds("reverse_string", "rnn", "-", [1.0, 0.98, 0.99])
    differs = _paragraph(report.summary_markdown(_results(specs)), "b")
    assert "**Differs**: rnn on reverse_string solve(s) it" in differs and "Agrees" not in differs


def test_claim_randomized_verdicts_follow_the_numbers():
    def verdict(diffs, **config):
        paragraph = _paragraph(report.summary_markdown(_results(_randomized_specs(diffs), **config)), "c")
        return paragraph.split("points. ", 1)[1]

    assert verdict({"parity_check": [0.10, 0.12, 0.14]}).startswith("**Agrees**: a significant gain")
    assert verdict({"parity_check": [0.02, 0.03, 0.04]}).startswith("**Agrees in direction, differs in size**")
    none = verdict({"parity_check": [0.05, -0.06, 0.02]})
    assert none.startswith("**Differs**: no significant change") and "Likely reasons" in none
    assert verdict({"parity_check": [-0.10, -0.12, -0.09]}).startswith("**Differs**: randomized positions lower")
    one = verdict({"parity_check": [0.3]}, num_seeds=1)
    assert one.startswith("**Inconclusive**") and "Agrees" not in one
    consecutive = verdict({"parity_check": [0.05, -0.06, 0.02]}, randomized_eval="consecutive")
    assert "positions at test time are consecutive" in consecutive


def test_paragraphs_only_when_their_cells_exist():
    text = report.summary_markdown(_results(_seeds("parity_check", "lstm", "-", [1.0, 1.0, 1.0])))
    assert _paragraph(text, "a") is None and _paragraph(text, "b") is None and _paragraph(text, "c") is None
    assert "## Agreement" not in text and "## Table 2" not in text


def test_write_report_files_failed_cells_and_no_temp_files(tmp_path):
    specs = _regular_specs() + _randomized_specs({"reverse_string": [0.1, 0.12, 0.14]})
    specs += _seeds("modular_arithmetic", "lstm", "-", [1.0, 1.0, 0.4], in_dist=[1.0, 1.0, 0.5])
    specs.append(("bucket_sort", "lstm", "-", "1e-3", 0, 0.0, 0.0, "failed"))
    text = report.write_report(_results(specs), str(tmp_path))
    assert (tmp_path / "summary.md").read_text(encoding="utf-8") == text
    for name in ("accuracy_vs_length.png", "encoding_heatmap.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{name}]({name})" in text
    assert "## Failed cells (1)" in text
    assert "- `task=bucket_sort/model=lstm/variant=-/lr=1e-3/seed=0`: FloatingPointError: loss is nan" in text
    assert "1 failed" in text and "wall time 3m36s" in text  # 18 ok runs x 12 s
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp") or f.startswith(".")]
    # Recurrent models only: no heatmap, and the summary does not link one.
    other = tmp_path / "recurrent"
    text = report.write_report(_results(_seeds("parity_check", "lstm", "-", [1.0, 1.0])), str(other))
    assert sorted(os.listdir(other)) == ["accuracy_vs_length.png", "summary.md"] and "heatmap" not in text


def test_report_without_ok_runs_lists_the_failures(tmp_path):
    results = _results([("parity_check", "lstm", "-", "1e-3", 0, 0.0, 0.0, "failed")])
    text = report.write_report(results, str(tmp_path))
    assert "0 runs ok, 1 failed" in text and "## Failed cells (1)" in text and "## Table 1" not in text
    assert os.listdir(tmp_path) == ["summary.md"]


def test_accuracy_figure_panels_bands_chance_and_underfit_dashes():
    import matplotlib.pyplot as plt

    tasks = list(tables.TASKS)  # all 15: a 3 x 5 grid
    specs = [s for t in tasks for s in _seeds(t, "lstm", "-", [0.6, 0.7, 0.8])]
    specs += _seeds("modular_arithmetic", "rnn", "-", [0.5, 0.5, 0.5], in_dist=[1.0, 0.3, 1.0])
    results = _results(specs)
    es = tables.entries(report.ok_runs(results), 0.9)
    fig = report.accuracy_figure(es, results["config"])
    try:
        panels = [ax for ax in fig.axes if ax.axison]
        assert len(panels) == 15 and len(fig.axes) == 15
        modular = next(ax for ax in panels if ax.get_title().startswith("modular_arithmetic"))
        chance = [ln for ln in modular.lines if ln.get_linestyle() == ":"]
        assert chance and chance[0].get_ydata()[0] == pytest.approx(1 / 5)  # 5 output classes
        styles = sorted(ln.get_linestyle() for ln in modular.lines if ln.get_linestyle() != ":")
        assert styles == ["-", "--"]  # rnn under-fit in one seed: dashed; lstm solid
        assert modular.collections  # CI bands
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert "lstm" in legend and any("under-fit" in t for t in legend)
    finally:
        plt.close(fig)
