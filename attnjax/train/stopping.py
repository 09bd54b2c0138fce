"""Train to fit: stop a run when its validation metric has reached a threshold, or has stopped rising.

:func:`~attnjax.train.fit` calls a stop rule after every log record (``history`` so far, each record holding
the validation metrics that ``fit(validate=...)`` added). The rule returns why to stop, or None to go on;
``fit`` marks the last record with ``"stop"`` (``"fit"``, ``"flat"``, or ``"budget"`` when the step budget
ran out first).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

STOP_REASONS = ("fit", "flat", "budget")


@dataclasses.dataclass(frozen=True)
class TrainToFit:
    """Stop at fit (``metric >= threshold`` at ``consecutive`` validations in a row) or when flat (the best
    ``metric`` gained less than ``min_gain`` over the last ``flat_steps`` steps).

    Attributes:
        threshold: the fit level of ``metric`` (accuracy in [0, 1]).
        consecutive: validations in a row at or above ``threshold`` (>= 1): one lucky batch does not end a run.
        flat_steps: the window of the flat test, in steps (> 0); the test starts once a record at least this
            many steps old exists.
        min_gain: the least gain of the best ``metric`` over that window that counts as still rising.
        stop_at_fit: False: never stop at fit (runs go to the budget, or stop flat below ``threshold``); the
            steps to fit are still found by :meth:`steps_to_fit`. For measuring what stopping early changes.
        metric: the record key the rule reads.

    Raises:
        ValueError: a value out of range, naming it.
    """

    threshold: float = 0.99
    consecutive: int = 2
    flat_steps: int = 3000
    min_gain: float = 0.01
    stop_at_fit: bool = True
    metric: str = "val_accuracy"

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"TrainToFit.threshold must be in (0, 1], got {self.threshold!r}")
        if not isinstance(self.consecutive, int) or self.consecutive < 1:
            raise ValueError(f"TrainToFit.consecutive must be an int >= 1, got {self.consecutive!r}")
        if not isinstance(self.flat_steps, int) or self.flat_steps < 1:
            raise ValueError(f"TrainToFit.flat_steps must be an int >= 1, got {self.flat_steps!r}")
        if not self.min_gain >= 0.0:
            raise ValueError(f"TrainToFit.min_gain must be >= 0, got {self.min_gain!r}")

    def _scored(self, history: Sequence[Mapping]) -> list[tuple[int, float]]:
        return [(int(r["step"]), float(r[self.metric])) for r in history if self.metric in r]

    def steps_to_fit(self, history: Sequence[Mapping]) -> int | None:
        """The step of the first of ``consecutive`` validations in a row at or above ``threshold`` (None: never)."""
        scored, run = self._scored(history), 0
        for i, (_, value) in enumerate(scored):
            run = run + 1 if value >= self.threshold else 0
            if run == self.consecutive:
                return scored[i - run + 1][0]
        return None

    def __call__(self, history: Sequence[Mapping]) -> str | None:
        """``"fit"``, ``"flat"`` or None (go on), judged on the records so far."""
        scored = self._scored(history)
        if not scored:
            return None
        if self.stop_at_fit and len(scored) >= self.consecutive and all(
                v >= self.threshold for _, v in scored[-self.consecutive:]):
            return "fit"
        if not self.stop_at_fit and any(v >= self.threshold for _, v in scored):
            return None  # a run that reached the threshold once goes on to the budget
        step = scored[-1][0]
        before = [v for s, v in scored if s <= step - self.flat_steps]
        if before and max(v for _, v in scored) - max(before) < self.min_gain:
            return "flat"
        return None
