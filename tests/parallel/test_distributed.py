"""Multi-host start-up: config resolution and errors, host-local batches, and two real CPU processes
training together (jax.distributed over loopback, gloo collectives) exactly like one process.

Tolerance of the two-process test: the same float32 math as one device with another summation order
(per-device partial sums, then a 4-device all-reduce across processes), a few ulps per sum; rtol 1e-5 /
atol 1e-6 as in ``tests/train/test_parallel_steps.py`` (measured differences: < 2e-7).
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from attnjax import train
from attnjax.parallel import (data_mesh, global_batch_from_process_data, initialize_from_config, process_batch_rows,
                              to_global)
from attnjax.parallel.distributed import resolve_config
from tests.parallel import multihost_worker as worker

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240  # both processes together; a healthy run takes well under a minute on 2 busy cores


def test_resolve_config_explicit_values_win_over_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    cfg = resolve_config({"process_id": 1, "local_device_ids": [0, 1]}, env)
    assert (cfg.coordinator_address, cfg.num_processes, cfg.process_id, cfg.local_device_ids) == (
        "10.0.0.1:1234", 4, 1, (0, 1))
    with pytest.raises(ValueError, match="environment variable JAX_NUM_PROCESSES"):
        resolve_config(None, {"JAX_NUM_PROCESSES": "two"})
    with pytest.raises(ValueError, match=r"unknown keys \['port'\]"):
        resolve_config({"port": 1}, {})


def test_initialize_from_config_single_process_and_errors():
    # Nothing configured, or one process: nothing to start (this pytest process stays single-process).
    assert initialize_from_config(env={}) is False
    assert initialize_from_config({"num_processes": 1}, env={}) is False
    with pytest.raises(ValueError, match=r"missing \['process_id'\].*\['JAX_PROCESS_ID'\]"):
        initialize_from_config({"coordinator_address": "127.0.0.1:1", "num_processes": 2}, env={})
    with pytest.raises(ValueError, match=r"process_id must be in \[0, num_processes=2\), got 2"):
        initialize_from_config({"coordinator_address": "127.0.0.1:1", "num_processes": 2, "process_id": 2}, env={})
    with pytest.raises(ValueError, match="'host:port'"):
        initialize_from_config({"coordinator_address": "localhost", "num_processes": 2, "process_id": 0}, env={})


def test_host_local_batch_helpers_in_one_process():
    mesh = data_mesh(8)
    assert process_batch_rows(mesh, 16) == slice(0, 16)  # one process feeds every row
    with pytest.raises(ValueError, match="global batch size 12 must be divisible by mesh axis 'data' of size 8"):
        process_batch_rows(mesh, 12)
    local = worker.batch_rows(0, slice(0, 8))
    batch = global_batch_from_process_data(local, mesh, 8)
    assert batch["inputs"].shape == (8, worker.L, worker.V) and len(batch["inputs"].sharding.device_set) == 8
    np.testing.assert_array_equal(batch["targets"], local["targets"])
    with pytest.raises(ValueError, match=r"local_batch\['inputs'\] must hold this process's 8 rows"):
        global_batch_from_process_data({"inputs": local["inputs"][:4]}, mesh, 8)
    key = to_global(jax.random.key(5), mesh)
    assert key.sharding.is_fully_replicated and jax.random.key_data(key).tolist() == \
        jax.random.key_data(jax.random.key(5)).tolist()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_process_reference():
    step, state, losses = jax.jit(train.train_step), worker.initial_state(), []
    for i in range(worker.STEPS):
        state, metrics = step(state, worker.batch_rows(i, slice(0, worker.B)), jax.random.key(7))
        losses.append(float(metrics["loss"]))
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
    return np.array(losses), {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


@pytest.mark.slow  # ~30-45 s: two fresh processes each import JAX and compile two steps
def test_two_cpu_processes_train_together_like_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}  # jax warns: proxies can hang init
    # Optimization level 0 compiles about twice as fast; this test checks values, not speed.
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), XLA_FLAGS="--xla_backend_optimization_level=0")
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tests.parallel.multihost_worker", str(i), "2", str(port),
                               str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
    deadline, outputs = time.monotonic() + TIMEOUT_S, []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"the two processes did not finish within {TIMEOUT_S} s")
    finally:
        for p in procs:  # a failed or hung peer must not outlive the test
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{out[-4000:]}"

    want_losses, want_params = _one_process_reference()
    results = [np.load(tmp_path / f"process_{i}.npz") for i in range(2)]
    assert [r["rows"].tolist() for r in results] == [[0, 4], [4, 8]]  # each process fed its half of the batch
    for i, r in enumerate(results):
        for name in ("jit", "shard_map", "fit", "fit_resumed"):
            np.testing.assert_allclose(r[f"{name}/losses"], want_losses, rtol=1e-5, atol=1e-6,
                                       err_msg=f"process {i} {name}")
            for path, want in want_params.items():
                np.testing.assert_allclose(r[f"{name}/{path}"], want, rtol=1e-5, atol=1e-6,
                                           err_msg=f"process {i} {name} {path}")
