"""Position-blind ceilings: hand-worked targets, the termination mask, and the closed form for reverse_string."""

from math import comb

import numpy as np
import pytest

from attnjax.data import TASKS, Task
from attnjax.data.ceilings import position_blind_accuracy, position_blind_ceiling
from attnjax.data.tasks.base import same_length


def _fixed_task(targets, termination_token=None):
    """A task whose every sample is ``targets`` (its inputs are zeros)."""
    targets = np.asarray(targets)

    def generate(rng, batch_size, n):
        return np.zeros((batch_size, n), np.int32), targets[:batch_size]

    return Task(name="fixed", tier="regular", input_size=2, output_size=4, output_length=lambda n: targets.shape[1],
                generate=generate, input_length=same_length, termination_token=termination_token)


def test_hand_worked_majority_share():
    # Row 0: token 0 twice of 3; row 1: token 2 twice of 3 -> 4 of 6 scored positions.
    task = _fixed_task([[0, 0, 1], [1, 2, 2]])
    assert position_blind_accuracy(task, np.random.default_rng(0), 2, 3) == pytest.approx(4 / 6)


def test_only_positions_up_to_the_termination_token_count():
    # Token 3 ends each row. Row 0 scores [1, 1, 3] (2 of 3); row 1 scores [3] (1 of 1); the tails after the
    # token would change the majority if they were counted.
    task = _fixed_task([[1, 1, 3, 0, 0, 0, 0], [3, 2, 2, 2, 2, 2, 2]], termination_token=3)
    assert position_blind_accuracy(task, np.random.default_rng(0), 2, 7) == pytest.approx(3 / 4)


def test_classification_tasks_have_ceiling_one():
    assert position_blind_accuracy(TASKS["parity_check"], np.random.default_rng(0), 64, 9) == 1.0


def _reverse_closed_form(n: int) -> float:
    """Expected majority share of n uniform bits (the reversed string has the same bits)."""
    return sum(comb(n, k) * max(k, n - k) for k in range(n + 1)) / (n * 2 ** n)


def test_reverse_string_matches_the_closed_form():
    """A defining property: reverse's outputs are its input bits, so the ceiling is the majority-bit share."""
    in_dist, ood = position_blind_ceiling(TASKS["reverse_string"], 4, 8, batch_size=4096)
    assert in_dist == pytest.approx(np.mean([_reverse_closed_form(n) for n in range(1, 5)]), abs=0.01)
    assert ood == pytest.approx(np.mean([_reverse_closed_form(n) for n in range(5, 9)]), abs=0.01)
    assert position_blind_ceiling(TASKS["reverse_string"], 4, 8) == position_blind_ceiling(
        TASKS["reverse_string"], 4, 8)  # seeded: the same numbers on every call


@pytest.mark.parametrize("train, test", [(0, 5), (5, 5), (6, 5)])
def test_bad_lengths_name_the_arguments(train, test):
    with pytest.raises(ValueError, match=f"train_max_length={train} and test_max_length={test}"):
        position_blind_ceiling(TASKS["reverse_string"], train, test)
