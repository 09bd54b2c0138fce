"""Rebuild study reports from ``results.json`` alone: the committed pages, or any run directories.

    python -m experiments.report                  # results/ -> docs/results/ and the README's result tables
    python -m experiments.report RUN_DIR [RUN_DIR ...] [--out results/summary.md]

Without RUN_DIR, every committed ``results/<study>/<preset>/results.json`` is rebuilt into
``docs/results/<study>/<preset>/`` (``summary.md`` and its plots), and each README block between
``<!-- results: <study>/<preset> -->`` and ``<!-- /results -->`` becomes that page's first table and a link
to it; a test checks that this changes no committed file. With RUN_DIRs, each run's own report is rebuilt
in place and joined into one combined summary. Nothing here trains or reads a log.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
from typing import Sequence

from attnjax import sweep
from attnjax.results import write_text
from attnjax.sweep import pages

STUDIES = ("length_generalization", "mnist1d", "seq2seq_attention", "associative_recall")
RESULTS_ROOT, PAGES_ROOT = pages.RESULTS_ROOT, pages.PAGES_ROOT


def experiment_for(name: str) -> sweep.Experiment:
    """The :class:`sweep.Experiment` of study ``name`` (``experiments.<name>.run.EXPERIMENT``).

    Raises:
        ValueError: ``name`` is not one of :data:`STUDIES`.
    """
    if name not in STUDIES:
        raise ValueError(f"results.json names experiment {name!r}, which is not a study; studies: {', '.join(STUDIES)}")
    return importlib.import_module(f"experiments.{name}.run").EXPERIMENT


# The page machinery (attnjax.sweep.pages) with this repository's studies.
rebuild = functools.partial(pages.rebuild, experiment_for)
publish = functools.partial(pages.publish, experiment_for)
combined_summary = pages.combined_summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="workdirs holding a results.json (none: "
                        "rebuild docs/results/ and the README's tables from the committed results/)")
    parser.add_argument("--out", default=os.path.join("results", "summary.md"), help="the combined summary")
    args = parser.parse_args(argv)
    if not args.run_dirs:
        for page in publish():
            print(f"rebuilt {page}")
        return 0
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
