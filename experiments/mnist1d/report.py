"""The MNIST-1D report from results.json alone: normal vs shuffled, sample efficiency, ours vs Greydanus & Kobak, a
recipe pilot's choice, the sample-efficiency plot and the learning curves. Entries are the mean over seeds [95%
t-interval], in %."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from attnjax.sweep.plots import curves_figure, save_figures
from attnjax.sweep.published import check, comparison_section, load_published, protocol_section
from attnjax.sweep.report import (StudyPage, best_setting, group_runs, held_out_metric, markdown_table, mean, minutes,
                                 paired, pct, run_header, section, seed_curve, seed_values, seeds_ci_text, setting,
                                 spec_section)

CURVE_FILE, LEARNING_FILE = "sample_efficiency.png", "learning_curves.png"
DATASETS = ("normal", "shuffled")
PUBLISHED = load_published(__file__)["greydanus_kobak"]  # test accuracy in %, 4,000 training examples
UNDERFIT = 0.8  # a caveat where the normal data's train accuracy is below this
FIT = 0.9  # a recipe pilot chooses the best validation accuracy among the settings with train accuracy >= this


def label(run: Mapping[str, Any]) -> str:
    """``model`` or ``model+encoding``."""
    return run["model"] + ("" if run["variant"] == "-" else f"+{run['variant']}")


def group(runs: Sequence[dict]) -> dict[tuple, dict[int, dict]]:
    """``{(model, dataset, train_size): {seed: run}}``; several lrs: the best on validation, else rows ``cnn lr=x``."""
    metric = held_out_metric(runs)
    by_lr = group_runs(runs, lambda r: (label(r), r["dataset"], int(r["train_size"])))
    several = {k[0] for k, lrs in by_lr.items() if len(lrs) > 1}
    out = {}
    for key, lrs in by_lr.items():
        if metric == "val_accuracy" or key[0] not in several:
            out[key] = best_setting(lrs, metric)
        else:
            out.update({(f"{key[0]} lr={lr}", *key[1:]): seeds for lr, seeds in lrs.items()})
    return out


def _order(labels) -> list[str]:
    rank = {m: i for i, m in enumerate(("logistic", "mlp", "cnn", "gru", "vit1d", "transformer"))}
    return sorted(set(labels), key=lambda s: (rank.get(s.split("+")[0].split(" ")[0], 99), s))


def table_shuffle(g, size: int, metric: str) -> str:
    """Per model: params, held-out and train accuracy on both datasets, and the paired (same seed) drop."""
    held, rows = metric.split("_")[0], []
    for name in _order(m for m, _, s in g if s == size):
        normal, shuffled = both = [g.get((name, d, size), {}) for d in DATASETS]
        row = [name, next((r["num_params"] for seeds in both for r in seeds.values()), "–")]
        for seeds in both:
            row += [seeds_ci_text(seed_values(seeds, metric)),
                    pct(mean(seed_values(seeds, "train_accuracy").values()))]
        drop = paired(seed_values(normal, metric), seed_values(shuffled, metric))
        rows.append(row + [seeds_ci_text(drop, sign=True)])
    return markdown_table(["model", "params", f"normal {held}", "normal train", f"shuffled {held}", "shuffled train",
                           "Δ normal − shuffled"], rows)


def table_sizes(g, metric: str) -> str:
    """Per model and dataset: held-out accuracy [CI] and the mean train − held-out gap (points) per training size."""
    sizes, rows = sorted({s for _, _, s in g}), []
    for name, dataset in ((m, d) for m in _order(m for m, _, _ in g) for d in DATASETS if (m, d) in {k[:2] for k in g}):
        row = [name, dataset]
        for s in sizes:
            test, train = (seed_values(g.get((name, dataset, s), {}), m) for m in (metric, "train_accuracy"))
            row += [seeds_ci_text(test), pct(mean(paired(train, test).values()))]
        rows.append(row)
    return markdown_table(["model", "data", *[h for s in sizes for h in (f"n={s}", "gap")]], rows)


def comparisons(g, size: int) -> list:
    """Ours vs each published test accuracy at ``size`` examples; a caveat where the *normal* data is under-fit."""
    out = []
    for dataset, published in PUBLISHED["test_accuracy"].items():
        for name, pub in published.items():
            test = list(seed_values(g.get((name, dataset, size), {}), "test_accuracy").values())
            train = mean(seed_values(g.get((name, "normal", size), {}), "train_accuracy").values())
            underfit = name != "logistic" and train is not None and train < UNDERFIT  # linear: capped by design
            if test:
                out.append(check(PUBLISHED["claim"], test, published=pub / 100, name=name, dataset=dataset, size=size,
                                 caveat=f"under-fit: train {pct(train)}%" if underfit else ""))
    return out


def pilot_table(runs: Sequence[dict]) -> str:
    """Per model and recipe@lr: validation and train accuracy (means over seeds); the chosen setting in bold: the
    best validation accuracy of those that fit (train >= :data:`FIT`), or of all where none fits."""
    rows, by_model = [], group_runs(runs, label)
    for name, settings in ((name, by_model[name]) for name in _order(by_model)):
        acc = {s: [mean(seed_values(seeds, m).values()) for m in ("val_accuracy", "train_accuracy")]
               for s, seeds in settings.items()}
        chosen = max(acc, key=lambda s: (acc[s][1] >= FIT, acc[s][0]))
        rows += [[*(f"**{v}**" if s == chosen else v for v in (name, s)), *map(pct, acc[s])] for s in acc]
    return markdown_table(["model", "recipe@lr", "val", "train"], rows)


def learning_curves_figure(runs: Sequence[dict]):
    """Per model, the training batches' accuracy over steps (and the validation split's, where scored), one line per
    dataset and recipe@lr with its band over seeds; None without recorded curves."""
    panels: dict[str, dict[str, tuple[list, list]]] = {}
    for r in runs:
        for i, kind in ((1, "train batches"), (2, "validation")):
            if r.get("curve") and len(r["curve"][0]) > i:
                lines = panels.setdefault(f"{label(r)}: {kind}", {})
                lines.setdefault(f"{r['dataset']} {setting(r)}", ([p[0] for p in r["curve"]], []))[1].append(
                    [p[i] for p in r["curve"]])
    return curves_figure(panels, "step", "accuracy (%)", cols=2 if len(panels) <= 4 else 4) if panels else None


def sample_efficiency_figure(g, metric: str):
    """Held-out accuracy against training size, one panel per dataset (None for a single size)."""
    sizes, panels = sorted({s for _, _, s in g}), {}
    for dataset in DATASETS:
        for name in _order(m for m, d, _ in g if d == dataset) if len(sizes) > 1 else []:
            if curve := seed_curve([(s, seed_values(g[(name, dataset, s)], metric)) for s in sizes
                                    if (name, dataset, s) in g]):
                panels.setdefault(f"{dataset}: {metric.split('_')[0]} accuracy", {})[name] = curve
    return curves_figure(panels, "training examples", "accuracy (%)", cols=2, logx=True) if panels else None


def body(results: Mapping[str, Any], runs: list[dict]) -> list[str]:
    config, metric, g = results["config"], held_out_metric(runs), group(runs)
    size = max(int(r["train_size"]) for r in runs)
    out = [f"{run_header(results, runs)}, {config.get('num_steps')} steps of batch {config.get('batch_size')}, "
           f"{minutes(results):.1f} min in all. Entries: mean {metric.split('_')[0]} accuracy (%) "
           "over seeds [95% t-interval]; *train*: on the training subset; Δ: paired by seed, in points.",
           *section(f"Table 1: normal vs shuffled (n={size} training examples)", table_shuffle(g, size, metric))]
    if len({s for _, _, s in g}) > 1:
        out += section("Table 2: sample efficiency (held-out accuracy and train − held-out gap)",
                       table_sizes(g, metric))
    if metric == "val_accuracy" and any(r.get("recipe") for r in runs):
        out += spec_section(PUBLISHED["pilot"], pilot_table(runs), fit=pct(FIT))
    if metric == "test_accuracy" and (rows := comparisons(g, size)):
        out += comparison_section(PUBLISHED["section"], rows, points=100 * PUBLISHED["claim"]["tolerance"])
    lrs = {k: v for k, v in dict(config.get("learning_rates", {})).items() if "," not in str(v) and float(v) != 1e-2}
    reference = config.get("batch_order") == "cycle"  # the presets that follow greydanus/mnist1d's protocol
    recipes = dict(config.get("recipes", {}))
    return out + protocol_section(PUBLISHED["protocol_reference" if reference else "protocol"], **config,
                                  attention_recipes=", ".join(f"{m} {recipes[m]} at lr {config['learning_rates'][m]}"
                                                              for m in ("vit1d", "transformer") if m in recipes),
                                  lrs=", ".join(f"{k} {v}" for k, v in sorted(lrs.items())) or "none")


def figures(results: Mapping[str, Any], runs: list[dict], workdir: str) -> list[str]:
    """``sample_efficiency.png`` and ``learning_curves.png``, where there is something to draw."""
    return save_figures(workdir, {CURVE_FILE: sample_efficiency_figure(group(runs), held_out_metric(runs)),
                                  LEARNING_FILE: learning_curves_figure(runs)})


PAGE = StudyPage("MNIST-1D: normal vs shuffled positions, and sample efficiency", body, figures)
summary_markdown, write_report = PAGE.summary_markdown, PAGE.write_report
