"""fit's checkpoints: an interrupted run resumes exactly; corrupt or partial checkpoints are skipped, never loaded.

Exactness: a resumed run must equal the uninterrupted one *bitwise* (parameters, optimizer state, logged
metrics other than the ``*_per_sec`` rates). Nothing in between is approximate: the checkpoint holds the
float32 arrays themselves, the data generator's exact state and the metrics of the log window in progress,
and the resumed process runs the same compiled step on the same inputs (XLA:CPU is deterministic).
"""

import io
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import data, nn as ann, train
from attnjax.parallel import data_mesh
from attnjax.train import CorruptCheckpointWarning
from attnjax.train.checkpoint import Checkpointer

# A restore that orbax aborts (the corrupt checkpoints below) leaves a callback on its closed asyncio loop,
# which pytest would report as an unraisable exception; the corruption itself is asserted by each test.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

TASK = data.get_task("reverse_string")
STEPS, EVERY, LOG_EVERY = 6, 2, 4  # log windows (4) straddle checkpoints (2): the window in progress is saved


class Interrupted(Exception):
    """Stands in for a preemption: raised by the batch source before step ``at`` runs."""


def _state(hidden=16):
    # Dropout on, so the per-step rng (fold_in(rng, step)) matters for exactness.
    model = ann.build_model("transformer", TASK.output_size,
                            dict(num_layers=1, d_model=hidden, num_heads=2, mlp_dim=16, dropout_rate=0.1))
    example = jnp.zeros((1, data.padded_length(TASK, 4), data.vocab_size(TASK)))
    return train.create_train_state(model, jax.random.key(0), example, train.make_optimizer(1e-2, 1.0))


def _run(checkpoint_dir=None, interrupt_at=None, rng=None, hidden=16, keep=2, calls=None):
    """One fit; returns (params, opt_state, history, log lines). Batches draw from one seeded generator."""
    gen = np.random.default_rng(123)

    def batches(step):
        if step == interrupt_at:
            raise Interrupted(step)
        if calls is not None:
            calls.append(step)
        return data.training_batch(TASK, gen, 8, 4)

    log = io.StringIO()
    state, history = train.fit(_state(hidden), batches, STEPS, rng=jax.random.key(7) if rng is None else rng,
                               log_every=LOG_EVERY, log_file=log, progress=False, checkpoint_dir=checkpoint_dir,
                               checkpoint_every=EVERY, keep=keep, data_rng=gen)
    return jax.device_get(state.params), jax.device_get(state.opt_state), history, log.getvalue().splitlines()


def _no_rates(records):
    return [{k: v for k, v in r.items() if not k.endswith("_per_sec")} for r in records]


