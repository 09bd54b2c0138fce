"""The one experiment harness: a grid of cells, run, recorded, resumed and reported the same way everywhere.

An experiment is an :class:`Experiment` (how to list its cells, validate its config, run one cell and
report) plus an ``ml_collections`` config file. The harness owns everything else:

* **cells**: a grid (task × model × variant × seed × lr ...) of :class:`Cell`; each cell draws its random
  streams from its own field values (:meth:`Cell.rng`, :meth:`Cell.key`), so results do not depend
  on the order cells run in, on ``--config.only`` or on resuming;
* **validation before any step**: ``experiment.validate`` builds every model config and resolves every
  name, and ``--config.only`` is parsed, before a directory is created; a bad value is an absl usage
  error that lists the valid names;
* **results.json**, rewritten atomically after every cell: the config, the environment (versions,
  devices, git commit) and one entry per cell (``ok`` with its metrics, or ``failed`` with the error
  and a traceback summary);
* **resume by default**: rerunning the same command on the same workdir skips cells that finished
  with the same *cell fingerprint* (a hash of what determines that cell's result,
  ``experiment.cell_config``) and runs the rest; entries of cells no longer in the grid, or whose
  fingerprint changed, are dropped, so results.json always describes the current config's grid;
* **failed cells** are recorded while the rest of the grid runs; the process exits with the number
  of failed cells (0: all ran);
* **checkpoints inside a cell** (``--config.checkpoint_every=N``, 0 = off): :meth:`Context.checkpoint_options`
  gives a cell's ``fit`` a directory under ``<workdir>/checkpoints/`` keyed by the cell's fingerprint; a
  preempted cell resumes from its newest checkpoint when the same command runs again, and the directory
  is removed once the cell finishes ok;
* **workers** (``--config.workers=N`` or ``"auto"``): cells run on N single-threaded worker processes, this
  process alone writing results.json (:mod:`experiments.workers`);
* **selection**: ``--config.only="task=parity_check|reverse_string,model=lstm"`` or ``"shard=0/4"``
  runs one part of a grid; parts run into separate workdirs are joined with :func:`merge_results`;
* **reporting**: a progress line per cell with an ETA, then ``experiment.report`` writes summary
  tables and plots from the results alone (``--report_only`` rebuilds them without training).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import time
import zlib
from typing import IO, Any, Callable, Iterable, Mapping, Sequence

import ml_collections
import numpy as np

from attnjax.results import environment_info, write_json
from experiments.workers import check_sendable, execute_cell, run_in_workers, workers_setting

# Config keys of the harness itself: they never change a cell's result, so they are not in its fingerprint.
HARNESS_KEYS = ("only", "progress", "checkpoint_every", "checkpoint_keep", "tensorboard", "workers")
CHECKPOINTS_DIR, TENSORBOARD_DIR = "checkpoints", "tensorboard"
RESULTS_FILE = "results.json"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of a grid: ordered ``(field, value)`` pairs such as ``(("task", "parity_check"), ("seed", 0))``.

    Values are str, int, float or bool. The cell's :attr:`id` (``"task=parity_check/seed=0"``) keys its
    entry in results.json.
    """

    fields: tuple[tuple[str, Any], ...]

    @property
    def id(self) -> str:
        return "/".join(f"{k}={v}" for k, v in self.fields)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.fields)

    def __getitem__(self, name: str) -> Any:
        for k, v in self.fields:
            if k == name:
                return v
        raise KeyError(f"cell {self.id} has no field {name!r}")

    def _entropy(self, stream: str, fields: Sequence[str] | None) -> list[int]:
        names = [k for k, _ in self.fields] if fields is None else list(fields)
        # crc32 of text is stable across processes and machines (Python's hash() is salted).
        return [zlib.crc32(stream.encode())] + [zlib.crc32(f"{n}={self[n]}".encode()) for n in names]

    def rng(self, stream: str, fields: Sequence[str] | None = None) -> np.random.Generator:
        """A NumPy generator for ``stream`` determined by the named fields only (default: all).

        Keying a data stream on ``("task", "seed")`` alone gives every model of a seed the same
        training examples, which is what a paired comparison between models needs.
        """
        return np.random.default_rng(self._entropy(stream, fields))

    def key(self, stream: str, fields: Sequence[str] | None = None):
        """A JAX key for ``stream`` determined by the named fields only (default: all)."""
        import jax

        seed = np.random.SeedSequence(self._entropy(stream, fields)).generate_state(1)[0]
        return jax.random.key(int(seed))


