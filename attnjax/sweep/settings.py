"""The harness's own config keys: declared once with their defaults, checked once, never in a fingerprint.

A study's config file holds only its own keys and calls :func:`with_harness_keys`; every run of any study
then accepts ``--config.only``, ``--config.workers`` and the rest. None of these keys changes a cell's
result, so none enters a cell's fingerprint.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any

import ml_collections

from attnjax.sweep.workers import workers_setting

HARNESS_DEFAULTS: dict[str, Any] = {
    "only": "",  # run part of the grid: "task=parity_check|even_pairs,model=lstm" or "shard=0/4"
    "progress": "auto",  # a tqdm bar per cell: "auto" (when stderr is a terminal), "on", "off"
    "workers": 1,  # cells on N single-threaded worker processes; "auto": one per core on a CPU
    "checkpoint_every": 0,  # save a cell's training state every N steps (0: off); a rerun resumes from it
    "checkpoint_keep": 2,  # newest checkpoints kept per cell (an older one is the fallback if one is corrupt)
    "tensorboard": False,  # also write TensorBoard scalars per cell (<workdir>/tensorboard; needs tensorboardX)
}
HARNESS_KEYS = tuple(HARNESS_DEFAULTS)


def add_keys(config: ml_collections.ConfigDict, kind: str, declared: dict[str, Any], **overrides: Any
             ) -> ml_collections.ConfigDict:
    """Adds the ``declared`` keys of one ``kind`` to ``config`` with their defaults, ``overrides`` winning;
    returns ``config``.

    Raises:
        ValueError: ``overrides`` names a key that is not declared (the message lists the declared ones).
    """
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ValueError(f"unknown {kind} key(s) {unknown}; valid: {', '.join(declared)}")
    for key, value in {**declared, **overrides}.items():
        config[key] = value
    return config


def with_harness_keys(config: ml_collections.ConfigDict, **defaults: Any) -> ml_collections.ConfigDict:
    """Adds the harness keys to a study's ``config`` with :data:`HARNESS_DEFAULTS` (``defaults`` override
    them for this study, e.g. ``workers="auto"``), and returns it."""
    return add_keys(config, "harness", HARNESS_DEFAULTS, **defaults)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The harness keys of one config, checked (see :data:`HARNESS_DEFAULTS`).

    Attributes:
        only: the selection.
        progress: tqdm bars (None: when stderr is a terminal).
        workers: worker processes (1: cells run in this process).
        checkpoint_every: ``fit`` saves every this many steps inside a cell (0: no checkpoints).
        checkpoint_keep: how many of a cell's newest checkpoints are kept.
        tensorboard: ``fit`` also writes TensorBoard scalars.
    """

    only: str
    progress: bool | None
    workers: int
    checkpoint_every: int
    checkpoint_keep: int
    tensorboard: bool


def settings(config: ml_collections.ConfigDict) -> Settings:
    """The checked harness keys of ``config`` (a missing key takes its default).

    Raises:
        ValueError: a value out of range, naming the key and the value given.
        ImportError: ``tensorboard=True`` without tensorboardX (before any cell trains).
    """
    get = lambda key: config.get(key, HARNESS_DEFAULTS[key])  # noqa: E731
    progress = get("progress")
    if progress not in ("auto", "on", "off"):
        raise ValueError(f"config.progress must be 'auto', 'on' or 'off', got {progress!r}")
    every, keep = get("checkpoint_every"), get("checkpoint_keep")
    if not isinstance(every, int) or isinstance(every, bool) or every < 0:
        raise ValueError(f"config.checkpoint_every must be an int >= 0 (0: no checkpoints), got {every!r}")
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ValueError(f"config.checkpoint_keep must be an int >= 1, got {keep!r}")
    tensorboard = get("tensorboard")
    if not isinstance(tensorboard, bool):
        raise ValueError(f"config.tensorboard must be True or False, got {tensorboard!r}")
    if tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise ImportError("config.tensorboard=True needs tensorboardX: pip install tensorboardX "
                          "(or pip install -e \".[tensorboard]\")")
    only = get("only")
    if not isinstance(only, str):
        raise ValueError(f"config.only must be a str such as 'task=parity_check,seed=0', got {only!r}")
    return Settings(only=only, progress=None if progress == "auto" else progress == "on",
                    workers=workers_setting(config), checkpoint_every=every, checkpoint_keep=keep,
                    tensorboard=tensorboard)
