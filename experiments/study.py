"""The whole study as one command: every study's default preset in sequence, then one combined report.

    python -m experiments.study [--workdir results/study] [--studies length_generalization,mnist1d]
    python -m experiments.study --report_only

Every config is planned (validated) before the first cell trains; each study runs into
``WORKDIR/<study>`` and resumes like any harness run; ``WORKDIR/summary.md`` joins their reports
(:mod:`experiments.report`). A line per study gives the elapsed time and an ETA weighted by the committed
runs' seconds per cell.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Sequence

import ml_collections

from attnjax import sweep
from attnjax.results import write_text
from experiments import report as combined

STUDIES = combined.STUDIES


def reference_seconds_per_cell(name: str, preset: str) -> float | None:
    """Mean seconds per cell of the committed run ``results/<name>/<preset>`` (None: none committed).

    Cells cost 10x more in one study than in another, so the ETA weighs the cells left by these and scales
    them by how fast this machine ran the cells so far (a plain mean per cell would be off by hours).
    """
    results = sweep.load_results(os.path.join(combined.RESULTS_ROOT, name, preset))
    seconds = [e["seconds"] for e in (results or {}).get("cells", {}).values() if "seconds" in e]
    return sum(seconds) / len(seconds) if seconds else None


def default_config(name: str) -> ml_collections.ConfigDict:
    """``experiments/<name>/config.py``'s ``get_config()`` (its default preset)."""
    return importlib.import_module(f"experiments.{name}.config").get_config()


def plan_studies(names: Sequence[str]) -> list[sweep.Plan]:
    """The :class:`sweep.Plan` of every study's default config, each validated once, all before any runs.

    Raises:
        ValueError: an unknown study name or an invalid config.
    """
    sweep.check_names("study", names, STUDIES)
    return [sweep.plan(combined.experiment_for(name), default_config(name)) for name in names]


def eta_seconds(elapsed: float, reference_done: float, reference_left: float) -> float:
    """Seconds left: the reference seconds of the cells left, times this machine's measured/reference ratio
    over the cells run so far (1 before any has run)."""
    return reference_left * (elapsed / reference_done if reference_done > 0 else 1.0)


def _done(workdir: str) -> int:
    results = sweep.load_results(workdir)
    return 0 if results is None else results.get("num_ok", 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.study", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join("results", "study"))
    parser.add_argument("--studies", default=",".join(STUDIES), help=f"comma-separated subset of {STUDIES}")
    parser.add_argument("--report_only", action="store_true", help="rebuild the reports from results.json")
    args = parser.parse_args(argv)
    try:
        planned = plan_studies(sweep.names(args.studies))
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    dirs = [os.path.join(args.workdir, p.experiment.name) for p in planned]
    failed = 0
    if not args.report_only:
        sizes = [len(p.selected) for p in planned]
        total = sum(sizes)
        # The harness tries every unfinished cell once: (cells, reference seconds) to run per study.
        todo = [(n - min(_done(d), n)) for d, n in zip(dirs, sizes)]
        per_cell = [reference_seconds_per_cell(p.experiment.name, p.config.get("preset", "cpu")) for p in planned]
        known = [s for s in per_cell if s is not None] or [1.0]  # a study with no committed run: the others' mean
        reference = [cells * (s if s is not None else sum(known) / len(known)) for cells, s in zip(todo, per_cell)]
        print(f"study: {len(planned)} experiments, {total} cells, {sum(todo)} to run -> {args.workdir}; "
              f"ETA {sweep.format_seconds(sum(reference))} at the committed runs' speed", flush=True)
        t0 = time.perf_counter()
        for k, (the_plan, workdir) in enumerate(zip(planned, dirs), 1):
            print(f"\n=== study {k}/{len(planned)}: {the_plan.experiment.name} -> {workdir}", flush=True)
            results = sweep.run(the_plan, workdir)
            failed += results["num_failed"]
            elapsed = time.perf_counter() - t0
            eta = eta_seconds(elapsed, sum(reference[:k]), sum(reference[k:]))
            print(f"=== study: {the_plan.experiment.name} done; elapsed {sweep.format_seconds(elapsed)}, "
                  f"{sum(todo[k:])} cells left, ETA {sweep.format_seconds(eta)}", flush=True)
    parts = []
    for workdir in dirs:
        if _done(workdir):
            name, summary = combined.rebuild(workdir)
            parts.append((name, workdir, summary))
    out = os.path.join(args.workdir, "summary.md")
    os.makedirs(args.workdir, exist_ok=True)
    write_text(out, combined.combined_summary(parts, os.path.abspath(args.workdir)))
    print(f"\nstudy: combined report {out} ({len(parts)} of {len(planned)} experiments); {failed} failed cells")
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main())
