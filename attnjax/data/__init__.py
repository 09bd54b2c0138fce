"""Algorithmic tasks and blank-token batching (NumPy only; no JAX tracing happens here)."""

from attnjax.data.batching import length_batch, padded_length, training_batch, vocab_size
from attnjax.data.tasks import TASKS, TIERS, Task, get_task

__all__ = ["TASKS", "TIERS", "Task", "get_task", "length_batch", "padded_length", "training_batch", "vocab_size"]
