"""The whole study as one command: every study's default preset in sequence, then one combined report.

    python -m experiments.study [--workdir results/study] [--studies length_generalization,mnist1d]
    python -m experiments.study --report_only

Every config is planned (validated) before the first cell trains; each study runs into
``WORKDIR/<study>`` and resumes like any harness run; ``WORKDIR/summary.md`` joins their reports
(:mod:`experiments.report`). A line per study gives the elapsed time and an ETA weighted by the committed
runs' seconds per cell. The machinery is :mod:`attnjax.sweep.studies`.
"""

from __future__ import annotations

import sys
from typing import Sequence

from attnjax.sweep import studies
from experiments import report as combined

STUDIES = combined.STUDIES
default_config = studies.package_config("experiments")  # name -> experiments/<name>/config.py's get_config()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line above (:func:`attnjax.sweep.studies.main`) with this repository's studies."""
    return studies.main(combined.experiment_for, default_config, STUDIES, argv)


if __name__ == "__main__":
    sys.exit(main())
