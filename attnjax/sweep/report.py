"""What every study's report shares: how a number is written (percentages, 95% t-intervals over seeds), runs
grouped by seed and the setting chosen on validation, per-seed values and paired effects, markdown tables, and
the skeleton of a page (its opening facts, sections and closing lines), and a study's whole report
(:class:`StudyPage`). Ours vs published is :mod:`attnjax.sweep.published`; figures are :mod:`attnjax.sweep.plots`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from attnjax import stats
from attnjax.results import write_text
from attnjax.sweep.runner import format_seconds
from attnjax.sweep.store import ok_runs

Run = Mapping[str, Any]
Seeds = Mapping[int, Run]  # one group's runs by seed
SUMMARY_FILE = "summary.md"


def pct(x: float | None, sign: bool = False) -> str:
    """A fraction as a percentage with one decimal (``sign``: always with its sign); ``–`` if missing."""
    if x is None or not math.isfinite(x):
        return "–"
    return f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def ci_text(mean: float, low: float, high: float, sign: bool = False) -> str:
    """``mean [low, high]`` in %. An accuracy's interval (``sign=False``) is clipped to [0, 100] and a
    difference's to [-100, 100]: the t-interval of a few seeds can leave the range the mean lives in."""
    bound = -1.0 if sign else 0.0
    interval = ("n=1" if not math.isfinite(low) else
                f"{pct(max(low, bound), sign)}, {pct(min(high, 1.0), sign)}")
    return f"{pct(mean, sign)} [{interval}]"


def seeds_ci_text(values: Sequence[float] | Mapping[Any, float], sign: bool = False) -> str:
    """:func:`ci_text` of the mean over seeds and its 95% t-interval (``values``: a sequence, or a mapping
    from seed to value); the mean alone for one value."""
    values = list(values.values()) if isinstance(values, Mapping) else list(values)
    if not values:
        return "–"
    mean, low, high = stats.mean_ci(values)
    return pct(mean, sign) if not math.isfinite(low) else ci_text(mean, low, high, sign)


def run_header(results: Mapping[str, Any], runs: Sequence[Run]) -> str:
    """The opening words of a summary: ``Preset `cpu`: 40/42 cells ok, 3 seed(s)``."""
    return (f"Preset `{results['config'].get('preset')}`: {len(runs)}/{results.get('num_cells', len(runs))} cells "
            f"ok, {len({r['seed'] for r in runs})} seed(s)")


def minutes(results: Mapping[str, Any]) -> float:
    """The minutes the cells of ``results`` took, summed over cells."""
    return sum(e.get("seconds", 0.0) for e in results.get("cells", {}).values()) / 60


def run_facts(results: Mapping[str, Any], runs: Sequence[Run]) -> str:
    """How a run went: ``40 runs ok, 2 failed; wall time 6m15s, 11m40s of train + eval over the cells. jax 0.6.2
    on cpu (cpu), commit abc1234.``, then a bold note while cells are missing."""
    cells, env = results.get("cells", {}), results.get("environment", {})
    failed = sum(e.get("status") == "failed" for e in cells.values())
    wall = f"wall time {format_seconds(results['wall_seconds'])}, " if "wall_seconds" in results else ""
    compute = sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in runs)
    partial = (f" **Partial: {len(cells)} of {results['num_cells']} cells so far.**"
               if not results.get("complete", True) and "num_cells" in results else "")
    return (f"{len(runs)} runs ok, {failed} failed; {wall}{format_seconds(compute)} of train + eval over the cells. "
            f"jax {env.get('jax', '?')} on {env.get('backend', '?')} "
            f"({', '.join(env.get('device_kinds', [])) or '?'}), commit {env.get('git_commit', '?')}.{partial}")


def summary_tail(results: Mapping[str, Any], figures: Sequence[str] = ()) -> list[str]:
    """The closing markdown lines every study's ``summary.md`` shares: the failed cells with their
    errors (never dropped silently) and links to the plots."""
    out: list[str] = []
    failed = {cid: e for cid, e in results.get("cells", {}).items() if e.get("status") == "failed"}
    if failed:
        out += ["", f"## Failed cells ({len(failed)})", "",
                *[f"- `{cid}`: {e.get('error', 'no error recorded')}" for cid, e in failed.items()]]
    if figures:
        out += ["", "## Plots", "", *[f"![{name}]({name})" for name in figures]]
    return out


