"""Algorithmic tasks and blank-token batching (NumPy only; no JAX tracing happens here)."""

from attnjax.data.batching import (blank_token, length_batch, make_batch, padded_length, sample_lengths,
                                   training_batch, vocab_size)
from attnjax.data.tasks import TASKS, TIERS, Task, get_task

__all__ = [
    "TASKS", "TIERS", "Task", "blank_token", "get_task", "length_batch", "make_batch", "padded_length",
    "sample_lengths", "training_batch", "vocab_size",
]
