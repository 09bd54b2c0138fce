"""Running a grid's cells: one at a time in this process, or on several single-threaded worker processes.

Small models on a CPU use several cores poorly from one process; processes pinned one to a core, each
with XLA single-threaded, use them better. ``config.workers`` (a harness key: it never changes a
cell's fingerprint) picks the mode:

* ``1``: every cell in this process, XLA with its default threads;
* ``N > 1``: ``N`` worker processes (``spawn``), each with XLA single-threaded and, when the machine has
  that many cores, pinned to its own core. They take cells from one queue and send each cell's outcome
  back; this process alone writes results.json and prints progress, so the files are the same as with
  one process;
* ``"auto"``: on a CPU backend, one worker per available core (at most :data:`MAX_AUTO_WORKERS`); on an
  accelerator, 1 (processes would compete for the device).

A cell's result depends on its fields, not on which worker runs it or in what order; but XLA's thread
count changes the order of floating-point sums, so a multi-threaded run (``workers=1``) and a
single-threaded one (any ``N > 1``) agree only up to rounding, which training can amplify.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import threading
import time
import traceback
from typing import Any, Callable, Iterator, Sequence

import ml_collections

MAX_AUTO_WORKERS = 8
SINGLE_THREAD_FLAG = "--xla_cpu_multi_thread_eigen=false"
_POLL_SECONDS = 1.0


def execute_cell(run_cell: Callable[..., dict[str, Any]], cell, config: ml_collections.ConfigDict,
                 context) -> dict[str, Any]:
    """Runs one cell: ``{"status": "ok", "metrics": ...}`` or ``{"status": "failed", "error", "traceback"}``,
    with ``seconds``. An exception is recorded, not raised, so the rest of the grid runs."""
    t0 = time.perf_counter()
    try:
        outcome: dict[str, Any] = {"status": "ok", "metrics": run_cell(cell, config, context)}
    except Exception as err:  # noqa: BLE001 - record it, run the rest of the grid
        frames = traceback.extract_tb(err.__traceback__)[-4:]
        outcome = {"status": "failed", "error": f"{type(err).__name__}: {err}",
                   "traceback": [f"{f.filename}:{f.lineno} in {f.name}: {f.line}" for f in frames]}
    outcome["seconds"] = time.perf_counter() - t0
    return outcome


def available_cores() -> list[int]:
    """The cores this process may run on (its affinity set where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def workers_setting(config: ml_collections.ConfigDict) -> int:
    """``config.workers`` as a count: an int >= 1 (or its digits, as a command line sets a str field), or
    ``"auto"`` (see the module docstring). Default 1.

    Raises:
        ValueError: anything else.
    """
    given = value = config.get("workers", 1)
    if isinstance(value, str) and value.isdigit():  # a str field ("auto" by default) overridden on the command line
        value = int(value)
    if value == "auto":
        import jax

        return min(len(available_cores()), MAX_AUTO_WORKERS) if jax.default_backend() == "cpu" else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"config.workers must be an int >= 1 or 'auto', got {given!r}")
    return value


def check_sendable(run_cell: Callable[..., dict[str, Any]]) -> None:
    """Raises ValueError unless ``run_cell`` can be sent to a worker process (a module-level function)."""
    try:
        pickle.dumps(run_cell)
    except Exception as err:  # noqa: BLE001 - any pickling failure means the same thing here
        raise ValueError(f"config.workers > 1 sends the experiment's run_cell to worker processes, so it must be a "
                         f"module-level function; {run_cell!r} is not ({err}). Use config.workers=1.") from None


@contextlib.contextmanager
def _single_threaded_xla() -> Iterator[None]:
    """XLA_FLAGS with XLA:CPU single-threaded, for processes started inside (spawn copies the environment)."""
    old = os.environ.get("XLA_FLAGS")
    os.environ["XLA_FLAGS"] = f"{old or ''} {SINGLE_THREAD_FLAG}".strip()
    try:
        yield
    finally:
        if old is None:
            del os.environ["XLA_FLAGS"]
        else:
            os.environ["XLA_FLAGS"] = old


def _exit_with_parent(parent_pid: int) -> None:
    """Ends this worker once its parent is gone (killed: no ``finally`` ran to stop the workers), instead of
    training cells whose outcome nobody will record, on cores the next run needs."""
    while os.getppid() == parent_pid:
        time.sleep(_POLL_SECONDS)
    os._exit(1)


def _worker(run_cell, config_dict: dict, context, tasks, done, core: int | None) -> None:
    """A worker process: runs cells from ``tasks`` (``None`` ends it) and puts ``(cell id, outcome)`` on ``done``."""
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    if core is not None:
        os.sched_setaffinity(0, {core})
    config = ml_collections.ConfigDict(config_dict)
    while (cell := tasks.get()) is not None:
        done.put((cell.id, execute_cell(run_cell, cell, config, context)))


def _next_outcome(done, processes, by_id):
    """The next ``(cell, outcome)`` from ``done``; raises RuntimeError once a worker has died or all have
    exited with nothing left to read."""
    idle_polls = 0
    while True:
        try:
            cid, outcome = done.get(timeout=_POLL_SECONDS)
            return by_id[cid], outcome
        except queue.Empty:
            dead = [(i, p.exitcode) for i, p in enumerate(processes) if p.exitcode not in (None, 0)]
            idle_polls += not any(p.is_alive() for p in processes)
            if dead or idle_polls > 2:
                raise RuntimeError(f"worker processes stopped with cells left to run ((worker, exit code): "
                                   f"{dead or 'all exited'}); the finished cells are in results.json: rerun the "
                                   f"same command to resume") from None


def run_in_workers(run_cell: Callable[..., dict[str, Any]], cells: Sequence[Any], config: ml_collections.ConfigDict,
                   context, workers: int) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Runs ``cells`` on ``workers`` processes; yields ``(cell, outcome)`` as each finishes (any order).

    Raises:
        ValueError: ``run_cell`` cannot be sent to another process (a lambda or a nested function).
        RuntimeError: a worker process died (killed, out of memory) with cells left; the cells already
            yielded are kept by the caller, so rerunning resumes.
    """
    import multiprocessing

    check_sendable(run_cell)
    ctx = multiprocessing.get_context("spawn")  # fork would copy this process's JAX runtime and its threads
    tasks, done = ctx.Queue(), ctx.Queue()
    for cell in cells:
        tasks.put(cell)
    for _ in range(workers):
        tasks.put(None)
    cores = available_cores()
    pin = workers <= len(cores) and hasattr(os, "sched_setaffinity")
    by_id = {cell.id: cell for cell in cells}
    with _single_threaded_xla():
        processes = [ctx.Process(target=_worker, daemon=True,
                                 args=(run_cell, config.to_dict(), context, tasks, done,
                                       cores[i] if pin else None))
                     for i in range(workers)]
        for p in processes:
            p.start()
    try:
        for _ in range(len(cells)):
            yield _next_outcome(done, processes, by_id)
        for p in processes:
            p.join()
    finally:
        for p in processes:
            if p.is_alive():
                p.terminate()
