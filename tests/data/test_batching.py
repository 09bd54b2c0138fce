"""Blank-token layout, loss vs accuracy masks, fixed padded shapes, and per-batch vs per-example lengths."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from attnjax import data
from attnjax.data.batching import blank_token, fixed_size_batches, make_batch, sample_lengths


def test_blank_protocol_layout():
    task = data.get_task("duplicate_string")
    lengths = np.array([1, 3, 2])
    b = make_batch(task, np.random.default_rng(1), lengths, pad_to=12)
    assert set(b) == {"inputs", "targets", "loss_mask", "accuracy_mask", "seq_lengths"}
    V = data.vocab_size(task)
    assert b["inputs"].shape == (3, 12, V) and b["inputs"].dtype == np.float32
    assert b["targets"].dtype == np.int32 and b["seq_lengths"].dtype == np.int32
    assert b["loss_mask"].dtype == np.float32 and b["accuracy_mask"].dtype == np.float32
    np.testing.assert_array_equal(b["seq_lengths"], 3 * lengths)
    for i, n in enumerate(lengths):
        tok = b["inputs"][i].argmax(-1)
        real = b["inputs"][i].sum(-1)
        np.testing.assert_array_equal(real, (np.arange(12) < 3 * n).astype(np.float32))  # padding is all-zero
        assert np.all(tok[:n] < task.input_size)
        assert np.all(tok[n:3 * n] == blank_token(task))
        np.testing.assert_array_equal(b["loss_mask"][i], ((np.arange(12) >= n) & (np.arange(12) < 3 * n)))
        x = tok[:n]
        np.testing.assert_array_equal(b["targets"][i, n:3 * n], np.concatenate([x, x]))
    np.testing.assert_array_equal(b["accuracy_mask"], b["loss_mask"])  # no termination token


def test_accuracy_mask_stops_at_termination_token_loss_mask_does_not():
    task = data.get_task("binary_addition")
    n, pad = 9, 22
    b = data.length_batch(task, np.random.default_rng(0), 32, n, pad_to=pad)
    pos = np.arange(pad)
    np.testing.assert_array_equal(b["loss_mask"], np.broadcast_to((pos >= n) & (pos < 2 * n + 1), (32, pad)))
    for i in range(32):
        end = n + int(np.argmax(b["targets"][i, n:] == 2))
        assert b["targets"][i, end] == 2
        np.testing.assert_array_equal(b["accuracy_mask"][i], (pos >= n) & (pos <= end))
    # The sum has at most 8 bits, so END precedes the last of the 10 blanks: the masks always differ.
    assert (b["accuracy_mask"].sum(1) < b["loss_mask"].sum(1)).all()


def test_modular_arithmetic_even_length_layout():
    task = data.get_task("modular_arithmetic")
    b = make_batch(task, np.random.default_rng(0), np.array([4, 5, 1, 2]), pad_to=7)
    np.testing.assert_array_equal(b["seq_lengths"], [4, 6, 2, 2])  # an even n reads n - 1 symbols
    for i, n_in in enumerate([3, 5, 1, 1]):
        assert b["loss_mask"][i].sum() == 1 and b["loss_mask"][i, n_in] == 1
        assert b["inputs"][i, n_in].argmax() == blank_token(task)
    assert data.padded_length(task, 4) == 4 and data.padded_length(task, 5) == 6


def test_padded_length():
    assert data.padded_length(data.get_task("duplicate_string"), 10) == 30
    assert data.padded_length(data.get_task("parity_check"), 10) == 11
    assert data.padded_length(data.get_task("stack_manipulation"), 10) == 21
    assert data.padded_length(data.get_task("binary_multiplication"), 10) == 20
    assert data.padded_length(data.get_task("compute_sqrt"), 9) == 14
    with pytest.raises(ValueError, match="max_length must be an integer >= 1, got 0"):
        data.padded_length(data.get_task("parity_check"), 0)


def test_bad_batch_arguments_raise():
    task = data.get_task("reverse_string")
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="pad_to=5 is too short"):
        make_batch(task, rng, np.array([3]), 5)
    with pytest.raises(ValueError, match="lengths must be >= 1, got min 0"):
        make_batch(task, rng, np.array([0, 2]), 5)
    with pytest.raises(ValueError, match="lengths must be integers, got dtype float64"):
        make_batch(task, rng, np.array([1.5]), 5)
    with pytest.raises(ValueError, match=r"lengths must be a non-empty \[B\] array"):
        make_batch(task, rng, np.zeros((0,), int), 5)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        data.training_batch(task, rng, 0, 4)
    with pytest.raises(ValueError, match="need 1 <= min_length <= max_length"):
        sample_lengths(rng, 4, 3, min_length=5)


@settings(max_examples=40, deadline=None)
@given(task_name=st.sampled_from(sorted(data.TASKS)), lengths=st.lists(st.integers(1, 9), min_size=1, max_size=6),
       extra=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_make_batch_layout_property(task_name, lengths, extra, seed):
    task = data.get_task(task_name)
    lengths = np.array(lengths)
    pad = data.padded_length(task, int(lengths.max())) + extra
    b = make_batch(task, np.random.default_rng(seed), lengths, pad)
    n_in = np.array([task.input_length(int(n)) for n in lengths])
    out = np.array([task.output_length(int(n)) for n in n_in])
    np.testing.assert_array_equal(b["seq_lengths"], n_in + out)
    np.testing.assert_array_equal(b["loss_mask"].sum(1), out)
    real = b["inputs"].sum(-1)  # 1 at real positions, 0 at padding
    np.testing.assert_array_equal(real, (np.arange(pad)[None] < b["seq_lengths"][:, None]).astype(np.float32))
    blank = b["inputs"].argmax(-1) == blank_token(task)
    np.testing.assert_array_equal(blank & (real > 0), b["loss_mask"] > 0)  # scored exactly at the blanks
    assert np.all(b["targets"][b["loss_mask"] == 0] == 0)
    assert np.all((b["targets"] >= 0) & (b["targets"] < task.output_size))
    assert np.all(b["accuracy_mask"] <= b["loss_mask"])
    if task.termination_token is None:
        np.testing.assert_array_equal(b["accuracy_mask"], b["loss_mask"])
    else:  # the last scored position of each row holds the termination token
        last = b["accuracy_mask"].shape[1] - 1 - np.argmax(b["accuracy_mask"][:, ::-1], axis=1)
        np.testing.assert_array_equal(b["targets"][np.arange(len(lengths)), last], task.termination_token)


def test_training_batch_one_length_per_batch_by_default():
    task = data.get_task("reverse_string")
    rng = np.random.default_rng(0)
    shapes, seen = set(), []
    for _ in range(60):
        b = data.training_batch(task, rng, 16, max_length=6)
        shapes.add(b["inputs"].shape)
        assert len(set(b["seq_lengths"].tolist())) == 1  # every example of a batch has the same length
        seen.append(int(b["seq_lengths"][0]) // 2)
    assert shapes == {(16, 12, 3)}  # padded to the longest length: one compiled shape
    assert set(seen) == set(range(1, 7))


def test_training_batch_per_example_lengths():
    task = data.get_task("parity_check")
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(10):
        b = data.training_batch(task, rng, 64, max_length=6, per_example_lengths=True)
        assert b["inputs"].shape == (64, 7, 3)
        assert len(set(b["seq_lengths"].tolist())) > 1
        seen.update((b["seq_lengths"] - 1).tolist())
    assert seen == set(range(1, 7))


@pytest.mark.parametrize("per_example", [False, True])
def test_training_batch_deterministic_per_seed(per_example):
    task = data.get_task("stack_manipulation")
    a, b, c = (data.training_batch(task, np.random.default_rng(s), 8, 10, per_example_lengths=per_example)
               for s in (5, 5, 6))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_length_batch_pads_to_the_given_length():
    task = data.get_task("odds_first")
    b = data.length_batch(task, np.random.default_rng(0), 4, 3, pad_to=10)
    assert b["inputs"].shape == (4, 10, 3)
    np.testing.assert_array_equal(b["seq_lengths"], [6] * 4)
    assert data.length_batch(task, np.random.default_rng(0), 4, 3)["inputs"].shape == (4, 6, 3)


def test_fixed_size_batches_pad_the_last_with_unscored_rows():
    rows = {"inputs": np.arange(10, dtype=np.int32).reshape(5, 2) + 1, "targets": np.arange(5, dtype=np.int32),
            "loss_mask": np.ones(5, np.float32), "seq_lengths": np.full(5, 2, np.int32)}
    batches = fixed_size_batches(rows, 2)
    assert [b["inputs"].shape for b in batches] == [(2, 2)] * 3  # one compiled shape
    last = batches[-1]
    np.testing.assert_array_equal(last["inputs"], [[9, 10], [0, 0]])
    np.testing.assert_array_equal(last["loss_mask"], [1, 0])
    np.testing.assert_array_equal(last["seq_lengths"], [2, 2])  # a padded row is as long as the first
    assert all(b[k].dtype == rows[k].dtype for b in batches for k in rows)
    first_three = fixed_size_batches(rows, 2, n=3)  # only the first n rows
    assert len(first_three) == 2 and first_three[-1]["loss_mask"].tolist() == [1, 0]
