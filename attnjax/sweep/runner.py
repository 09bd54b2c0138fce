"""Running a study: validate and plan once, then run the unfinished cells, recording each as it ends.

A study is an :class:`Experiment`: how to list its grid, validate its config, say what determines a
cell's result, run one cell and report. :func:`plan` checks everything (names, values, the harness keys,
the selection) before anything is written, and returns a :class:`Plan`; :func:`run` executes a plan:

* **results.json** rewritten atomically after every cell (:mod:`attnjax.sweep.store`);
* **resume by default**: cells that finished with the same fingerprint are skipped; entries of cells
  no longer in the grid, or whose fingerprint changed, are dropped, so the file always describes the
  current config's grid;
* **failed cells** are recorded while the rest of the grid runs;
* **checkpoints inside a cell** (``--config.checkpoint_every=N``) under ``<workdir>/checkpoints/<cell>/
  <fingerprint>``: a preempted cell resumes from its newest checkpoint, removed once the cell is ok;
* **workers** (``--config.workers``): cells on single-threaded worker processes (:mod:`attnjax.sweep.workers`);
* **progress**: a line per cell with the elapsed time and an ETA.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
import time
from typing import IO, Any, Callable, Mapping

import ml_collections

from attnjax.results import environment_info
from attnjax.sweep.grid import Cell, select
from attnjax.sweep.settings import HARNESS_KEYS, Settings, settings
from attnjax.sweep.store import fingerprint, load_results, save_results
from attnjax.sweep.workers import check_sendable, execute_cell, run_in_workers
from attnjax.train import fit

CHECKPOINTS_DIR, TENSORBOARD_DIR, LOGS_DIR = "checkpoints", "tensorboard", "logs"


def file_name(cell: Cell) -> str:
    """The cell id as a file name (``/`` and odd characters replaced)."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", cell.id.replace("/", "-"))


