"""fit: compiles once across calls, logs JSON lines, validates batch sharding."""

import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import data, nn as ann, train
from attnjax.parallel import data_mesh


def _state(task, max_len, hidden, seed=0):
    model = ann.build_model("lstm", task.output_size, dict(hidden_size=hidden))
    example = jnp.zeros((1, data.padded_length(task, max_len), data.vocab_size(task)))
    return train.create_train_state(model, jax.random.key(seed), example, train.make_optimizer(1e-3, 1.0))


def test_fit_logs_json_lines_and_compiles_once_across_seeds():
    task = data.get_task("parity_check")
    rng = np.random.default_rng(0)
    mesh = data_mesh()
    step = train.make_train_step(parallel="jit", mesh=mesh)  # the step fit compiles
    before = step._cache_size()
    log = io.StringIO()
    for seed in range(2):  # a second seed of the same config must reuse the compiled step
        state = _state(task, 4, hidden=11, seed=seed)
        state, history = train.fit(state, lambda _: data.training_batch(task, rng, 8, 4), 5, rng=jax.random.key(seed),
                                   mesh=mesh, log_every=2, log_file=log, progress=False)
        assert int(state.step) == 5
    assert step._cache_size() == before + 1
    records = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 5, 2, 4, 5]
    for r in records:
        assert {"step", "loss", "accuracy", "grad_norm", "param_norm", "update_norm", "steps_per_sec"} <= set(r)
        assert r["steps_per_sec"] > 0 and np.isfinite(r["loss"])


def test_fit_accepts_iterators_and_rejects_indivisible_batches():
    task = data.get_task("parity_check")
    rng = np.random.default_rng(0)
    state = _state(task, 4, hidden=11)
    batches = iter([data.training_batch(task, rng, 8, 4) for _ in range(2)])
    state, history = train.fit(state, batches, 2, rng=jax.random.key(0), progress=True)  # tqdm bar on stderr
    assert history[-1]["step"] == 2
    with pytest.raises(ValueError, match="divisible by mesh axis 'data' of size 8"):
        train.fit(state, lambda _: data.training_batch(task, rng, 6, 4), 1, rng=jax.random.key(0),
                  mesh=data_mesh(8), progress=False)
    with pytest.raises(ValueError, match="log_every"):
        train.fit(state, batches, 1, rng=jax.random.key(0), log_every=0)


def test_fit_warns_once_when_a_batch_shape_would_recompile_the_step():
    """Steps 0 and 1 share the first batch's shapes (no warning); step 2 differs (the warning); step 3 differs
    again (no second warning)."""
    task = data.get_task("parity_check")
    rng = np.random.default_rng(0)
    lengths = [3, 3, 4, 5, 4]  # the step's compiled shapes are those of step 0's batch
    batches = lambda step: data.training_batch(task, rng, 8, lengths[step])  # noqa: E731
    padded = [data.padded_length(task, n) for n in (3, 4)]
    with pytest.warns(train.BatchShapeWarning) as caught:
        train.fit(_state(task, 3, hidden=4), batches, len(lengths), rng=jax.random.key(0), log_every=5,
                  progress=False)
    shape_warnings = [w for w in caught if issubclass(w.category, train.BatchShapeWarning)]
    assert len(shape_warnings) == 1, [str(w.message) for w in shape_warnings]
    message = str(shape_warnings[0].message)
    assert "the batch of step 2" in message, message
    now, was = message.split("where the first had")
    assert f"inputs (8, {padded[1]}, 3) float32" in now and f"inputs (8, {padded[0]}, 3) float32" in was, message
