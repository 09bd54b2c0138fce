"""One process of the two-process CPU training test in ``test_distributed.py`` (not collected by pytest).

Run as ``python -m tests.parallel.multihost_worker PROCESS_ID NUM_PROCESSES PORT OUT_DIR``: it joins the job
through :func:`attnjax.parallel.initialize_from_config` (coordinator ``127.0.0.1:PORT``), builds a mesh over
every process's 2 CPU devices, generates only its own rows of each global batch, trains :data:`STEPS`
steps with the jit step and again with the shard_map step, then with :func:`attnjax.train.fit` (every process
passes the global batches and feeds its own rows), saving a checkpoint to ``OUT_DIR/checkpoints``, then runs
``fit`` once more from the initial state, which must restore that checkpoint. It writes each run's losses and
final parameters to ``OUT_DIR/process_{PROCESS_ID}.npz``. The test imports :func:`initial_state` and
:func:`batch_rows` to compute the one-process reference from the same state and data.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

B, L, V, C, STEPS = 8, 6, 5, 3, 3
LOCAL_DEVICES = 2


def initial_state():
    from attnjax import nn as ann, train

    model = ann.build_model("transformer", C, dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=16))
    # SGD: see tests/train/test_parallel_steps.py (Adam would amplify last-bit differences).
    return train.create_train_state(model, jax.random.key(0), jnp.zeros((1, L, V)), optax.sgd(0.1))


def batch_rows(step: int, rows: slice) -> dict[str, np.ndarray]:
    """Rows ``rows`` of the global batch of ``step``; each row is seeded by (step, row), so a process
    generates exactly its own rows and the union over processes is the global batch."""
    out = []
    for row in range(rows.start, rows.stop):
        rng = np.random.default_rng([step, row])
        length = int(rng.integers(1, L + 1))
        real = np.arange(L) < length
        out.append({"inputs": np.eye(V, dtype=np.float32)[rng.integers(0, V, L)] * real[:, None],
                    "targets": rng.integers(0, C, L).astype(np.int32),
                    "loss_mask": (real & (rng.random(L) < 0.7)).astype(np.float32),
                    "seq_lengths": np.int32(length)})
    return {k: np.stack([r[k] for r in out]) for k in out[0]}


def _train(step_fn, mesh) -> tuple[list[float], dict]:
    from attnjax.parallel import global_batch_from_process_data, process_batch_rows, to_global

    state, rng, losses = to_global(initial_state(), mesh), to_global(jax.random.key(7), mesh), []
    rows = process_batch_rows(mesh, B)
    for step in range(STEPS):
        batch = global_batch_from_process_data(batch_rows(step, rows), mesh, B)
        state, metrics = step_fn(state, batch, rng)
        losses.append(float(metrics["loss"]))  # replicated: every process can read it
    return losses, jax.tree.map(np.asarray, state.params)


def _no_batch(step: int):
    raise AssertionError(f"the resumed fit drew batch {step}: it did not restore the final checkpoint")


def _fit(mesh, checkpoint_dir: str, resumed: bool = False) -> tuple[list[float], dict]:
    from attnjax.train import fit

    # Every process passes the same global batch; fit feeds this process's rows only.
    batches = _no_batch if resumed else lambda step: batch_rows(step, slice(0, B))
    state, history = fit(initial_state(), batches, STEPS, rng=jax.random.key(7), mesh=mesh, log_every=1,
                         checkpoint_dir=checkpoint_dir)
    return [h["loss"] for h in history], jax.tree.map(np.asarray, state.params)


def main(process_id: int, num_processes: int, port: int, out_dir: str) -> None:
    jax.config.update("jax_num_cpu_devices", LOCAL_DEVICES)
    from attnjax.parallel import initialize_from_config, mesh_from_config, process_batch_rows
    from attnjax.train import make_train_step

    assert initialize_from_config({"coordinator_address": f"127.0.0.1:{port}", "num_processes": num_processes,
                                   "process_id": process_id}, initialization_timeout=60)
    assert jax.process_count() == num_processes and jax.device_count() == num_processes * LOCAL_DEVICES
    mesh = mesh_from_config()  # every device of every process on "data"
    rows = process_batch_rows(mesh, B)
    assert rows.stop - rows.start == B // num_processes
    results = {"rows": np.array([rows.start, rows.stop])}
    runs = {"jit": lambda: _train(make_train_step(parallel="jit", mesh=mesh), mesh),
            "shard_map": lambda: _train(make_train_step(parallel="shard_map", mesh=mesh), mesh),
            # The second fit finds the first one's final checkpoint and restores it (no step left to run).
            "fit": lambda: _fit(mesh, f"{out_dir}/checkpoints"), "fit_resumed": lambda: _fit(mesh, f"{out_dir}/checkpoints", resumed=True)}
    for name, run in runs.items():
        losses, params = run()
        results[f"{name}/losses"] = np.array(losses)
        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        results.update({f"{name}/{jax.tree_util.keystr(path)}": leaf for path, leaf in leaves})
    np.savez(f"{out_dir}/process_{process_id}.npz", **results)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