@dataclasses.dataclass
class Context:
    """What a running cell may use besides its config: its log file, progress setting and checkpoints.

    Attributes:
        workdir: the run directory.
        progress: tqdm bars (None: when stderr is a terminal).
        checkpoint_every: ``fit`` saves every this many steps inside a cell (0: no checkpoints).
        checkpoint_keep: how many of a cell's newest checkpoints are kept.
        fingerprints: cell id -> fingerprint; a cell's checkpoints live under its fingerprint, so a cell
            whose config changed never resumes from a checkpoint of the old config.
        tensorboard: ``fit`` also writes TensorBoard scalars (``config.tensorboard``).
    """

    workdir: str
    progress: bool | None
    checkpoint_every: int = 0
    checkpoint_keep: int = 2
    fingerprints: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tensorboard: bool = False

    def fit_options(self, cell: Cell) -> dict[str, Any]:
        """Keyword arguments for :func:`attnjax.train.fit` inside ``cell``: the progress bar and its label, and
        when on, ``checkpoint_dir``/``checkpoint_every``/``keep`` and ``tensorboard_dir``.

        Pass the cell's data generators as ``fit``'s ``data_rng`` too, so a resumed cell continues their streams.
        """
        options: dict[str, Any] = {"progress": self.progress, "description": cell.id}
        if self.checkpoint_every:
            directory = os.path.join(self._checkpoint_root(cell), self.fingerprints.get(cell.id, "unversioned"))
            options.update(checkpoint_dir=directory, checkpoint_every=self.checkpoint_every, keep=self.checkpoint_keep)
        if self.tensorboard:
            options["tensorboard_dir"] = os.path.join(self.workdir, TENSORBOARD_DIR, file_name(cell))
        return options

    def fit(self, cell: Cell, state: Any, batches: Callable[[int], Any], num_steps: int,
            **kwargs: Any) -> tuple[Any, list[dict[str, Any]]]:
        """:func:`attnjax.train.fit` inside ``cell``: its log file (:meth:`log_path`), progress and checkpoints
        (:meth:`fit_options`), ``rng`` defaulting to ``cell.key("steps")``; ``kwargs`` go to ``fit`` as they are.
        Returns ``(state, history)``."""
        with open(self.log_path(cell), "w", encoding="utf-8") as log_file:
            return fit(state, batches, num_steps, log_file=log_file,
                       **{"rng": cell.key("steps"), **self.fit_options(cell), **kwargs})

    def log_path(self, cell: Cell) -> str:
        """``logs/<cell id>.jsonl`` in the workdir (one JSON object per logged step)."""
        return os.path.join(self.workdir, LOGS_DIR, f"{file_name(cell)}.jsonl")

    def _checkpoint_root(self, cell: Cell) -> str:
        return os.path.join(self.workdir, CHECKPOINTS_DIR, file_name(cell))

    def prune_checkpoints(self, cell: Cell) -> None:
        """Removes ``cell``'s checkpoints of other fingerprints (an earlier config's: they can never resume)."""
        root, keep = self._checkpoint_root(cell), self.fingerprints.get(cell.id, "unversioned")
        if os.path.isdir(root):
            for name in os.listdir(root):
                if name != keep:
                    shutil.rmtree(os.path.join(root, name), ignore_errors=True)

    def remove_checkpoints(self, cell: Cell) -> None:
        """Removes every checkpoint of ``cell`` (it finished ok: its result is in results.json)."""
        shutil.rmtree(self._checkpoint_root(cell), ignore_errors=True)
        try:
            os.rmdir(os.path.join(self.workdir, CHECKPOINTS_DIR))  # only if no other cell has checkpoints
        except OSError:
            pass


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A study as the harness sees it.

    Attributes:
        name: recorded in results.json; a workdir holding another experiment's results is refused.
        cells: ``config -> [Cell]``, the whole grid (before ``only``).
        run_cell: ``(cell, config, context) -> metrics`` (a JSON-serializable dict); a module-level function,
            so worker processes can receive it.
        validate: ``config -> None``; resolves every name and builds every model config, raising
            ValueError/TypeError with the valid choices. Runs once, before anything is written.
        cell_config: ``(config, cell) -> dict`` of everything that determines this cell's result; its
            hash is the cell's fingerprint for resuming. Default: the whole config minus the harness keys
            and ``sweep_keys``.
        sweep_keys: config keys that only list the grid (tasks, models, seeds): adding a seed must not
            invalidate finished cells.
        report: ``(results, workdir) -> summary markdown``; writes tables and plots from the results alone.
        describe: ``metrics -> short text`` for the progress line.
    """

    name: str
    cells: Callable[[ml_collections.ConfigDict], list[Cell]]
    run_cell: Callable[[Cell, ml_collections.ConfigDict, Context], dict[str, Any]]
    validate: Callable[[ml_collections.ConfigDict], None] = lambda config: None
    cell_config: Callable[[ml_collections.ConfigDict, Cell], dict[str, Any]] | None = None
    sweep_keys: tuple[str, ...] = ()
    report: Callable[[dict[str, Any], str], str] | None = None
    describe: Callable[[dict[str, Any]], str] = lambda metrics: ""

    def fingerprint(self, config: ml_collections.ConfigDict, cell: Cell) -> str:
        if self.cell_config is not None:
            determined = self.cell_config(config, cell)
        else:
            skip = set(HARNESS_KEYS) | set(self.sweep_keys)
            determined = {k: v for k, v in config.to_dict().items() if k not in skip}
        return fingerprint(cell.id, determined)


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated config: its whole grid, the selected cells and the checked harness settings."""

    experiment: Experiment
    config: ml_collections.ConfigDict
    grid: tuple[Cell, ...]
    selected: tuple[Cell, ...]
    settings: Settings


def plan(experiment: Experiment, config: ml_collections.ConfigDict) -> Plan:
    """Validates ``config`` once and returns the :class:`Plan`; writes nothing.

    Raises:
        ValueError, TypeError: any bad name or value, before anything trains or is written.
        ImportError: ``config.tensorboard`` without tensorboardX.
    """
    checked = settings(config)
    if checked.workers > 1:
        check_sendable(experiment.run_cell)
    experiment.validate(config)
    everything = tuple(experiment.cells(config))
    return Plan(experiment, config, everything, tuple(select(everything, checked.only)), checked)


