"""Long cells on the harness: identical metrics run to run, a preempted cell resumes from its checkpoint, options.

Reproducibility: two runs of one config and seed on one machine must give byte-identical ``results.json``
metrics except wall-clock timings, which live exactly under the keys ending in ``_seconds``
(``attnjax.results.without_timings``; here ``train_seconds`` and ``eval_seconds``).
"""

import io
import json
import os

import jax.numpy as jnp
import ml_collections
import pytest

from attnjax.results import TIMING_SUFFIX, without_timings
from attnjax import sweep
from attnjax.sweep.runner import CHECKPOINTS_DIR
from attnjax.sweep.settings import settings
from experiments.length_generalization import run as lg
from experiments.length_generalization import config as lg_config

STEPS = 8


def _tiny(**overrides):
    """Two cells (2 seeds) of a 1-layer Transformer with dropout and randomized positions: every random
    stream (init, dropout, positions at train and test time, training and test data) is exercised."""
    c = lg_config.get_config("cpu")
    c.tasks, c.models, c.randomized, c.num_seeds = "parity_check", "transformer", "true", 2
    c.train_max_length, c.test_max_length, c.eval_bucket = 3, 5, 0
    c.batch_size, c.eval_batch_size, c.val_batch_size, c.num_steps, c.validate_every = 8, 8, 8, STEPS, 3
    c.warmup_steps = 1
    c.transformer.update(dict(num_layers=1, d_model=8, num_heads=2, mlp_dim=8, dropout_rate=0.1))
    c.attention_map_task, c.progress = "", "off"
    c.workers = "1"  # in this process: the tests patch it and count its devices (a str field, as on the CLI)
    c.update(overrides)
    return c


def _metrics(results):
    return {cid: entry["metrics"] for cid, entry in results["cells"].items()}


def _run(config, workdir):
    out = io.StringIO()
    return sweep.run(sweep.plan(lg.EXPERIMENT, config), str(workdir), out=out), out.getvalue()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    results, _ = _run(_tiny(), workdir)
    assert results["complete"] and results["num_cells"] == 2
    return results, workdir


def test_same_config_and_seed_give_identical_metrics(reference, tmp_path):
    first, _ = reference
    second, _ = _run(_tiny(), tmp_path)
    a, b = _metrics(first), _metrics(second)
    # The timings are exactly the keys ending in _seconds, and they are all that is left out.
    timing_keys = {k for m in a.values() for k in m if k.endswith(TIMING_SUFFIX)}
    assert timing_keys == {"train_seconds", "eval_seconds"}
    assert json.dumps(without_timings(a), sort_keys=True) == json.dumps(without_timings(b), sort_keys=True)
    env = second["environment"]
    assert env["process_count"] == 1 and env["process_index"] == 0 and env["device_count"] == 8
    assert env["jax"] and env["flax"] and env["optax"] and env["orbax-checkpoint"] and "git_commit" in env
    assert second["config"]["first_seed"] == 0 and {e["cell"]["seed"] for e in second["cells"].values()} == {0, 1}


class Preempted(BaseException):
    """A stand-in for the process dying: not an Exception, so the harness does not record a failed cell."""


def test_preempted_cell_resumes_from_its_checkpoint(reference, tmp_path, monkeypatch):
    expected, reference_dir = reference
    config = _tiny(checkpoint_every=3)
    cells = lg.cells(config)
    real_batch, calls = lg.data.training_batch, []

    def batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == STEPS + 5:  # the second cell's step 5 (0-based 4): checkpoint at step 3 exists
            raise Preempted
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(lg.data, "training_batch", batch)
    with pytest.raises(Preempted):
        _run(config, tmp_path)
    partial = sweep.load_results(str(tmp_path))
    assert list(partial["cells"]) == [cells[0].id]  # the first cell finished; the second never recorded
    checkpoints = tmp_path / CHECKPOINTS_DIR
    (second_dir,) = os.listdir(checkpoints)  # the finished cell's checkpoints are gone
    fingerprint = lg.EXPERIMENT.fingerprint(config, cells[1])
    assert sorted(os.listdir(checkpoints / second_dir / fingerprint)) == ["3"]

    calls.clear()
    monkeypatch.setattr(lg.data, "training_batch", lambda *a, **k: (calls.append(1), real_batch(*a, **k))[1])
    results, out = _run(config, tmp_path)  # the same command again
    assert "1 already done, 1 to run" in out
    assert len(calls) == STEPS - 3  # resumed after step 3
    assert not checkpoints.exists()  # every cell ok: no checkpoint left
    assert json.dumps(without_timings(_metrics(results)), sort_keys=True) == \
        json.dumps(without_timings(_metrics(expected)), sort_keys=True)
    log_name = os.path.basename(sweep.Context(str(tmp_path), None).log_path(cells[1]))

    def records(workdir):
        lines = (workdir / "logs" / log_name).read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if not k.endswith("_per_sec")} for line in lines]

    assert records(tmp_path) == records(reference_dir)  # the resumed log is whole: steps 3, 6, 8