def per_seed_means(cells: Mapping[Any, Mapping[Any, Sequence[float]]]) -> tuple[list[Any], np.ndarray]:
    """``{unit: {seed: values}}`` -> (seeds every unit has, ``[n_seeds, len(values)]`` means over units)."""
    seeds = sorted(set.intersection(*(set(by_seed) for by_seed in cells.values()))) if cells else []
    return seeds, np.asarray([np.mean([cells[u][s] for u in cells], axis=0) for s in seeds], dtype=np.float64)


def setting(run: Run) -> str:
    """What a study chooses per model on validation data: ``"recipe@lr"`` (``"lr"`` for runs without a recipe axis)."""
    return f"{run['recipe']}@{run['lr']}" if run.get("recipe") else str(run["lr"])


def group_runs(runs: Sequence[Run], key: Callable[[Run], Any],
               setting: Callable[[Run], str] = setting) -> dict[Any, dict[str, dict[int, Run]]]:
    """Runs as ``{key(run): {setting(run): {seed: run}}}``, each level in the order first seen."""
    out: dict[Any, dict[str, dict[int, Run]]] = {}
    for r in runs:
        out.setdefault(key(r), {}).setdefault(setting(r), {})[int(r["seed"])] = r
    return out


def best_setting(settings: Mapping[str, Seeds], metric: str) -> Seeds:
    """The runs of the setting with the best mean ``metric`` over seeds (of equals, the first given). Choose on
    validation data, never the test set."""
    return max(settings.values(), key=lambda seeds: np.mean([r[metric] for r in seeds.values()]))


def seed_values(seeds: Seeds, metric: str, lengths: Iterable[int] | None = None) -> dict[int, float]:
    """``{seed: run[metric]}`` in seed order, leaving out runs without the metric; with ``lengths``, each run's
    mean of ``run["per_length"][str(k)][metric]`` over those of ``lengths`` it scored."""
    if lengths is None:
        return {s: seeds[s][metric] for s in sorted(seeds) if seeds[s].get(metric) is not None}
    per = {s: [seeds[s]["per_length"][str(k)][metric] for k in lengths if str(k) in seeds[s]["per_length"]]
           for s in sorted(seeds)}
    return {s: float(np.mean(v)) for s, v in per.items() if v}


def mean(values: Iterable[float]) -> float | None:
    """The mean of ``values`` (None for none)."""
    values = list(values)
    return float(np.mean(values)) if values else None


def seed_curve(points: Sequence[tuple[float, Mapping[int, float]]]) -> tuple[list, list[list[float]]] | None:
    """``[(x, {seed: y})]`` as a curve of :func:`attnjax.sweep.plots.curves_figure` (``(xs, [per-seed ys])``)
    over the seeds every point has; None when no seed has every point."""
    seeds = sorted(set.intersection(*(set(by_seed) for _, by_seed in points))) if points else []
    return ([x for x, _ in points], [[by_seed[s] for _, by_seed in points] for s in seeds]) if seeds else None


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> dict[int, float]:
    """``a − b`` per seed, over the seeds both have (a paired comparison)."""
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b))}


@dataclasses.dataclass(frozen=True)
class PairedEffect:
    """Treatment − control over values paired by (unit, seed): each seed's values averaged over the units (those
    seeds every unit has), then the 95% t-interval over seeds (:attr:`diff`). Units fall into groups (tasks, say)."""

    name: str
    by_group: dict[Any, tuple[float, float]]  # group -> (control, treatment) means over the group's common seeds
    seeds: list[Any]
    control: float  # means over seeds
    treatment: float
    deltas: list[float]  # per seed: treatment − control, averaged over the units
    diff = property(lambda self: stats.mean_ci(self.deltas))


def paired_effect(name: str, cells: Mapping[tuple[Any, Any], Mapping[Any, tuple[float, float]]]
                  ) -> PairedEffect | None:
    """The :class:`PairedEffect` of ``cells``: ``(group, unit) -> {seed: (control, treatment)}``; None when no seed
    is common to every unit."""
    seeds, means = per_seed_means(cells)  # [n_seeds, 2]
    if not seeds:
        return None
    by_group = {g: tuple(per_seed_means({u: v for u, v in cells.items() if u[0] == g})[1].mean(axis=0))
                for g in dict.fromkeys(g for g, _ in cells)}
    return PairedEffect(name, by_group, seeds, float(means[:, 0].mean()), float(means[:, 1].mean()),
                        list(means[:, 1] - means[:, 0]))


