"""Seq2seq transduction tasks: hand-worked examples, defining properties, layout, masks and errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attnjax.data import seq2seq as s2s

A = 5  # alphabet size in these tests; the begin token is 5


def test_hand_worked_targets():
    x = np.array([[3, 1, 4, 1, 2]])
    assert s2s.task_targets("copy", x, A).tolist() == [[3, 1, 4, 1, 2]]
    assert s2s.task_targets("reverse", x, A).tolist() == [[2, 1, 4, 1, 3]]
    assert s2s.task_targets("sort", x, A).tolist() == [[1, 1, 2, 3, 4]]
    # odd positions (1, 3) first, then even positions (0, 2, 4)
    assert s2s.task_targets("odds_first", x, A).tolist() == [[1, 1, 3, 4, 2]]
    assert s2s.task_targets("odds_first", np.array([[7]]), 8).tolist() == [[7]]


token_rows = arrays(np.int64, st.tuples(st.integers(1, 4), st.integers(1, 12)), elements=st.integers(0, A - 1))


@settings(max_examples=40, deadline=None)
@given(token_rows)
def test_defining_properties(x):
    copy, rev, srt, odd = (s2s.task_targets(t, x, A) for t in ("copy", "reverse", "sort", "odds_first"))
    np.testing.assert_array_equal(copy, x)
    np.testing.assert_array_equal(s2s.task_targets("reverse", rev, A), x)  # reverse of reverse is the input
    assert np.all(np.diff(srt, axis=1) >= 0)  # sorted
    for out in (rev, srt, odd):  # every task reorders: same multiset of tokens per row
        np.testing.assert_array_equal(np.sort(out, axis=1), np.sort(x, axis=1))
    for t in s2s.SEQ2SEQ_TASKS:
        assert s2s.task_targets(t, x, A).shape == x.shape


def test_batch_layout_masks_and_padding():
    rng = np.random.default_rng(0)
    lengths = np.array([1, 3, 6, 6])
    b = s2s.make_seq2seq_batch("reverse", rng, lengths, 7, A)
    assert b["source"].shape == (4, 7, A) and b["source"].dtype == np.float32
    for key in ("target_inputs", "targets", "source_lengths"):
        assert b[key].dtype == np.int32
    assert b["target_mask"].dtype == np.float32
    np.testing.assert_array_equal(b["source_lengths"], lengths)
    for i, n in enumerate(lengths):
        src = b["source"][i]
        np.testing.assert_array_equal(src[:n].sum(-1), 1.0)  # one-hot where real
        np.testing.assert_array_equal(src[n:], 0.0)  # all-zero padding
        tokens = src[:n].argmax(-1)
        np.testing.assert_array_equal(b["targets"][i, :n], tokens[::-1])
        np.testing.assert_array_equal(b["targets"][i, n:], 0)
        np.testing.assert_array_equal(b["target_mask"][i], (np.arange(7) < n).astype(np.float32))
        # begin token, then the (padded) targets shifted right
        assert b["target_inputs"][i, 0] == A
        np.testing.assert_array_equal(b["target_inputs"][i, 1:], b["targets"][i, :-1])


def test_target_inputs_match_the_models_shift_right():
    from attnjax.nn.rnn_seq2seq import shift_right

    b = s2s.seq2seq_training_batch("sort", np.random.default_rng(1), 8, 6, A)
    np.testing.assert_array_equal(np.asarray(shift_right(b["targets"], A)), b["target_inputs"])


def test_training_batch_lengths_are_uniform_per_example_and_padded_to_n():
    rng = np.random.default_rng(2)
    b = s2s.seq2seq_training_batch("copy", rng, 4000, 5, A)
    assert b["source"].shape == (4000, 5, A) and b["targets"].shape == (4000, 5)
    counts = np.bincount(b["source_lengths"], minlength=6)[1:]
    assert counts.min() > 700 and counts.max() < 900  # ~800 each of 1..5
    assert np.array_equal(b["target_mask"].sum(1), b["source_lengths"])
    tokens = b["source"][b["target_mask"] > 0].argmax(-1)
    assert set(np.unique(tokens)) == set(range(A))


def test_length_batch_and_determinism():
    b1 = s2s.seq2seq_length_batch("sort", np.random.default_rng(3), 3, 4, 9, A)
    b2 = s2s.seq2seq_length_batch("sort", np.random.default_rng(3), 3, 4, 9, A)
    assert all(np.array_equal(b1[k], b2[k]) for k in b1)
    assert np.all(b1["source_lengths"] == 4) and b1["targets"].shape == (3, 9)


@pytest.mark.parametrize("call, message", [
    (lambda: s2s.get_seq2seq_task("revers"), "task must be one of"),
    (lambda: s2s.make_seq2seq_batch("copy", np.random.default_rng(0), [2, 9], 8, A),
     r"lengths must be in \[1, pad_to=8\], got range \[2, 9\]"),
    (lambda: s2s.make_seq2seq_batch("copy", np.random.default_rng(0), [0, 2], 8, A), "lengths must be in"),
    (lambda: s2s.make_seq2seq_batch("copy", np.random.default_rng(0), [], 8, A), "non-empty"),
    (lambda: s2s.make_seq2seq_batch("copy", np.random.default_rng(0), [1.5], 8, A), "integers"),
    (lambda: s2s.make_seq2seq_batch("copy", np.random.default_rng(0), [1], 0, A), "pad_to must be an int >= 1"),
    (lambda: s2s.seq2seq_training_batch("copy", np.random.default_rng(0), 0, 4, A), "batch_size must be"),
    (lambda: s2s.seq2seq_training_batch("copy", np.random.default_rng(0), 4, 4, 0), "alphabet_size must be"),
    (lambda: s2s.task_targets("copy", np.array([1, 2]), A), r"sources must be \[B, n\]"),
    (lambda: s2s.task_targets("copy", np.array([[1, 5]]), A), r"tokens in \[0, alphabet_size=5\)"),
])
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
