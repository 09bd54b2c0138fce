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

import functools
import sys

from attnjax.sweep import pages

STUDIES = ("length_generalization", "mnist1d", "seq2seq_attention", "associative_recall", "decoder_generalization")
RESULTS_ROOT, PAGES_ROOT = pages.RESULTS_ROOT, pages.PAGES_ROOT
experiment_for = pages.package_studies("experiments", STUDIES)  # name -> experiments.<name>.run.EXPERIMENT

# The page machinery (attnjax.sweep.pages) with this repository's studies.
rebuild = functools.partial(pages.rebuild, experiment_for)
publish = functools.partial(pages.publish, experiment_for)
main = functools.partial(pages.main, experiment_for)  # the command line above


if __name__ == "__main__":
    sys.exit(main())
