"""The decoder-only layout (attnjax.data.autoregressive) and Zhou et al.'s decimal addition tasks."""

import numpy as np
import pytest

from attnjax.data import autoregressive as ar
from attnjax.data import batching, get_task
from attnjax.data.tasks import ALL_TASKS, TASKS
from attnjax.data.tasks.decimal import NUM_HINTS, sum_digits


def _tokens(batch):
    """Read tokens back from the one-hot inputs (-1 at padding)."""
    return np.where(batch["inputs"].sum(-1) > 0, batch["inputs"].argmax(-1), -1)


@pytest.mark.parametrize("name", sorted(ALL_TASKS))
def test_layout_is_input_separator_answer_end_as_next_tokens(name):
    task = get_task(name)
    lengths = np.array([1, 3, 5, 2])
    batch = ar.make_batch(task, np.random.default_rng(0), lengths, ar.padded_length(task, 5))
    # The same draws as the encoder layout: both protocols see the same examples for one seed.
    encoder = batching.make_batch(task, np.random.default_rng(0), lengths, batching.padded_length(task, 5))
    reads, V = _tokens(batch), ar.vocab_size(task)
    assert batch["inputs"].shape[-1] == V and reads.max() < V
    for row in range(len(lengths)):
        p, s = batch["prompt_lengths"][row], batch["seq_lengths"][row]
        blanks = encoder["loss_mask"][row] > 0
        x = encoder["inputs"][row][:encoder["seq_lengths"][row]].argmax(-1)[~blanks[:encoder["seq_lengths"][row]]]
        y = encoder["targets"][row][blanks]
        k = task.answer_lengths(y[None])[0]
        assert p == len(x) + 1 and s == p + k
        np.testing.assert_array_equal(reads[row, :p - 1], x)
        assert reads[row, p - 1] == ar.separator_token(task) and (reads[row, s:] == -1).all()
        # Teacher forcing: position t predicts the token read at t + 1; the loss is on the answer and END.
        np.testing.assert_array_equal(batch["targets"][row, p - 1:s - 1], ar.output_token(task, y[:k]))
        assert batch["targets"][row, s - 1] == ar.end_token(task)
        np.testing.assert_array_equal(reads[row, p:s], batch["targets"][row, p - 1:s - 1])
        np.testing.assert_array_equal(np.nonzero(batch["loss_mask"][row])[0], np.arange(p - 1, s))
        scored = batch["accuracy_mask"][row, p - 1:p - 1 + len(y)] > 0
        np.testing.assert_array_equal(scored, task.accuracy_mask(y[None])[0])
        assert batch["accuracy_mask"][row].sum() == scored.sum()  # never END, never the prompt


def test_termination_tasks_stop_at_the_termination_token():
    task = get_task("binary_addition")
    batch = ar.length_batch(task, np.random.default_rng(1), 64, 6)
    answer = batch["seq_lengths"] - batch["prompt_lengths"]
    assert answer.min() < answer.max() <= task.output_length(6)  # the sum's length varies, END follows it
    last = batch["targets"][np.arange(64), batch["seq_lengths"] - 2]
    np.testing.assert_array_equal(last, ar.output_token(task, task.termination_token))


def test_bad_arguments_name_the_argument():
    task = get_task("parity_check")
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="pad_to=3 is too short"):
        ar.make_batch(task, rng, np.array([3]), 3)
    with pytest.raises(ValueError, match="lengths must be >= 1"):
        ar.make_batch(task, rng, np.array([0]), 8)
    with pytest.raises(ValueError, match="integer"):
        ar.make_batch(task, rng, np.array([1.5]), 8)
    with pytest.raises(ValueError, match="max_length must be an integer >= 1, got 0"):
        ar.training_batch(task, rng, 4, 0)


def test_decimal_tasks_are_not_in_the_encoder_grid():
    assert len(TASKS) == 15 and set(ALL_TASKS) - set(TASKS) == {
        "decimal_addition", "decimal_addition_reversed", "decimal_addition_hints"}


def test_decimal_addition_sums_like_python():
    rng = np.random.default_rng(3)
    for name, reverse in (("decimal_addition", False), ("decimal_addition_reversed", True)):
        x, y = get_task(name).sample(rng, 32, 7)
        for row_x, row_y in zip(x, y):
            a, b = (int("".join(map(str, part))) for part in (row_x[:7], row_x[8:]))
            assert row_x[7] == 10
            digits = row_y if not reverse else row_y[::-1]
            assert int("".join(map(str, digits))) == a + b and len(digits) == 8
    assert (sum_digits(np.array([[9] * 40]), np.array([[9] * 40]))[0] == [8] + [9] * 39 + [1]).all()  # long carry


def test_decimal_hints_name_significance_and_are_not_scored():
    task = get_task("decimal_addition_hints")
    x, y = task.sample(np.random.default_rng(4), 64, 5)
    assert x.shape == (64, 21) and y.shape == (64, 12)
    in_hints, a, b = x[:, 0:10:2], x[:, 1:10:2], x[:, 12::2]
    np.testing.assert_array_equal(in_hints, x[:, 11::2])  # both operands: one hint per significance
    np.testing.assert_array_equal(np.diff(in_hints, axis=1), -1)  # most significant first, consecutive
    out_hints, digits = y[:, 0::2], y[:, 1::2]
    np.testing.assert_array_equal(out_hints[:, :5] - 10, in_hints[:, ::-1] - 11)  # the same significance
    np.testing.assert_array_equal(digits, sum_digits(a, b))
    np.testing.assert_array_equal(task.accuracy_mask(y), np.tile([False, True], 6)[None].repeat(64, 0))
    assert in_hints.min() >= 11 and out_hints.max() < 10 + NUM_HINTS
    offsets = out_hints[:, 0] - 10
    assert offsets.min() == 0 or offsets.max() > 40  # offsets spread over the hint set
    with pytest.raises(ValueError, match="length must be < 64, got 64"):
        task.sample(np.random.default_rng(0), 1, NUM_HINTS)
