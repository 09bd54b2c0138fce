"""The 15 algorithmic tasks of Delétang et al. (2022), "Neural Networks and the Chomsky Hierarchy".

A task turns a length ``n`` into ``(inputs [B, n], targets [B, output_length(n)])`` integer tokens sampled with a
NumPy ``Generator`` (host-side data is cheap, deterministic per seed and never traced); see
:mod:`attnjax.data.tasks.base` for the exact contract and the accuracy-mask rule. How a model reads them (one
blank token per output position) is :mod:`attnjax.data.batching`'s job.

The reference code (google-deepmind/neural_networks_chomsky_hierarchy) is followed where it and the paper
differ; each such place is documented at the task (odds_first order, cycle_navigation's moves, modular
arithmetic's odd lengths, the degenerate short-length cases).

Tiers, in :data:`TIERS` order: ``regular`` (:mod:`.regular`), ``context_free`` (:mod:`.context_free`, the
paper's deterministic context-free tier), ``context_sensitive`` (:mod:`.context_sensitive`).
"""

from __future__ import annotations

from attnjax.data.tasks import context_free, context_sensitive, decimal, regular
from attnjax.data.tasks.base import TIERS, Task

# name -> task, grouped by tier in TIERS order: Delétang et al.'s 15 (the encoder grid enumerates these).
TASKS: dict[str, Task] = {t.name: t for module in (regular, context_free, context_sensitive) for t in module.TASKS}
# ... plus decimal addition in Zhou et al.'s formats (:mod:`.decimal`), which the decoder protocol adds.
ALL_TASKS: dict[str, Task] = {**TASKS, **{t.name: t for t in decimal.TASKS}}


def get_task(name: str) -> Task:
    """Looks a task up by name.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in ALL_TASKS:
        raise ValueError(f"task must be one of {sorted(ALL_TASKS)}, got {name!r}")
    return ALL_TASKS[name]


__all__ = ["ALL_TASKS", "TASKS", "TIERS", "Task", "get_task"]
