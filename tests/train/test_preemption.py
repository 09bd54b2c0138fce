"""A training process killed with SIGKILL mid-training and restarted ends exactly like an uninterrupted one.

Three real processes (``tests/train/preemption_worker.py``): an uninterrupted run without checkpoints; a run
killed with SIGKILL (no clean-up of any kind) once a checkpoint of a randomly chosen step or later exists,
plus a random extra delay, so the kill lands at a random step, possibly mid-save; and the same command
restarted on its checkpoint directory. The restarted run must end with the *same* parameters, optimizer
state and logged metrics (bitwise; the ``*_per_sec`` rates aside) as the uninterrupted one: on CPU, float32
and one compiled program, nothing in between is approximate (see ``test_checkpoint.py``).
"""

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np

from tests.train import preemption_worker as worker

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _start(checkpoint_dir, out_dir):
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    # Less XLA optimization: compiles several times faster; every run uses the same flags, hence the same program.
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), XLA_FLAGS="--xla_backend_optimization_level=0")
    return subprocess.Popen([sys.executable, "-m", "tests.train.preemption_worker", str(checkpoint_dir),
                             str(out_dir)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finished(proc, what):
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{out.decode()[-3000:]}"


def _checkpoint_steps(directory):
    return [int(n) for n in os.listdir(directory) if n.isdigit()] if os.path.isdir(directory) else []


def _load(out_dir):
    with np.load(out_dir / "params.npz") as npz:
        leaves = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    history = json.loads((out_dir / "history.json").read_text())
    return leaves, [{k: v for k, v in r.items() if not k.endswith("_per_sec")} for r in history]


def test_sigkill_mid_training_then_restart_matches_uninterrupted_run(tmp_path):
    chooser = random.Random()
    kill_after = chooser.randrange(worker.EVERY, worker.STEPS - 4 * worker.EVERY)  # leaves >= 12 steps to kill in
    extra = chooser.uniform(0, 3 * worker.STEP_DELAY)
    about = f"(killed once a checkpoint of step >= {kill_after} existed, plus {extra:.3f} s)"
    checkpoints = tmp_path / "checkpoints"
    reference = _start("-", tmp_path / "reference")  # runs alongside
    victim = _start(checkpoints, tmp_path / "killed")
    deadline = time.monotonic() + 240
    while not any(s >= kill_after for s in _checkpoint_steps(checkpoints)):
        assert victim.poll() is None, f"the run ended before it could be killed {about}:\n" \
                                      f"{victim.communicate()[0].decode()[-3000:]}"
        assert time.monotonic() < deadline, f"no checkpoint of step >= {kill_after} within 240 s"
        time.sleep(0.005)
    time.sleep(extra)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "params.npz").exists(), f"the run finished before the kill {about}"
    survived = max(_checkpoint_steps(checkpoints))
    assert kill_after <= survived < worker.STEPS, about

    _finished(_start(checkpoints, tmp_path / "resumed"), "the restarted run")
    _finished(reference, "the uninterrupted run")
    first = int((tmp_path / "resumed" / "first_step.txt").read_text())
    assert first == survived, f"the restarted run began at step {first}, not at its checkpoint {survived} {about}"
    resumed_leaves, resumed_history = _load(tmp_path / "resumed")
    reference_leaves, reference_history = _load(tmp_path / "reference")
    assert len(resumed_leaves) == len(reference_leaves)
    for a, b in zip(resumed_leaves, reference_leaves):
        np.testing.assert_array_equal(a, b, err_msg=about)  # bitwise
    assert resumed_history == reference_history, about
    assert [r["step"] for r in resumed_history] == [4, 8, 12, 16, 20, 24, 28, 30]