def grid(**axes: Iterable[Any]) -> list[Cell]:
    """The cartesian product of ``axes`` in the order given (the last axis varies fastest)."""
    names = list(axes)
    values = [list(v) for v in axes.values()]
    return [Cell(tuple(zip(names, combo))) for combo in itertools.product(*values)]


def names(value: str | Sequence[str]) -> list[str]:
    """``"a, b,c"`` or ``["a", "b"]`` -> ``["a", "b", "c"]`` (empty entries dropped)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [s.strip() for s in items if s.strip()]


def check_names(kind: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Raises ValueError naming the unknown ``kind`` entries and listing the valid ones."""
    valid = sorted(valid)
    unknown = [g for g in given if g not in valid]
    if unknown:
        raise ValueError(f"unknown {kind} {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")


# --------------------------------------------------------------------------- selection

def check_models(config: ml_collections.ConfigDict) -> list[str]:
    """The names in ``config.models``, each checked: a model of ``attnjax.nn.MODELS`` with its own config
    block ``config.<model>`` and learning rates ``config.learning_rates.<model>`` that build an optimizer.

    Raises:
        ValueError: no model, an unknown name, a missing block or a bad learning rate.
    """
    from attnjax.nn import get_model_spec  # the harness itself stays free of Flax and optax
    from attnjax.train import make_optimizer

    models = names(config.models)
    if not models:
        raise ValueError("config.models lists no model")
    for model in models:
        get_model_spec(model)
        if model not in config or model not in config.learning_rates:
            raise ValueError(f"model {model!r} needs a config block config.{model} and config.learning_rates.{model}")
        for lr in names(config.learning_rates[model]):
            make_optimizer(float(lr), config.max_grad_norm)
    return models


def select(cells: Sequence[Cell], only: str) -> list[Cell]:
    """The cells that ``only`` keeps.

    ``only`` is empty (every cell) or comma-separated clauses that must all hold: ``field=v1|v2``
    keeps cells whose ``field`` is one of the values (compared as text); ``shard=i/n`` keeps every
    ``n``-th cell starting at ``i`` (in grid order), to split a grid across machines.

    Raises:
        ValueError: malformed clause, unknown field, a value no cell has, or a selection that is empty.
    """
    if not cells:
        raise ValueError("the config's grid has no cells (check its task/model/seed lists)")
    fields = [k for k, _ in cells[0].fields]
    kept = list(enumerate(cells))
    for clause in names(only):
        field, sep, wanted = clause.partition("=")
        field = field.strip()
        if not sep or not wanted.strip():
            raise ValueError(f"config.only clause {clause!r} must look like field=value[|value] or shard=i/n")
        if field == "shard":
            match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", wanted)
            if not match or not int(match[1]) < int(match[2]):
                raise ValueError(f"config.only shard must be i/n with 0 <= i < n, got {wanted!r}")
            i, n = int(match[1]), int(match[2])
            kept = [(j, c) for j, c in kept if j % n == i]
            continue
        if field not in fields:
            raise ValueError(f"config.only field {field!r} is not a grid field; grid fields: {', '.join(fields)}, shard")
        values = {v.strip() for v in wanted.split("|")}
        present = {str(c[field]) for c in cells}
        check_names(f"config.only value(s) of {field}", sorted(values), present)
        kept = [(j, c) for j, c in kept if str(c[field]) in values]
    if not kept:
        raise ValueError(f"config.only={only!r} selects no cell")
    return [c for _, c in kept]


# --------------------------------------------------------------------------- the experiment

