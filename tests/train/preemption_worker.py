"""One training run for ``test_preemption.py`` (not collected by pytest).

Run as ``python -m tests.train.preemption_worker CHECKPOINT_DIR OUT_DIR`` (``CHECKPOINT_DIR`` ``-``: no
checkpoints): trains a small Transformer (dropout on, so the per-step rng matters) with Adam for :data:`STEPS`
steps on batches drawn from one seeded NumPy generator, through ``attnjax.train.fit``, saving every
:data:`EVERY` steps. It writes ``OUT_DIR/first_step.txt`` when it draws its first batch (the step it starts
from: 0, or where a checkpoint left off) and, when done, ``OUT_DIR/params.npz`` (parameters and optimizer
state, in flattening order) and ``OUT_DIR/history.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time

STEPS, EVERY, LOG_EVERY = 30, 3, 4
STEP_DELAY = 0.03  # seconds slept per batch: a window in which the test can kill the run mid-training


def main(checkpoint_dir: str, out_dir: str) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from attnjax import data, nn as ann, train

    task = data.get_task("reverse_string")
    model = ann.build_model("transformer", task.output_size,
                            dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=16, dropout_rate=0.1))
    example = jnp.zeros((1, data.padded_length(task, 4), data.vocab_size(task)))
    state = train.create_train_state(model, jax.random.key(0), example, train.make_optimizer(1e-2, 1.0))
    gen = np.random.default_rng(2024)
    os.makedirs(out_dir, exist_ok=True)
    first: list[int] = []

    def batches(step: int):
        if not first:
            first.append(step)
            with open(os.path.join(out_dir, "first_step.txt"), "w") as f:
                f.write(str(step))
        time.sleep(STEP_DELAY)
        return data.training_batch(task, gen, 8, 4)

    state, history = train.fit(state, batches, STEPS, rng=jax.random.key(3), log_every=LOG_EVERY, progress=False,
                               checkpoint_dir=None if checkpoint_dir == "-" else checkpoint_dir,
                               checkpoint_every=EVERY, keep=2, data_rng=gen)
    leaves = jax.tree.leaves(jax.device_get((state.params, state.opt_state)))
    np.savez(os.path.join(out_dir, "params.npz"), *leaves)
    with open(os.path.join(out_dir, "history.json"), "w") as f:
        json.dump(history, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
