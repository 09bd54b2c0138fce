"""Tasks compute the right answers and the blank-token layout is exact."""

import numpy as np
import pytest

from attnjax import data


def test_parity_reverse_duplicate_answers():
    rng = np.random.default_rng(0)
    x, y = data.get_task("parity_check").sample(rng, 64, 7)
    np.testing.assert_array_equal(y[:, 0], x.sum(1) % 2)
    assert set(np.unique(y)) == {0, 1}  # both classes occur, so the check above can fail
    x, y = data.get_task("reverse_string").sample(rng, 8, 5)
    np.testing.assert_array_equal(y, x[:, ::-1])
    x, y = data.get_task("duplicate_string").sample(rng, 8, 5)
    np.testing.assert_array_equal(y, np.concatenate([x, x], 1))


def test_output_lengths_and_classification_flag():
    assert data.get_task("parity_check").is_classification
    assert not data.get_task("reverse_string").is_classification
    assert data.padded_length(data.get_task("duplicate_string"), 10) == 30
    assert data.padded_length(data.get_task("parity_check"), 10) == 11


def test_unknown_task_and_bad_lengths_raise():
    with pytest.raises(ValueError, match="task must be one of"):
        data.get_task("nope")
    task = data.get_task("reverse_string")
    with pytest.raises(ValueError, match="length must be >= 1"):
        task.sample(np.random.default_rng(0), 2, 0)
    with pytest.raises(ValueError, match="pad_to=5 is too short"):
        data.make_batch(task, np.random.default_rng(0), np.array([3]), 5)


def test_blank_protocol_layout():
    task = data.get_task("duplicate_string")
    lengths = np.array([1, 3, 2])
    b = data.make_batch(task, np.random.default_rng(1), lengths, pad_to=12)
    V = data.vocab_size(task)
    assert b["inputs"].shape == (3, 12, V) and b["inputs"].dtype == np.float32
    np.testing.assert_array_equal(b["seq_lengths"], 3 * lengths)
    for i, n in enumerate(lengths):
        tok = b["inputs"][i].argmax(-1)
        real = b["inputs"][i].sum(-1)
        np.testing.assert_array_equal(real, (np.arange(12) < 3 * n).astype(np.float32))  # padding is all-zero
        assert np.all(tok[:n] < task.input_size)
        assert np.all(tok[n:3 * n] == data.blank_token(task))
        np.testing.assert_array_equal(b["loss_mask"][i], ((np.arange(12) >= n) & (np.arange(12) < 3 * n)))
        x = tok[:n]
        np.testing.assert_array_equal(b["targets"][i, n:3 * n], np.concatenate([x, x]))


def test_training_batch_lengths_uniform_and_fixed_shape():
    task = data.get_task("parity_check")
    rng = np.random.default_rng(0)
    shapes, seen = set(), set()
    for _ in range(20):
        b = data.training_batch(task, rng, 64, max_length=6)
        shapes.add(b["inputs"].shape)
        seen.update((b["seq_lengths"] - 1).tolist())
    assert shapes == {(64, 7, 3)}
    assert seen == set(range(1, 7))


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(task_name=st.sampled_from(sorted(data.TASKS)), lengths=st.lists(st.integers(1, 9), min_size=1, max_size=6),
       extra=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_make_batch_layout_property(task_name, lengths, extra, seed):
    task = data.get_task(task_name)
    lengths = np.array(lengths)
    pad = data.padded_length(task, int(lengths.max())) + extra
    b = data.make_batch(task, np.random.default_rng(seed), lengths, pad)
    out = np.array([task.output_length(int(n)) for n in lengths])
    np.testing.assert_array_equal(b["seq_lengths"], lengths + out)
    np.testing.assert_array_equal(b["loss_mask"].sum(1), out)
    real = b["inputs"].sum(-1)  # 1 at real positions, 0 at padding
    np.testing.assert_array_equal(real, (np.arange(pad)[None] < b["seq_lengths"][:, None]).astype(np.float32))
    assert np.all(b["targets"][b["loss_mask"] == 0] == 0)
    assert np.all((b["targets"] >= 0) & (b["targets"] < task.output_size))