def _file_name(cell: Cell) -> str:
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

    def tensorboard_options(self, cell: Cell) -> dict[str, Any]:
        """``{"tensorboard_dir": <workdir>/tensorboard/<cell id>}`` for :func:`attnjax.train.fit` when
        ``config.tensorboard`` is on, else ``{}`` (``tensorboard --logdir <workdir>/tensorboard`` shows every cell)."""
        return {"tensorboard_dir": os.path.join(self.workdir, TENSORBOARD_DIR, _file_name(cell))} if self.tensorboard else {}

    def log_path(self, cell: Cell) -> str:
        """``logs/<cell id>.jsonl`` in the workdir (one JSON object per logged step)."""
        return os.path.join(self.workdir, "logs", f"{_file_name(cell)}.jsonl")

    def _checkpoint_root(self, cell: Cell) -> str:
        return os.path.join(self.workdir, CHECKPOINTS_DIR, _file_name(cell))

    def checkpoint_options(self, cell: Cell) -> dict[str, Any]:
        """Keyword arguments for :func:`attnjax.train.fit` inside ``cell``: ``{}`` when checkpoints are off, else
        ``checkpoint_dir`` (``checkpoints/<cell id>/<fingerprint>`` in the workdir), ``checkpoint_every``, ``keep``.

        Pass the cell's data generators as ``fit``'s ``data_rng`` too, so a resumed cell continues their streams.
        """
        if not self.checkpoint_every:
            return {}
        directory = os.path.join(self._checkpoint_root(cell), self.fingerprints.get(cell.id, "unversioned"))
        return {"checkpoint_dir": directory, "checkpoint_every": self.checkpoint_every, "keep": self.checkpoint_keep}

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
    """An experiment as the harness sees it.

    Attributes:
        name: recorded in results.json; a workdir holding another experiment's results is refused.
        cells: ``config -> [Cell]``, the whole grid (before ``only``).
        run_cell: ``(cell, config, context) -> metrics`` (a JSON-serializable dict).
        validate: ``config -> None``; resolves every name and builds every model config, raising
            ValueError/TypeError with the valid choices. Runs before anything is written.
        cell_config: ``(config, cell) -> dict`` of everything that determines this cell's result; its
            hash is the cell's fingerprint for resuming. Default: the whole config minus
            :data:`HARNESS_KEYS` and ``sweep_keys``.
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
        text = json.dumps({"cell": cell.id, "config": determined}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def progress_setting(config: ml_collections.ConfigDict) -> bool | None:
    """``config.progress``: "auto" (a bar when stderr is a terminal), "on" or "off"."""
    setting = config.get("progress", "auto")
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"config.progress must be 'auto', 'on' or 'off', got {setting!r}")
    return None if setting == "auto" else setting == "on"


def tensorboard_setting(config: ml_collections.ConfigDict) -> bool:
    """``config.tensorboard`` (default False): cells write TensorBoard scalars next to their JSON logs.

    Raises:
        ValueError: not a bool.
        ImportError: True but tensorboardX is not installed (before any cell trains).
    """
    on = config.get("tensorboard", False)
    if not isinstance(on, bool):
        raise ValueError(f"config.tensorboard must be True or False, got {on!r}")
    if on:
        import importlib.util

        if importlib.util.find_spec("tensorboardX") is None:
            raise ImportError("config.tensorboard=True needs tensorboardX: pip install tensorboardX "
                              "(or pip install -e \".[tensorboard]\")")
    return on


def checkpoint_setting(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """``(config.checkpoint_every, config.checkpoint_keep)``, defaults ``(0, 2)``: steps between checkpoints
    inside a cell (0: off) and how many to keep.

    Raises:
        ValueError: ``checkpoint_every`` not an int >= 0, or ``checkpoint_keep`` not an int >= 1.
    """
    every, keep = config.get("checkpoint_every", 0), config.get("checkpoint_keep", 2)
    if not isinstance(every, int) or isinstance(every, bool) or every < 0:
        raise ValueError(f"config.checkpoint_every must be an int >= 0 (0: no checkpoints), got {every!r}")
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ValueError(f"config.checkpoint_keep must be an int >= 1, got {keep!r}")
    return every, keep


def plan(experiment: Experiment, config: ml_collections.ConfigDict) -> list[Cell]:
    """Validates ``config`` and returns the selected cells; writes nothing.

    Raises:
        ValueError, TypeError: any bad name or value, before anything trains or is written.
        ImportError: ``config.tensorboard`` without tensorboardX.
    """
    if "only" not in config:
        raise ValueError(f"the {experiment.name} config needs an 'only' field (the harness's selection)")
    progress_setting(config)
    checkpoint_setting(config)
    tensorboard_setting(config)
    if workers_setting(config) > 1:
        check_sendable(experiment.run_cell)
    experiment.validate(config)
    return select(experiment.cells(config), config.only)


def format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def load_results(workdir: str) -> dict[str, Any] | None:
    path = os.path.join(workdir, RESULTS_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def ok_runs(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat dict (cell fields then metrics) per finished cell, in grid order."""
    return [{**e["cell"], **e["metrics"]} for e in results["cells"].values() if e["status"] == "ok"]


