"""The command line of a study or a benchmark: absl flags, ``--config`` files with ``--config.x=y`` overrides.

Flags are defined when :func:`cli` runs, not at import, so several study modules can share one process
(tests, notebooks).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

import ml_collections

from attnjax.sweep.runner import Experiment, plan, run
from attnjax.sweep.store import RESULTS_FILE, load_results


def _config_flag(config_file: str, help_text: str):
    """Defines ``--config``. ml_collections reads the ``--config.x=y`` overrides of ``sys.argv`` here: one that
    names no field of the config ends the program with one line that names the field and the nearest valid
    one, not a traceback."""
    from ml_collections import config_flags

    try:
        return config_flags.DEFINE_config_file("config", config_file, help_text, lock_config=True)
    except (AttributeError, KeyError) as err:
        message = str(err).replace("\\n", " ").replace("\n", " ").replace("\\'", "").strip("'\" ")
        sys.exit(f"error: a --config override names no field of the config: {message}")


def config_cli(config_file: str, check: Callable[[ml_collections.ConfigDict], None],
               run_config: Callable[[ml_collections.ConfigDict], Any]) -> None:
    """Runs a one-shot program (a benchmark) on ``config_file``: ``check`` first, its ValueError becoming
    an absl usage error, then ``run_config``. Call under ``if __name__ == "__main__"``."""
    from absl import app

    config = _config_flag(config_file, "Config (file[:preset]); override any field with --config.x=y.")

    def main(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        try:
            check(config.value)
        except ValueError as err:
            raise app.UsageError(str(err)) from None
        run_config(config.value)

    app.run(main)


def cli(experiment: Experiment, config_file: str, default_workdir: str) -> None:
    """Runs ``experiment`` as a command line program (call it under ``if __name__ == "__main__"``).

    Flags: ``--config`` (``config_file`` by default; ``file[:preset]`` with ``--config.x=y`` overrides),
    ``--workdir`` and ``--report_only``.
    """
    from absl import app, flags

    config = _config_flag(config_file, "Experiment config (file[:preset]).")
    workdir = flags.DEFINE_string("workdir", os.path.join("results", default_workdir),
                                  "Directory receiving results.json, summary.md, plots and logs/.")
    report_only = flags.DEFINE_bool("report_only", False, "Rebuild summary.md and plots from results.json.")
    app.run(lambda argv: main(experiment, argv, config.value, workdir.value, report_only.value))


def main(experiment: Experiment, argv: Sequence[str], config: ml_collections.ConfigDict, workdir: str,
         report_only: bool = False) -> None:
    """absl ``main`` body: plan (usage error on a bad value), run, report, exit with the failed-cell count."""
    from absl import app, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # keep JAX's backend-probing INFO lines out of the output
    if report_only:
        results = load_results(workdir)
        if results is None:
            raise app.UsageError(f"--report_only: no {RESULTS_FILE} in {workdir!r}")
    else:
        try:
            the_plan = plan(experiment, config)
        except (ValueError, TypeError) as err:
            raise app.UsageError(str(err)) from None
        results = run(the_plan, workdir)
    if experiment.report is not None and results["num_ok"]:
        print("\n" + experiment.report(results, workdir))
    print(f"{results['num_ok']}/{results['num_cells']} cells ok, {results['num_failed']} failed; files in {workdir}")
    if results["num_failed"]:
        sys.exit(min(results["num_failed"], 100))