def test_execution_settings_keep_fingerprints_and_are_checked():
    config = _tiny()
    cell = lg.cells(config)[0]
    before = lg.EXPERIMENT.fingerprint(config, cell)
    assert lg.EXPERIMENT.fingerprint(_tiny(checkpoint_every=5, checkpoint_keep=4, tensorboard=True, workers="2"),
                                     cell) == before
    assert "dtype" not in lg.cell_config(config, cell)["model"]
    assert lg.EXPERIMENT.fingerprint(_tiny(compute_dtype="bfloat16"), cell) != before
    assert lg.EXPERIMENT.fingerprint(_tiny(micro_batches=2), cell) != before
    assert lg.build(_tiny(compute_dtype="bfloat16"), cell, 3).execution.dtype == jnp.bfloat16
    for overrides, message in [
        (dict(checkpoint_every=-1), "config.checkpoint_every must be an int >= 0"),
        (dict(checkpoint_keep=0), "config.checkpoint_keep must be an int >= 1"),
        (dict(compute_dtype="float16"), "unknown compute_dtype 'float16'; valid: bfloat16, float32"),
        (dict(compute_dtype="bfloat16", models="lstm,transformer"), r"\['lstm'\] have none"),
        (dict(micro_batches=3), "micro_batches must be an int >= 1 dividing batch_size=8, got 3"),
        (dict(workers="two"), "config.workers must be an int >= 1 or 'auto', got 'two'"),
    ]:
        with pytest.raises(ValueError, match=message):
            sweep.plan(lg.EXPERIMENT, _tiny(**overrides))
    # ml_collections refuses a non-bool override of the configs' False; a config built another way is checked.
    with pytest.raises(ValueError, match="config.tensorboard must be True or False, got 'yes'"):
        settings(ml_collections.ConfigDict(dict(tensorboard="yes")))


def test_harness_gives_each_cell_a_checkpoint_dir_and_removes_it_when_ok(tmp_path):
    seen = {}

    def run_cell(cell, config, context):
        options = context.fit_options(cell)
        seen[cell.id] = options
        os.makedirs(options["checkpoint_dir"])
        if cell["x"] == 1:
            raise RuntimeError("diverged")
        return {"x": cell["x"]}

    experiment = sweep.Experiment(name="toy", cells=lambda c: sweep.grid(x=[0, 1]), run_cell=run_cell)
    config = ml_collections.ConfigDict(dict(only="", progress="off", checkpoint_every=10, lr=0.1))
    cells = experiment.cells(config)
    stale = tmp_path / "checkpoints" / "x=0" / "0123456789abcdef"  # an earlier config's checkpoints of cell x=0
    os.makedirs(stale)
    results = sweep.run(sweep.plan(experiment, config), str(tmp_path), out=io.StringIO())
    assert results["num_ok"] == 1 and results["num_failed"] == 1
    for cell in cells:
        assert seen[cell.id]["checkpoint_every"] == 10 and seen[cell.id]["keep"] == 2
        assert seen[cell.id]["checkpoint_dir"] == str(
            tmp_path / "checkpoints" / cell.id / experiment.fingerprint(config, cell))
    assert os.listdir(tmp_path / "checkpoints") == ["x=1"]  # ok cell and stale dir removed; the failed one kept
    assert sweep.Context(str(tmp_path), None).fit_options(cells[0]) == {"progress": None, "description": "x=0"}


def test_tensorboard_option_writes_each_cells_scalars_beside_its_json_log(tmp_path):
    results, _ = _run(_tiny(num_seeds=1, tensorboard=True), tmp_path)
    assert results["complete"]
    (cell_id,) = results["cells"]
    logdir = tmp_path / "tensorboard" / cell_id.replace("/", "-")
    json_log = [json.loads(line) for line in (tmp_path / "logs" / f"{cell_id.replace('/', '-')}.jsonl").open()]
    scalars = read_scalars(logdir)
    assert [step for step, _ in scalars["train/loss"]] == [r["step"] for r in json_log] == [3, 6, 8]
    assert [value for _, value in scalars["train/loss"]] == pytest.approx([r["loss"] for r in json_log])
    assert {"train/accuracy", "train/grad_norm", "train/tokens_per_sec"} <= set(scalars)


def read_scalars(logdir):
    """``{tag: [(step, value), ...]}`` from the event files in ``logdir``: TFRecords (length, its crc, an
    ``Event`` protobuf, its crc), parsed with tensorboardX's own proto (tensorboard is not installed)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out = {}
    for name in sorted(os.listdir(logdir)):
        data = (logdir / name).read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out