def run(experiment: Experiment, config: ml_collections.ConfigDict, workdir: str, out: IO[str] | None = None
        ) -> dict[str, Any]:
    """Runs the selected, unfinished cells of ``config``'s grid into ``workdir``, printing progress to ``out``
    (None: the current ``sys.stdout``).

    Returns:
        The results dict (as written to ``workdir/results.json``), with ``num_failed`` and ``complete``
        (every cell of the grid, not only the selected ones, finished ok).

    Raises:
        ValueError: invalid config (nothing written), or a workdir holding another experiment.
    """
    out = sys.stdout if out is None else out
    selected = plan(experiment, config)
    everything = experiment.cells(config)
    fingerprints = {c.id: experiment.fingerprint(config, c) for c in everything}
    previous = load_results(workdir)
    if previous is not None and previous.get("experiment") != experiment.name:
        raise ValueError(f"workdir {workdir!r} holds results of experiment {previous.get('experiment')!r}, "
                         f"not {experiment.name!r}; pick another --workdir")
    kept = {cid: e for cid, e in (previous or {}).get("cells", {}).items()
            if fingerprints.get(cid) == e.get("fingerprint")}
    results: dict[str, Any] = {"experiment": experiment.name, "config": config.to_dict(),
                               "environment": environment_info(), "num_cells": len(everything), "cells": {}}
    # Grid order in the file, whatever order the parts ran in.
    results["cells"] = {c.id: kept[c.id] for c in everything if c.id in kept}
    path = os.path.join(workdir, RESULTS_FILE)
    os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
    every, keep = checkpoint_setting(config)
    context = Context(workdir, progress_setting(config), every, keep, fingerprints, tensorboard_setting(config))
    todo = [c for c in selected if results["cells"].get(c.id, {}).get("status") != "ok"]
    num_workers = min(workers_setting(config), len(todo)) or 1
    on = f" on {num_workers} worker processes" if num_workers > 1 else ""
    print(f"{experiment.name}: {len(everything)} cells in the grid, {len(selected)} selected, "
          f"{len(selected) - len(todo)} already done, {len(todo)} to run{on} -> {workdir}", file=out, flush=True)
    for cell in todo:
        context.prune_checkpoints(cell)
    if num_workers > 1:  # bars of several processes would garble each other unless asked for
        outcomes = run_in_workers(experiment.run_cell, todo, config,
                                  dataclasses.replace(context, progress=context.progress is True), num_workers)
    else:
        outcomes = ((cell, execute_cell(experiment.run_cell, cell, config, context)) for cell in todo)
    t_start = time.perf_counter()
    for i, (cell, outcome) in enumerate(outcomes, 1):
        entry: dict[str, Any] = {"cell": cell.as_dict(), "fingerprint": fingerprints[cell.id], **outcome}
        results["cells"][cell.id] = entry
        results["cells"] = {c.id: results["cells"][c.id] for c in everything if c.id in results["cells"]}
        write_json(path, _finish(results))
        if entry["status"] == "ok":  # after its result is on disk; a failed cell keeps them to resume from
            context.remove_checkpoints(cell)
        elapsed = time.perf_counter() - t_start
        eta = elapsed / i * (len(todo) - i)
        status = experiment.describe(entry["metrics"]) if entry["status"] == "ok" else f"FAILED {entry['error']}"
        print(f"[{i}/{len(todo)}] {cell.id}: {status} ({entry['seconds']:.1f}s; "
              f"elapsed {format_seconds(elapsed)}, ETA {format_seconds(eta)})", file=out, flush=True)
    results = _finish(results)
    write_json(path, results)
    return results


def _finish(results: dict[str, Any]) -> dict[str, Any]:
    """Sets the counts: ``num_ok``, ``num_failed`` and ``complete`` (every cell of the grid ok)."""
    entries = results["cells"].values()
    results["num_failed"] = sum(e["status"] == "failed" for e in entries)
    results["num_ok"] = sum(e["status"] == "ok" for e in entries)
    results["complete"] = results["num_ok"] == results["num_cells"]
    return results


def describe_fit(metrics: Mapping[str, Any]) -> str:
    """The progress line of a classifier-style cell: ``train 93.1%, test 90.2%`` (``val`` on a validation split)."""
    held = "test" if "test_accuracy" in metrics else "val"
    return f"train {100 * metrics['train_accuracy']:.1f}%, {held} {100 * metrics[f'{held}_accuracy']:.1f}%"


