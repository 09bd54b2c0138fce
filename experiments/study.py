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

default_config = studies.package_config("experiments")  # name -> experiments/<name>/config.py's get_config()
# The decoder study's presets take an hour and more on 2 cores: they run by their own command, so the whole
# study keeps its 60 minutes.
ONE_COMMAND = tuple(s for s in combined.STUDIES if s != "decoder_generalization")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line above (:func:`attnjax.sweep.studies.main`) with this repository's studies."""
    return studies.main(combined.experiment_for, default_config, ONE_COMMAND, argv)


if __name__ == "__main__":
    sys.exit(main())
