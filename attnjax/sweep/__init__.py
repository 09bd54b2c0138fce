"""The study harness as a library: a grid of cells, run, recorded, resumed and reported the same way everywhere.

A study is an :class:`Experiment` plus an ``ml_collections`` config file holding the study's own keys and,
through :func:`with_harness_keys`, the harness's. The pieces, one job each:

* :mod:`~attnjax.sweep.grid`: cells from typed axes, per-cell random streams, ``--config.only`` selection;
* :mod:`~attnjax.sweep.settings`: the harness keys and their defaults, checked once;
* :mod:`~attnjax.sweep.models`: a study's model blocks (every model field overridable) and model checks;
* :mod:`~attnjax.sweep.training`: the training-recipe and stop-rule keys (optimizer, schedule, clipping; train
  to fit), parsed once;
* :mod:`~attnjax.sweep.fitting`: train to fit as a protocol: what a cell records, how a report writes it;
* :mod:`~attnjax.sweep.decoding`: the decoder-only protocol: validation and scores at every length, teacher-forced
  and free-running, test lengths bucketed;
* :mod:`~attnjax.sweep.store`: results.json, fingerprints, merging parts of a grid;
* :mod:`~attnjax.sweep.runner`: plan once, then run (workers, checkpoints, progress with an ETA);
* :mod:`~attnjax.sweep.studies`: several planned studies in sequence, one ETA weighted by reference runs;
* :mod:`~attnjax.sweep.cli`: the absl command line;
* :mod:`~attnjax.sweep.report`: how numbers and intervals are written, runs grouped by seed, a page's sections;
* :mod:`~attnjax.sweep.layouts`: a table and a figure panel over one axis of a sweep, a row (line) per label;
* :mod:`~attnjax.sweep.published`: ours vs published from a study's ``published.json`` (claims, verdicts, prose);
* :mod:`~attnjax.sweep.plots`: curves with 95% bands, accuracy vs length, heatmaps, attention maps;
* :mod:`~attnjax.sweep.bench`: fair timings, compiling within a memory budget, a benchmark's files;
* :mod:`~attnjax.sweep.pages`: result pages and README tables rebuilt from committed results.json files.
"""

from attnjax.sweep.cli import cli, config_cli
from attnjax.sweep.grid import Cell, check_ints, check_names, grid, int_tuples, names, numbers, select
from attnjax.sweep.models import check_kind, check_models, fingerprint_fields, model_block
from attnjax.sweep.runner import Context, Experiment, Plan, format_seconds, plan, run
from attnjax.sweep.settings import HARNESS_KEYS, with_harness_keys
from attnjax.sweep.store import RESULTS_FILE, load_results, merge_results, ok_runs
from attnjax.sweep.studies import done_cells, run_studies, seconds_per_cell
from attnjax.sweep.training import check_recipes, optimizer_for, with_recipe_keys

__all__ = [
    "Cell", "Context", "Experiment", "HARNESS_KEYS", "Plan", "RESULTS_FILE", "check_ints", "check_kind",
    "check_models", "check_names", "check_recipes", "cli", "config_cli", "done_cells", "fingerprint_fields",
    "format_seconds", "grid", "int_tuples", "load_results", "merge_results", "model_block", "names", "numbers",
    "ok_runs", "optimizer_for", "plan", "run", "run_studies", "seconds_per_cell", "select", "with_harness_keys",
    "with_recipe_keys",
]