def summary_tail(results: Mapping[str, Any], figures: Sequence[str] = ()) -> list[str]:
    """The closing markdown lines every experiment's ``summary.md`` shares: the failed cells with their
    errors (never dropped silently) and links to the plots."""
    out: list[str] = []
    failed = {cid: e for cid, e in results.get("cells", {}).items() if e.get("status") == "failed"}
    if failed:
        out += ["", f"## Failed cells ({len(failed)})", "",
                *[f"- `{cid}`: {e.get('error', 'no error recorded')}" for cid, e in failed.items()]]
    if figures:
        out += ["", "## Plots", "", *[f"![{name}]({name})" for name in figures]]
    return out


def merge_results(workdir: str, parts: Sequence[str]) -> dict[str, Any]:
    """Joins the results.json of workdirs that ran parts of one grid (``--config.only``) into ``workdir``.

    Entries must come from the same experiment; for a cell present in several parts an ``ok`` entry
    wins over a failed one. Raises ValueError on mixed experiments or a missing results file.
    """
    merged: dict[str, Any] | None = None
    for part in parts:
        loaded = load_results(part)
        if loaded is None:
            raise ValueError(f"no {RESULTS_FILE} in {part!r}")
        if merged is None:
            merged = loaded
            continue
        if loaded["experiment"] != merged["experiment"]:
            raise ValueError(f"cannot merge {loaded['experiment']!r} results into {merged['experiment']!r}")
        for cid, entry in loaded["cells"].items():
            if merged["cells"].get(cid, {}).get("status") != "ok":
                merged["cells"][cid] = entry
    if merged is None:
        raise ValueError("merge_results needs at least one part")
    merged = _finish(merged)
    write_json(os.path.join(workdir, RESULTS_FILE), merged)
    return merged


# --------------------------------------------------------------------------- the command line

def _config_flag(script: str, help_text: str):
    from ml_collections import config_flags

    stem = os.path.splitext(os.path.basename(script))[0]
    default = os.path.join(os.path.dirname(os.path.abspath(script)), "configs", f"{stem}.py")
    return config_flags.DEFINE_config_file("config", default, help_text, lock_config=True)


def config_cli(script: str, check: Callable[[ml_collections.ConfigDict], None],
               run_config: Callable[[ml_collections.ConfigDict], Any]) -> None:
    """Runs a one-shot program (a benchmark) on its ``configs/<name>.py``: ``check`` first, its ValueError
    becoming an absl usage error, then ``run_config``. Call under ``if __name__ == "__main__"``."""
    from absl import app

    config = _config_flag(script, "Config (file[:preset]); override any field with --config.x=y.")

    def main(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        try:
            check(config.value)
        except ValueError as err:
            raise app.UsageError(str(err)) from None
        run_config(config.value)

    app.run(main)


def cli(experiment: Experiment, script: str, default_workdir: str) -> None:
    """Runs ``experiment`` as a command line program (call it under ``if __name__ == "__main__"``).

    Flags: ``--config`` (the script's ``configs/<name>.py`` by default, ``file[:preset]``, with
    ``--config.x=y`` overrides), ``--workdir`` and ``--report_only``. They are defined here, not at import,
    so several experiment modules can be imported into one process (tests, notebooks).
    """
    from absl import app, flags

    config = _config_flag(script, "Experiment config (file[:preset]).")
    workdir = flags.DEFINE_string("workdir", os.path.join("results", default_workdir),
                                  "Directory receiving results.json, summary.md, plots and logs/.")
    report_only = flags.DEFINE_bool("report_only", False, "Rebuild summary.md and plots from results.json.")
    app.run(lambda argv: main(experiment, argv, config.value, workdir.value, report_only.value))


def main(experiment: Experiment, argv: Sequence[str], config: ml_collections.ConfigDict, workdir: str,
         report_only: bool = False) -> None:
    """absl ``main`` body: validate (usage error on a bad value), run, report, exit with the failed-cell count."""
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
            plan(experiment, config)
        except (ValueError, TypeError) as err:
            raise app.UsageError(str(err)) from None
        results = run(experiment, config, workdir)
    if experiment.report is not None and results["num_ok"]:
        print("\n" + experiment.report(results, workdir))
    print(f"{results['num_ok']}/{results['num_cells']} cells ok, {results['num_failed']} failed; files in {workdir}")
    if results["num_failed"]:
        sys.exit(min(results["num_failed"], 100))
