"""Ours vs published as data: claims checked from their spec, the sections a page writes around them, and the
per-seed helpers the study reports share."""

import math

import pytest

from attnjax.sweep import layouts, published, report


def test_check_fills_the_claim_and_takes_tolerance_direction_and_difference_from_the_spec():
    spec = {"claim": "{name} at n={n}", "published": 0.9, "tolerance": 0.05}
    agrees = published.check(spec, [0.84, 0.86, 0.85], name="cnn", n=4)
    assert (agrees.claim, agrees.verdict) == ("cnn at n=4", "agrees")  # 0.9 lies in [~0.83, ~0.87] widened by 0.05
    assert published.check(spec, [0.84, 0.86, 0.85], tolerance=0.0, name="cnn", n=4).verdict == "differs"
    assert published.check(spec, [0.9], name="cnn", n=4).verdict == "inconclusive"  # one seed: no interval
    assert published.check(spec, [0.89, 0.91], caveat="under-fit", name="cnn", n=4).row()[-1] == \
        "inconclusive (under-fit)"
    direction = {"claim": "{a} − {b}", "direction": "{a} ahead"}
    ahead = published.check(direction, [0.10, 0.12, 0.11], a="search", b="encdec")
    assert ahead.row() == ["search − encdec", ahead.row()[1], "search ahead", "agrees"]
    assert published.check(direction, [-0.10, -0.12, -0.11], a="x", b="y").verdict == "differs"
    assert published.check(direction, [-0.1, 0.1, 0.0], a="x", b="y").verdict == "inconclusive"
    gain = published.check({"claim": "gain", "published": 0.12, "difference": True}, {1: 0.1, 2: 0.2}.values())
    assert gain.difference and gain.row()[2] == "+12.0" and gain.change == "no significant change"
    assert published.compare("c", [0.2, 0.21, 0.22], 0.0).change == "significant gain"


def test_sections_are_written_from_templates_around_the_table():
    spec = {"before": [["- (a) {x}", "- (b) literal {{braces}}"]], "after": ["Agrees within {points:.0f} points."],
            "columns": ["claim", "ours", "published", "verdict", "note"]}
    rows = [[*published.compare("c", [0.5, 0.5], 0.5).row(), "2/2 seeds"]]
    lines = published.comparison_section(spec, rows, x="first", points=5.0)
    assert lines[:5] == ["", "## Ours vs published", "", "- (a) first\n- (b) literal {braces}", ""]
    assert lines[5].splitlines()[0] == "| claim | ours | published | verdict | note |"
    assert lines[5].splitlines()[2].endswith("| agrees | 2/2 seeds |") and lines[6:] == ["", "Agrees within 5 points."]
    protocol = {"heading": "Differences", "end": ".", "lines": ["{steps:,} steps (paper: 8,000)"]}
    assert published.protocol_section(protocol, ["ours only"], steps=1000) == [
        "", "## Differences", "", "- 1,000 steps (paper: 8,000).", "- ours only."]
    assert published.protocol_section({"heading": "D"})[-1] == "None."
    assert published.protocol_section({"heading": "P", "text": ["a {not a field}", "b"]})[-1] == "a {not a field}\nb"
    assert published.differences({"batch": 128, "seeds": 3}, {"batch": "128", "seeds": 10}) == ["seeds: 3 (paper 10)"]


def test_seed_values_over_a_band_of_lengths_and_curves_over_common_seeds():
    per_length = lambda *accs: {"per_length": {str(k): {"acc": a} for k, a in enumerate(accs, 1)}}  # noqa: E731
    seeds = {1: {"acc": 0.5, **per_length(1.0, 0.5, 0.0)}, 0: {"acc": None, **per_length(0.0, 1.0)}}
    assert report.seed_values(seeds, "acc") == {1: 0.5}  # seed order, a missing metric left out
    assert report.seed_values(seeds, "acc", range(2, 4)) == {0: 1.0, 1: 0.25}  # the lengths each run scored
    assert report.seed_values(seeds, "acc", range(5, 6)) == {}
    assert report.mean([]) is None and report.mean([1.0, 2.0]) == 1.5
    assert report.seed_curve([(1, {0: 0.1, 1: 0.2}), (2, {1: 0.3, 2: 0.4})]) == ([1, 2], [[0.2, 0.3]])
    assert report.seed_curve([(1, {0: 0.1}), (2, {1: 0.3})]) is None


def test_layout_table_rows_deltas_vs_baseline_and_change():
    run = lambda acc, fit=1.0: {"acc": acc, "train_accuracy": fit, "num_params": 7}  # noqa: E731
    groups = {("base", 1): {0: run(0.5), 1: run(0.7)}, ("base", 2): {0: run(0.4), 1: run(0.6)},
              ("other", 1): {0: run(0.6), 1: run(0.8)}}
    layout = layouts.Layout("t", "f.png", "x", [("x=1", 1, (1,), "acc"), ("x=2", 2, (2,), "acc")])
    lines = layouts.layout_table(groups, layout, ["other", "base", "absent"], baseline=("base", "base"),
                                 params=True).splitlines()
    assert lines[0] == "| model | params | x=1 | train | Δ vs base | x=2 | train | Δ vs base | Δ x=2 − x=1 |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| other", "| base"]  # labels without runs: no row
    other, base = (line.split(" | ") for line in lines[2:])
    assert other[4] == "+10.0 [+10.0, +10.0]" and other[5:8] == ["–", "–", "–"] and other[-1] == "– |"
    assert base[4] == "–" and base[-1] == "-10.0 [-10.0, -10.0] |"
    panel = layouts.layout_panel(groups, layout, ["base", "other"])
    assert panel == {"base": ([1, 2], [[0.5, 0.4], [0.7, 0.6]]), "other": ([1], [[0.6], [0.8]])}


def test_spec_section_and_page_skeleton():
    spec = {"heading": "Fit", "before": ["{n} runs"], "after": [["- a", "- {b}"]]}
    assert report.spec_section(spec, "| t |", None, n=3, b="x") == ["", "## Fit", "", "3 runs", "", "| t |", "",
                                                                      "- a\n- x"]
    results = {"config": {}, "cells": {"c": {"status": "failed", "error": "boom"}}}
    text = report.page(results, "Title", [], lambda results, runs: pytest.fail("no runs: no body"))
    assert text.startswith("# Title\n\nNo finished cells.\n") and "- `c`: boom" in text
    assert math.isnan(published.compare_direction("d", [0.1, 0.2], "up").published)


def test_study_page_draws_figures_only_for_ok_runs_and_links_them(tmp_path):
    drawn = []

    def figures(results, runs, workdir):
        drawn.append([r["seed"] for r in runs])
        (tmp_path / "curve.png").write_bytes(b"png")
        return ["curve.png"]

    page = report.StudyPage("Study", lambda results, runs: [f"{len(runs)} runs"], figures)
    ok = {"cell": {"seed": 0}, "metrics": {"acc": 1.0}, "status": "ok"}
    results = {"config": {}, "cells": {"a": ok, "b": {"cell": {"seed": 1}, "status": "failed", "error": "boom"}}}
    text = page.write_report(results, str(tmp_path))
    assert drawn == [[0]] and text == (tmp_path / "summary.md").read_text() == page.summary_markdown(
        results, ["curve.png"])
    assert text.startswith("# Study\n\n1 runs\n") and "- `b`: boom" in text and "![curve.png](curve.png)" in text
    assert "## Plots" not in page.write_report({"config": {}, "cells": {}}, str(tmp_path / "none")) and drawn == [[0]]