def held_out_metric(runs: Sequence[Run]) -> str:
    """The accuracy a report reads: ``"test_accuracy"`` once runs scored a test set, else ``"val_accuracy"`` (a
    pilot choosing on validation data)."""
    return "test_accuracy" if any("test_accuracy" in r for r in runs) else "val_accuracy"


def describe_fit(metrics: Mapping[str, Any]) -> str:
    """The progress line of a classifier-style cell: ``train 93.1%, test 90.2%`` (``val`` on a validation split)."""
    held = "test" if "test_accuracy" in metrics else "val"
    return f"train {100 * metrics['train_accuracy']:.1f}%, {held} {100 * metrics[f'{held}_accuracy']:.1f}%"


# --------------------------------------------------------------------------- tables

def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A markdown table; cells are written with ``str``. ``align``: ``l`` or ``r`` per column (right-aligned
    numbers); columns past its end are left-aligned."""
    lines = ["| " + " | ".join(map(str, header)) + " |",
             "|" + "".join("---:|" if a == "r" else "---|" for a in align.ljust(len(header), "l"))]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


# --------------------------------------------------------------------------- writing a page

def section(heading: str, *blocks: str | None) -> list[str]:
    """A page's ``## heading`` section as markdown lines: each block (a paragraph, a table; None: left out)
    after a blank line."""
    return ["", f"## {heading}", *(line for block in blocks if block is not None for line in ("", block))]


def spec_section(spec: Mapping[str, Any], *blocks: str | None, **fields: Any) -> list[str]:
    """A section whose words are a study's data: ``## spec["heading"]``, the ``spec["before"]`` blocks, then
    ``blocks`` (tables, say), then the ``spec["after"]`` blocks. A block of the spec is a :meth:`str.format`
    template filled with ``fields`` (a literal brace doubled); a list of lines is one block."""
    def text(block: str | Sequence[str]) -> str:
        return (block if isinstance(block, str) else "\n".join(block)).format(**fields)

    return section(spec["heading"], *map(text, spec.get("before", ())), *blocks, *map(text, spec.get("after", ())))


def load_json(study_file: str, name: str) -> Any:
    """The JSON file ``name`` beside ``study_file`` (pass a module's ``__file__``): a study's page words or
    published numbers, kept as data."""
    with open(os.path.join(os.path.dirname(study_file), name), encoding="utf-8") as f:
        return json.load(f)


def page(results: Mapping[str, Any], title: str, figures: Sequence[str],
         body: Callable[[Mapping[str, Any], list[Run]], list[str]]) -> str:
    """A whole ``summary.md``: ``# title``, ``body(results, ok runs)`` (``No finished cells.`` without any),
    then :func:`summary_tail`."""
    runs = ok_runs(results)
    lines = body(results, runs) if runs else ["No finished cells."]
    return "\n".join([f"# {title}", "", *lines, *summary_tail(results, figures)]) + "\n"


def write_summary(workdir: str, text: str) -> str:
    """Writes ``text`` as ``workdir/summary.md`` (atomically) and returns it."""
    write_text(os.path.join(workdir, SUMMARY_FILE), text)
    return text


@dataclasses.dataclass(frozen=True)
class StudyPage:
    """A study's report: ``summary.md`` titled ``title``, whose lines are ``body(results, ok runs)`` (:func:`page`),
    and its figures, which ``figures(results, ok runs, workdir)`` writes into ``workdir`` and names (called only
    when some cell is ok)."""

    title: str
    body: Callable[[Mapping[str, Any], list[Run]], list[str]]
    figures: Callable[[Mapping[str, Any], list[Run], str], list[str]]

    def summary_markdown(self, results: Mapping[str, Any], figures: Sequence[str] = ()) -> str:
        """The whole ``summary.md``, linking the figure files ``figures``."""
        return page(results, self.title, figures, self.body)

    def write_report(self, results: Mapping[str, Any], workdir: str) -> str:
        """Writes the figures and ``summary.md`` into ``workdir`` and returns the summary (an
        :class:`~attnjax.sweep.Experiment`'s ``report`` hook)."""
        runs = ok_runs(results)
        written = self.figures(results, runs, workdir) if runs else []
        return write_summary(workdir, self.summary_markdown(results, written))
