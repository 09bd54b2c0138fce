"""Several planned studies run one after another, with one ETA over all of them, then one combined report.

Each :class:`~attnjax.sweep.Plan` runs into ``<root>/<experiment name>`` and resumes there as :func:`run` does.
Cells cost ten times more in one study than in another, so the ETA weighs the cells left in each study by the
seconds per cell of a reference run of that study (its committed results.json) and scales them by how fast this
machine ran the cells so far: a plain mean per cell would be off by hours. :func:`main` is the command line; a
repository binds it to its studies.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from typing import Callable, Sequence

import ml_collections

from attnjax.sweep.grid import check_names, names
from attnjax.sweep.pages import RESULTS_ROOT, write_combined
from attnjax.sweep.runner import Experiment, Plan, format_seconds, plan, run
from attnjax.sweep.store import load_results


def seconds_per_cell(run_dir: str) -> float | None:
    """Mean seconds per cell of the run in ``run_dir`` (None: no results.json there, or no timed cell)."""
    results = load_results(run_dir)
    seconds = [e["seconds"] for e in (results or {}).get("cells", {}).values() if "seconds" in e]
    return sum(seconds) / len(seconds) if seconds else None


def eta_seconds(elapsed: float, reference_done: float, reference_left: float) -> float:
    """Seconds left: the reference seconds of the cells left, times this machine's measured/reference ratio
    over the cells run so far (1 before any has run)."""
    return reference_left * (elapsed / reference_done if reference_done > 0 else 1.0)


def done_cells(workdir: str) -> int:
    """How many cells of the run in ``workdir`` finished ok (0 without a results.json)."""
    results = load_results(workdir)
    return 0 if results is None else results.get("num_ok", 0)


def run_studies(plans: Sequence[Plan], root: str, reference_dirs: Sequence[str]) -> int:
    """Runs every plan into ``root/<experiment name>`` in turn, printing a line per study with the elapsed
    time and an ETA; returns the number of failed cells.

    Args:
        plans: the studies, each planned (validated) before the first one runs.
        root: the folder that holds one run directory per study.
        reference_dirs: per plan, a run of the same study whose seconds per cell weigh the ETA (a study
            without one counts at the others' mean).
    """
    workdirs = [os.path.join(root, p.experiment.name) for p in plans]
    sizes = [len(p.selected) for p in plans]
    # The runner tries every unfinished cell once: the cells to run per study, and their reference seconds.
    todo = [n - min(done_cells(d), n) for d, n in zip(workdirs, sizes)]
    per_cell = [seconds_per_cell(d) for d in reference_dirs]
    known = [s for s in per_cell if s is not None] or [1.0]
    reference = [cells * (s if s is not None else sum(known) / len(known)) for cells, s in zip(todo, per_cell)]
    print(f"study: {len(plans)} experiments, {sum(sizes)} cells, {sum(todo)} to run -> {root}; "
          f"ETA {format_seconds(sum(reference))} at the reference runs' speed", flush=True)
    failed, t0 = 0, time.perf_counter()
    for k, (the_plan, workdir) in enumerate(zip(plans, workdirs), 1):
        print(f"\n=== study {k}/{len(plans)}: {the_plan.experiment.name} -> {workdir}", flush=True)
        failed += run(the_plan, workdir)["num_failed"]
        elapsed = time.perf_counter() - t0
        eta = eta_seconds(elapsed, sum(reference[:k]), sum(reference[k:]))
        print(f"=== study: {the_plan.experiment.name} done; elapsed {format_seconds(elapsed)}, "
              f"{sum(todo[k:])} cells left, ETA {format_seconds(eta)}", flush=True)
    return failed


def reference_dir(the_plan: Plan, results_root: str = RESULTS_ROOT) -> str:
    """The committed run of a plan's study and preset, ``<results_root>/<experiment>/<config.preset>``."""
    return os.path.join(results_root, the_plan.experiment.name, the_plan.config.get("preset", "default"))


def package_config(package: str) -> Callable[[str], ml_collections.ConfigDict]:
    """``default_config`` of a repository that keeps study ``name``'s config in ``<package>/<name>/config.py``:
    its ``get_config()``, the default preset."""
    return lambda name: importlib.import_module(f"{package}.{name}.config").get_config()


def main(experiment_for: Callable[[str], Experiment], default_config: Callable[[str], ml_collections.ConfigDict],
         studies: Sequence[str], argv: Sequence[str] | None = None, prog: str = "python -m experiments.study") -> int:
    """Plans every study's ``default_config(name)`` (each validated once, all before the first cell trains), runs
    them in sequence (:func:`run_studies`, ETA from :func:`reference_dir`) and joins their reports into
    ``WORKDIR/summary.md``; ``--report_only`` only rebuilds the reports. Returns the failed cells (at most 100).

    Args:
        experiment_for: study name -> its :class:`Experiment`.
        default_config: study name -> the config it runs with.
        studies: the studies, in the order they run.
    """
    parser = argparse.ArgumentParser(prog=prog, description="Every study's default preset in sequence, then one "
                                     "combined report.")
    parser.add_argument("--workdir", default=os.path.join(RESULTS_ROOT, "study"))
    parser.add_argument("--studies", default=",".join(studies), help=f"comma-separated subset of {studies}")
    parser.add_argument("--report_only", action="store_true", help="rebuild the reports from results.json")
    args = parser.parse_args(argv)
    try:
        chosen = names(args.studies)
        check_names("study", chosen, studies)
        planned = [plan(experiment_for(name), default_config(name)) for name in chosen]
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    failed = 0 if args.report_only else run_studies(planned, args.workdir, [reference_dir(p) for p in planned])
    dirs = [os.path.join(args.workdir, p.experiment.name) for p in planned]
    out = os.path.join(args.workdir, "summary.md")
    reported = write_combined(experiment_for, [d for d in dirs if done_cells(d)], out)
    print(f"\nstudy: combined report {out} ({len(reported)} of {len(planned)} experiments); {failed} failed cells")
    return min(failed, 100)
