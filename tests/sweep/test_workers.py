"""Cells on worker processes: the same results.json as one process, failures recorded, deaths reported, bad values."""

import json
import os
import signal
import subprocess
import sys
import time

import ml_collections
import pytest

from attnjax import sweep
from attnjax.sweep import workers


def _config(**overrides):
    return ml_collections.ConfigDict(dict(dict(tasks="a,b,c", num_seeds=2, only="", progress="off", workers=1,
                                               fail="", die="", nap=0), **overrides))


def _cells(config):
    return sweep.grid(task=sweep.names(config.tasks), seed=range(config.num_seeds))


def run_cell(cell, config, context):
    """Module level, so worker processes can import it. Reports the worker's pid and XLA flags."""
    if cell.id == config.die:
        os._exit(3)  # as if the kernel killed the worker
    if cell.id == config.fail:
        raise RuntimeError(f"boom in {cell.id}")
    if config.nap:  # a long cell: its worker writes its pid, then sleeps
        with open(os.path.join(context.workdir, f"pid-{os.getpid()}"), "w") as f:
            f.write(cell.id)
        time.sleep(config.nap)
    with open(context.log_path(cell), "w") as f:
        f.write("{}\n")
    return {"value": float(cell.rng("data", ("task", "seed")).random()), "pid": os.getpid(),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


# fail and die are test switches, not results: changing them must not invalidate finished cells.
EXPERIMENT = sweep.Experiment("toy_workers", _cells, run_cell, sweep_keys=("tasks", "num_seeds", "fail", "die", "nap"))


def _values(results):
    return {cid: e["metrics"]["value"] for cid, e in results["cells"].items() if e["status"] == "ok"}


@pytest.mark.slow
def test_workers_write_what_one_process_writes(tmp_path, capsys):
    one = sweep.run(sweep.plan(EXPERIMENT, _config()), str(tmp_path / "one"))
    two = sweep.run(sweep.plan(EXPERIMENT, _config(workers=2, fail="task=b/seed=1")), str(tmp_path / "two"))
    assert "6 to run on 2 worker processes" in capsys.readouterr().out
    assert list(two["cells"]) == list(one["cells"])  # grid order in the file, whatever order cells finished in
    failed = two["cells"].pop("task=b/seed=1")
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom in task=b/seed=1"
    assert _values(two) == {cid: v for cid, v in _values(one).items() if cid != "task=b/seed=1"}
    pids = {e["metrics"]["pid"] for e in two["cells"].values()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert all(workers.SINGLE_THREAD_FLAG in e["metrics"]["xla_flags"] for e in two["cells"].values())
    assert len(os.listdir(tmp_path / "two" / "logs")) == 5
    on_disk = json.loads((tmp_path / "two" / "results.json").read_text())
    assert on_disk["num_failed"] == 1 and on_disk["num_ok"] == 5
    # Resume on workers: only the failed cell runs again.
    again = sweep.run(sweep.plan(EXPERIMENT, _config(workers=2)), str(tmp_path / "two"))
    assert again["complete"] and _values(again) == _values(one)
    assert "1 to run -> " in capsys.readouterr().out  # one cell left: no worker processes


@pytest.mark.slow
def test_a_dead_worker_is_a_clear_error_and_finished_cells_stay(tmp_path):
    with pytest.raises(RuntimeError, match="worker processes stopped with cells left to run.*rerun the same"):
        sweep.run(sweep.plan(EXPERIMENT, _config(workers=2, tasks="a", num_seeds=4, die="task=a/seed=0")), str(tmp_path))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert "task=a/seed=0" not in saved["cells"]
    assert all(e["status"] == "ok" for e in saved["cells"].values())
    resumed = sweep.run(sweep.plan(EXPERIMENT, _config(tasks="a", num_seeds=4)), str(tmp_path))
    assert resumed["complete"]


@pytest.mark.slow
def test_workers_exit_when_the_parent_is_killed(tmp_path):
    # A killed parent runs no cleanup; its workers must not go on training cells nobody records.
    script = ("import sys; from attnjax import sweep; from tests.sweep.test_workers import EXPERIMENT, _config; "
              "sweep.run(sweep.plan(EXPERIMENT, _config(workers=2, nap=120)), sys.argv[1])")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=root,
                              env=dict(os.environ, PYTHONPATH=root), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(pids := [int(f.split("-")[1]) for f in os.listdir(tmp_path) if f.startswith("pid-")]) < 2:
        assert time.monotonic() < deadline and parent.poll() is None, "the workers never started their cells"
        time.sleep(0.5)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while alive := [pid for pid in pids if _alive(pid)]:
        assert time.monotonic() < deadline, f"workers {alive} outlived their killed parent"
        time.sleep(0.5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # an exited child of a dead parent may linger as a zombie
        return f.read().split()[2] != "Z"


def test_a_nested_run_cell_is_refused_before_any_process_starts(tmp_path):
    def nested(cell, config, context):
        return {}

    experiment = sweep.Experiment("toy_nested", _cells, nested)
    with pytest.raises(ValueError, match="must be a module-level function.*config.workers=1"):
        sweep.run(sweep.plan(experiment, _config(workers=2)), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_command_line_strings_count_too():
    # A config declaring workers = "auto" (a str field) gets "--config.workers=2" as the string "2".
    assert workers.workers_setting(_config(workers="2")) == 2


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "two", "Auto", "0", " 2"])
def test_bad_workers_value_fails_before_anything_is_written(tmp_path, value):
    with pytest.raises(ValueError, match=rf"config.workers must be an int >= 1 or 'auto', got {value!r}"):
        sweep.run(sweep.plan(EXPERIMENT, _config(workers=value)), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_auto_is_one_worker_per_core_on_cpu(monkeypatch):
    monkeypatch.setattr(workers, "available_cores", lambda: list(range(3)))
    assert workers.workers_setting(_config(workers="auto")) == 3  # the test machine's backend is the CPU
    monkeypatch.setattr(workers, "available_cores", lambda: list(range(64)))
    assert workers.workers_setting(_config(workers="auto")) == workers.MAX_AUTO_WORKERS
    assert workers.workers_setting(ml_collections.ConfigDict()) == 1  # absent: one process


def test_execute_cell_records_exceptions():
    cell = sweep.Cell((("task", "a"), ("seed", 0)))
    outcome = workers.execute_cell(run_cell, cell, _config(fail="task=a/seed=0"), None)
    assert outcome["status"] == "failed" and outcome["seconds"] >= 0
    assert any("run_cell" in line for line in outcome["traceback"])