def format_seconds(s: float) -> str:
    """``"4m05s"`` or ``"2h07m"``."""
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run(the_plan: Plan, workdir: str, out: IO[str] | None = None) -> dict[str, Any]:
    """Runs the selected, unfinished cells of a plan into ``workdir``, printing progress to ``out``
    (None: the current ``sys.stdout``).

    Returns:
        The results dict (as written to ``workdir/results.json``), with ``num_failed``, ``complete``
        (every cell of the grid, not only the selected ones, finished ok) and ``wall_seconds`` (the wall
        time of the runs that wrote the file, summed over resumptions).

    Raises:
        ValueError: a workdir holding another experiment's results (nothing written).
    """
    out = sys.stdout if out is None else out
    experiment, config, s = the_plan.experiment, the_plan.config, the_plan.settings
    fingerprints = {c.id: experiment.fingerprint(config, c) for c in the_plan.grid}
    previous = load_results(workdir)
    if previous is not None and previous.get("experiment") != experiment.name:
        raise ValueError(f"workdir {workdir!r} holds results of experiment {previous.get('experiment')!r}, "
                         f"not {experiment.name!r}; pick another --workdir")
    kept = {cid: e for cid, e in (previous or {}).get("cells", {}).items()
            if fingerprints.get(cid) == e.get("fingerprint")}
    results: dict[str, Any] = {"experiment": experiment.name, "config": config.to_dict(),
                               "environment": environment_info(), "num_cells": len(the_plan.grid), "cells": {}}
    in_grid_order = lambda cells: {c.id: cells[c.id] for c in the_plan.grid if c.id in cells}  # noqa: E731
    results["cells"] = in_grid_order(kept)
    wall_before = (previous or {}).get("wall_seconds") if kept else None
    if wall_before is not None:
        results["wall_seconds"] = wall_before
    os.makedirs(os.path.join(workdir, LOGS_DIR), exist_ok=True)
    context = Context(workdir, s.progress, s.checkpoint_every, s.checkpoint_keep, fingerprints, s.tensorboard)
    todo = [c for c in the_plan.selected if results["cells"].get(c.id, {}).get("status") != "ok"]
    num_workers = min(s.workers, len(todo)) or 1
    on = f" on {num_workers} worker processes" if num_workers > 1 else ""
    print(f"{experiment.name}: {len(the_plan.grid)} cells in the grid, {len(the_plan.selected)} selected, "
          f"{len(the_plan.selected) - len(todo)} already done, {len(todo)} to run{on} -> {workdir}",
          file=out, flush=True)
    for cell in todo:
        context.prune_checkpoints(cell)
    # On disk before any cell runs: a run stopped early (a dead worker, a kill) leaves this config's kept
    # cells in results.json, however soon it stops.
    results = save_results(workdir, results)
    if num_workers > 1:  # bars of several processes would garble each other unless asked for
        outcomes = run_in_workers(experiment.run_cell, todo, config,
                                  dataclasses.replace(context, progress=context.progress is True), num_workers)
    else:
        outcomes = ((cell, execute_cell(experiment.run_cell, cell, config, context)) for cell in todo)
    t_start = time.perf_counter()
    for i, (cell, outcome) in enumerate(outcomes, 1):
        entry: dict[str, Any] = {"cell": cell.as_dict(), "fingerprint": fingerprints[cell.id], **outcome}
        results["cells"] = in_grid_order({**results["cells"], cell.id: entry})
        results["wall_seconds"] = round((wall_before or 0.0) + time.perf_counter() - t_start, 1)
        results = save_results(workdir, results)
        if entry["status"] == "ok":  # after its result is on disk; a failed cell keeps them to resume from
            context.remove_checkpoints(cell)
        elapsed = time.perf_counter() - t_start
        eta = elapsed / i * (len(todo) - i)
        status = experiment.describe(entry["metrics"]) if entry["status"] == "ok" else f"FAILED {entry['error']}"
        print(f"[{i}/{len(todo)}] {cell.id}: {status} ({entry['seconds']:.1f}s; "
              f"elapsed {format_seconds(elapsed)}, ETA {format_seconds(eta)})", file=out, flush=True)
    return save_results(workdir, results)
