"""Train to fit: the stop rule on recorded curves, and fit() stopping, marking and resuming with it."""

import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import data, nn as ann, train
from attnjax.train import TrainToFit


def _history(values, every=250):
    return [{"step": every * (i + 1), "val_accuracy": v} for i, v in enumerate(values)]


def test_fit_needs_consecutive_validations_at_the_threshold():
    rule = TrainToFit(threshold=0.99, consecutive=2, flat_steps=10_000)
    assert rule(_history([0.5, 0.995])) is None  # one validation at the threshold is not enough
    assert rule(_history([0.5, 0.995, 0.98])) is None
    assert rule(_history([0.5, 0.995, 0.98, 0.99, 1.0])) == "fit"
    assert rule.steps_to_fit(_history([0.5, 0.995, 0.98, 0.99, 1.0])) == 1000  # the first of the two
    assert rule.steps_to_fit(_history([0.5, 0.995, 0.98])) is None


def test_flat_compares_the_best_now_with_the_best_a_window_ago():
    rule = TrainToFit(flat_steps=1000, min_gain=0.01)
    rising = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9]
    assert rule(_history(rising)) is None
    assert rule(_history([0.5, 0.6, 0.6, 0.605, 0.6, 0.609])) == "flat"  # best 0.609 vs 0.6 at step 500
    assert rule(_history([0.5, 0.6, 0.6, 0.6])) is None  # no record a whole window old yet (step 1000 - 1000 = 0)
    # A noisy dip does not reset the window: the best so far counts.
    assert rule(_history([0.7, 0.9, 0.6, 0.62, 0.63, 0.64])) == "flat"


def test_without_stop_at_fit_a_run_that_fit_goes_to_the_budget():
    rule = TrainToFit(stop_at_fit=False, flat_steps=500)
    fitted = [0.5, 0.995, 0.999, 0.999, 0.999, 0.999]
    assert rule(_history(fitted)) is None and rule.steps_to_fit(_history(fitted)) == 500
    assert rule(_history([0.5, 0.5, 0.5, 0.5])) == "flat"  # below the threshold it still stops flat


@pytest.mark.parametrize("kwargs, match", [(dict(threshold=0.0), "threshold"), (dict(consecutive=0), "consecutive"),
                                           (dict(flat_steps=2.5), "flat_steps"), (dict(min_gain=-1), "min_gain")])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainToFit(**kwargs)


def _setup(seed=0):
    task = data.get_task("parity_check")
    model = ann.build_model("lstm", task.output_size, dict(hidden_size=8))
    example = jnp.zeros((1, data.padded_length(task, 4), data.vocab_size(task)))
    state = train.create_train_state(model, jax.random.key(seed), example, train.make_optimizer(1e-3, 1.0))
    return task, state


def _scripted(values):
    """A validate function returning ``values`` in turn, and the list of steps it was called at."""
    calls = []

    def validate(state):
        calls.append(int(state.step))
        return {"accuracy": values[len(calls) - 1]}
    return validate, calls


def test_fit_stops_at_fit_and_marks_the_reason(tmp_path):
    task, state = _setup()
    rng = np.random.default_rng(0)
    validate, calls = _scripted([0.4, 0.995, 0.999, 0.2, 0.2])
    log = io.StringIO()
    state, history = train.fit(state, lambda _: data.training_batch(task, rng, 8, 4), 10, rng=jax.random.key(0),
                               log_every=2, log_file=log, progress=False, validate=validate,
                               stop=TrainToFit(consecutive=2), checkpoint_dir=tmp_path / "ckpt", data_rng=rng)
    assert int(state.step) == 6 and calls == [2, 4, 6]
    assert [r.get("stop") for r in history] == [None, None, "fit"]
    assert [r["val_accuracy"] for r in history] == [0.4, 0.995, 0.999]
    assert json.loads(log.getvalue().splitlines()[-1])["stop"] == "fit"
    # Restarted with the same arguments, the stopped run returns at once, with its history.
    validate, calls = _scripted([0.0] * 5)
    state, again = train.fit(_setup()[1],
                             lambda _: data.training_batch(task, rng, 8, 4), 10, rng=jax.random.key(0), log_every=2,
                             progress=False, validate=validate, stop=TrainToFit(consecutive=2),
                             checkpoint_dir=tmp_path / "ckpt", data_rng=rng)
    assert int(state.step) == 6 and calls == [] and again == history


def test_fit_marks_budget_and_needs_validate_with_stop():
    task, state = _setup()
    rng = np.random.default_rng(0)
    validate, _ = _scripted([0.5, 0.6, 0.7])
    state, history = train.fit(state, lambda _: data.training_batch(task, rng, 8, 4), 5, rng=jax.random.key(0),
                               log_every=2, progress=False, validate=validate, stop=TrainToFit())
    assert [r["step"] for r in history] == [2, 4, 5] and history[-1]["stop"] == "budget"
    with pytest.raises(ValueError, match="validate="):
        train.fit(state, lambda _: data.training_batch(task, rng, 8, 4), 1, rng=jax.random.key(0), stop=TrainToFit())
