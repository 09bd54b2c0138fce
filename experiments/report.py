"""Rebuild every study's ``summary.md`` and plots from its ``results.json`` alone, plus one combined summary.

    python -m experiments.report RUN_DIR [RUN_DIR ...] [--out results/summary.md]

Each RUN_DIR holds the ``results.json`` of one experiment (``length_generalization``, ``mnist1d``,
``seq2seq_attention``, ``associative_recall`` ...); the experiment named in that file rebuilds its own
report (its ``EXPERIMENT.report`` hook, the one ``--report_only`` uses), so nothing here trains, reads a
log or needs the config that produced the results. The combined summary joins the per-study summaries
under one heading each, with their plot links rewritten to be relative to the combined file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import Sequence

from attnjax.results import write_text
from experiments import harness

COMBINED_TITLE = "# attnjax studies: combined report"


def experiment_for(name: str) -> harness.Experiment:
    """The :class:`harness.Experiment` recorded as ``name`` in a results.json (``experiments.<name>``).

    Raises:
        ValueError: no experiment module of that name, or one without a report.
    """
    if not re.fullmatch(r"[a-z0-9_]+", str(name)):
        raise ValueError(f"results.json names experiment {name!r}: expected a module name in experiments/")
    try:
        module = importlib.import_module(f"experiments.{name}")
    except ModuleNotFoundError:
        raise ValueError(f"results.json names experiment {name!r}, but experiments/{name}.py does not exist") from None
    experiment = getattr(module, "EXPERIMENT", None)
    if not isinstance(experiment, harness.Experiment) or experiment.name != name or experiment.report is None:
        raise ValueError(f"experiments/{name}.py has no EXPERIMENT named {name!r} with a report hook")
    return experiment


def rebuild(workdir: str) -> tuple[str, str]:
    """Rewrites ``workdir``'s summary.md and plots from its results.json; returns ``(experiment, summary)``.

    Raises:
        ValueError: no results.json, no finished cell, or an unknown experiment.
    """
    results = harness.load_results(workdir)
    if results is None:
        raise ValueError(f"no {harness.RESULTS_FILE} in {workdir!r}")
    experiment = experiment_for(results.get("experiment"))
    if not results.get("num_ok"):
        raise ValueError(f"{workdir!r}: results.json of {experiment.name!r} has no finished cell to report")
    return experiment.name, experiment.report(results, workdir)


def _relink(summary: str, run_dir: str, out_dir: str) -> str:
    """Markdown image/link targets of a per-study summary, made relative to the combined file's folder;
    headings pushed one level down so each study sits under its own ``##``."""
    prefix = os.path.relpath(os.path.abspath(run_dir), out_dir)

    def relink(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"[a-z]+://|/|#", target):
            return match.group(0)
        return f"{match.group(1)}({os.path.normpath(os.path.join(prefix, target))})"

    text = re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", relink, summary)
    return re.sub(r"^(#+) ", r"#\1 ", text, flags=re.MULTILINE)


def combined_summary(parts: Sequence[tuple[str, str, str]], out_dir: str) -> str:
    """One markdown document from ``(experiment, run_dir, summary)`` parts."""
    lines = [COMBINED_TITLE, "", "Rebuilt from results.json alone by `python -m experiments.report`.", "",
             *[f"- [{name}](#{name.replace('_', '-')}) — `{run_dir}`" for name, run_dir, _ in parts]]
    for name, run_dir, summary in parts:
        lines += ["", f"## {name}", "", _relink(summary.strip(), run_dir, out_dir)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="workdirs holding a results.json")
    parser.add_argument("--out", default=os.path.join("results", "summary.md"), help="the combined summary")
    args = parser.parse_args(argv)
    parts = []
    for run_dir in args.run_dirs:
        try:
            name, summary = rebuild(run_dir)
        except ValueError as err:
            parser.error(str(err))
        print(f"{name}: rebuilt {os.path.join(run_dir, 'summary.md')}")
        parts.append((name, run_dir, summary))
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    write_text(args.out, combined_summary(parts, out_dir))
    print(f"combined summary: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