def _assert_same_run(a, b):
    for x, y in zip(jax.tree.leaves(a[:2]), jax.tree.leaves(b[:2])):
        np.testing.assert_array_equal(x, y)  # bitwise
    assert _no_rates(a[2]) == _no_rates(b[2])
    assert _no_rates([json.loads(line) for line in a[3]]) == _no_rates([json.loads(line) for line in b[3]])


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run, without checkpoints."""
    return _run()


def test_interrupted_run_resumes_exactly(tmp_path, reference):
    with pytest.raises(Interrupted):
        _run(tmp_path, interrupt_at=5)  # checkpoints after steps 2 and 4; step 5 never runs
    assert sorted(os.listdir(tmp_path)) == ["2", "4"]
    calls, step = [], train.make_train_step(parallel="jit", mesh=data_mesh())
    compiled = step._cache_size()
    resumed = _run(tmp_path, calls=calls)
    assert calls == [4, 5]  # only the steps after the newest checkpoint ran
    assert step._cache_size() == compiled  # the restored state has the argument types of a fresh one
    _assert_same_run(resumed, reference)
    assert [r["step"] for r in resumed[2]] == [4, 6]
    assert sorted(os.listdir(tmp_path)) == ["4", "6"]  # keep=2: the newest two


def test_finished_run_restarted_returns_its_result(tmp_path, reference):
    _run(tmp_path)
    calls = []
    again = _run(tmp_path, calls=calls)
    assert calls == []
    _assert_same_run(again, reference)


def _data_files(step_dir):
    """The array data files orbax wrote (OCDBT data blocks), largest first."""
    found = [os.path.join(root, f) for root, _, files in os.walk(os.path.join(step_dir, "arrays"))
             for f in files if os.path.basename(root) == "d"]
    assert found, f"no array data under {step_dir}: {list(os.walk(step_dir))}"
    return sorted(found, key=os.path.getsize, reverse=True)


def _truncate(step_dir):
    for path in _data_files(step_dir):
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)


def _flip_bytes(step_dir):
    for path in _data_files(step_dir):  # same sizes, different bytes (the middle third of every file)
        with open(path, "r+b") as f:
            content = bytearray(f.read())
            n = len(content)
            content[n // 3: 2 * n // 3] = bytes(b ^ 0xFF for b in content[n // 3: 2 * n // 3])
            f.seek(0)
            f.write(content)


def _swap_in_older_arrays(step_dir):
    # Files that read back without any error, holding another step's values: only the checksum can tell.
    older = os.path.join(os.path.dirname(step_dir), "4", "arrays")
    shutil.rmtree(os.path.join(step_dir, "arrays"))
    shutil.copytree(older, os.path.join(step_dir, "arrays"))


def _garble_metadata(step_dir):
    with open(os.path.join(step_dir, "meta", "metadata"), "w") as f:
        f.write('{"history": [{"step": 4, "lo')


def _remove_arrays(step_dir):
    for path in _data_files(step_dir):
        os.remove(path)


@pytest.mark.parametrize("corrupt", [_truncate, _flip_bytes, _swap_in_older_arrays, _garble_metadata, _remove_arrays],
                         ids=["truncated", "flipped-bytes", "readable-wrong-values", "garbled-metadata",
                              "missing-files"])
def test_corrupt_newest_checkpoint_is_skipped_with_a_warning(tmp_path, reference, corrupt):
    _run(tmp_path, keep=3)
    assert sorted(os.listdir(tmp_path)) == ["2", "4", "6"]
    newest = os.path.join(str(tmp_path), "6")
    corrupt(newest)
    calls = []
    with pytest.warns(CorruptCheckpointWarning, match=f"checkpoint {newest} is corrupt or partial"):
        resumed = _run(tmp_path, keep=3, calls=calls)
    assert calls == [4, 5]  # fell back to step 4 and ran the rest
    _assert_same_run(resumed, reference)
    assert sorted(os.listdir(tmp_path)) == ["2", "4", "6", "6.corrupt"]  # set aside for inspection, not deleted


def test_all_checkpoints_corrupt_trains_from_the_start(tmp_path, reference):
    with pytest.raises(Interrupted):
        _run(tmp_path, interrupt_at=5)
    for step in ("2", "4"):
        _truncate(os.path.join(str(tmp_path), step))
    calls = []
    with pytest.warns(CorruptCheckpointWarning) as caught:
        resumed = _run(tmp_path, calls=calls)
    assert sorted(str(w.message).split()[1] for w in caught) == [str(tmp_path / s) for s in ("2", "4")]
    assert calls == list(range(STEPS))
    _assert_same_run(resumed, reference)


def test_checkpoint_of_another_run_is_refused(tmp_path):
    with pytest.raises(Interrupted):
        _run(tmp_path, interrupt_at=3)
    with pytest.raises(ValueError, match="holds other arrays than this run's state"):
        _run(tmp_path, hidden=8)  # another model: other shapes
    with pytest.raises(ValueError, match="another rng key"):
        _run(tmp_path, rng=jax.random.key(8))
    assert sorted(os.listdir(tmp_path)) == ["2"]  # refused, not treated as corrupt


def test_checkpoint_arguments_are_checked(tmp_path):
    batches = iter([data.training_batch(TASK, np.random.default_rng(0), 8, 4)])
    with pytest.raises(ValueError, match="iterator of batches needs data_rng"):
        train.fit(_state(), batches, 1, rng=jax.random.key(0), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="checkpoint_every must be an int >= 1 or None, got 0"):
        train.fit(_state(), batches, 1, rng=jax.random.key(0), checkpoint_dir=tmp_path, checkpoint_every=0)
    with pytest.raises(ValueError, match="keep must be an int >= 1, got 0"):
        Checkpointer(tmp_path, keep=0)
    with pytest.raises(TypeError, match="data_rng must be a numpy.random.Generator"):
        train.fit(_state(), batches, 1, rng=jax.random.key(0), data_rng=[np.random.RandomState(0)])


def test_generator_state_round_trips_through_json():
    from attnjax.train.checkpoint import generator_state, set_generator_state

    for make in (np.random.PCG64, np.random.MT19937, np.random.Philox):
        gen = np.random.Generator(make(5))
        gen.random(3)
        saved = json.loads(json.dumps(generator_state(gen)))
        expected = gen.random(4)
        other = np.random.Generator(make(9))
        set_generator_state(other, saved)
        np.testing.assert_array_equal(other.random(4), expected)
    with pytest.raises(ValueError, match="bit generator 'MT19937', but the generator is 'PCG64'"):
        set_generator_state(np.random.default_rng(0), saved | {"bit_generator": "MT19937"})
