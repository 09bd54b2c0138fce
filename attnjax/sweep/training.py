"""A study's training recipe and stop rule as config keys.

The recipe keys are declared once with today's defaults, parsed once into a :class:`attnjax.train.Recipe`,
and part of a cell's fingerprint only where they differ from the defaults (so cells that keep the defaults
keep the fingerprints, and the committed results, they had before). A study may instead make the optimizer
and schedule a grid axis per model, as a recipe name ``"optimizer+schedule"`` (``"adamw+warmup_cosine"``);
the other keys then apply to the recipes that use them. The stop rule (``config.stopping``) is the fields of
:class:`attnjax.train.TrainToFit`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import ml_collections

import optax

from attnjax.sweep.grid import names
from attnjax.sweep.settings import add_keys
from attnjax.train import Recipe, TrainToFit, make_recipe_optimizer
from attnjax.train.recipe import OPTIMIZERS, SCHEDULES

# The learning rate is a grid axis of each study (config.learning_rates.<model>), not a recipe key here.
RECIPE_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",  # "adam" or "adamw"
    "schedule": "constant",  # "constant" or "warmup_cosine" (linear warmup, then cosine decay)
    "warmup_steps": 0,  # warmup_cosine: steps of linear warmup from 0
    "final_fraction": 0.0,  # warmup_cosine: the last step's rate as a fraction of the peak
    "weight_decay": 0.0,  # adamw only
    "max_grad_norm": 1.0,  # global-norm clipping before the optimizer
}


PER_CELL_KEYS = ("optimizer", "schedule")  # what a recipe name sets
STOPPING_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TrainToFit) if f.name != "metric"}


def with_recipe_keys(config: ml_collections.ConfigDict, *, per_cell: bool = False,
                     **defaults: Any) -> ml_collections.ConfigDict:
    """Adds the recipe keys to a study's ``config`` (``defaults`` override :data:`RECIPE_DEFAULTS`); returns it.
    ``per_cell=True``: leave out :data:`PER_CELL_KEYS`, which the study's cells set by recipe name."""
    keys = {k: v for k, v in RECIPE_DEFAULTS.items() if not (per_cell and k in PER_CELL_KEYS)}
    return add_keys(config, "recipe", keys, **defaults)


def parse_recipe_name(name: str) -> dict[str, str]:
    """``"optimizer+schedule"`` as ``{"optimizer", "schedule"}``.

    Raises:
        ValueError: a malformed name, or an unknown optimizer or schedule, naming the value given.
    """
    optimizer, _, schedule = name.partition("+")
    if optimizer not in OPTIMIZERS or schedule not in SCHEDULES:
        raise ValueError(f"a recipe name is 'optimizer+schedule' with an optimizer in {OPTIMIZERS} and a schedule "
                         f"in {SCHEDULES}, got {name!r}")
    return {"optimizer": optimizer, "schedule": schedule}


def recipe(config: ml_collections.ConfigDict, learning_rate: str | float, name: str | None = None) -> Recipe:
    """The checked :class:`Recipe` of ``config`` at one learning rate of its grid (a numeric string or a float).
    ``name`` (``"optimizer+schedule"``) overrides the config's optimizer and schedule; warmup and the final
    fraction then apply only to ``warmup_cosine``, and weight decay only to ``adamw``.

    Raises:
        ValueError, TypeError: a bad value, naming the key and the value given.
    """
    keys = {k: config.get(k, v) for k, v in RECIPE_DEFAULTS.items()}
    if name is not None:
        keys.update(parse_recipe_name(name))
        if keys["schedule"] == "constant":
            keys.update(warmup_steps=0, final_fraction=0.0)
        if keys["optimizer"] == "adam":
            keys["weight_decay"] = 0.0
    return Recipe.from_mapping({**keys, "learning_rate": learning_rate})


def optimizer_for(config: ml_collections.ConfigDict, learning_rate: str | float,
                  name: str | None = None) -> optax.GradientTransformation:
    """One cell's optimizer: ``config``'s recipe (or the recipe ``name``) at ``learning_rate`` over
    ``config.num_steps`` steps (the same cached object for equal settings, so cells share compiled steps).
    Calling it for every learning rate of the grid is also how a study validates its recipe before training.

    Raises:
        ValueError, TypeError: a bad recipe value, naming the key and the value given.
    """
    return make_recipe_optimizer(recipe(config, learning_rate, name), config.num_steps)


def check_recipes(config: ml_collections.ConfigDict, models: Iterable[str],
                  recipes: Mapping[str, str] | None = None) -> None:
    """Builds the optimizer of every learning rate in ``config.learning_rates.<model>`` of ``models`` (under
    every recipe name in ``recipes[model]``, where given), so a bad recipe value fails before any training.

    Raises:
        ValueError, TypeError: as :func:`optimizer_for`.
    """
    for model in models:
        for name in names(recipes[model]) if recipes is not None else [None]:
            for lr in names(config.learning_rates[model]):
                optimizer_for(config, lr, name)


def with_stopping_keys(config: ml_collections.ConfigDict, **defaults: Any) -> ml_collections.ConfigDict:
    """Adds ``config.stopping``, the fields of :class:`~attnjax.train.TrainToFit` (``defaults`` override
    :data:`STOPPING_DEFAULTS`); returns ``config``."""
    config.stopping = add_keys(ml_collections.ConfigDict(), "stopping", STOPPING_DEFAULTS, **defaults)
    return config


def stop_rule(config: ml_collections.ConfigDict) -> TrainToFit:
    """``config.stopping`` as a checked :class:`~attnjax.train.TrainToFit`.

    Raises:
        ValueError: a bad value, naming the field and the value given.
    """
    return TrainToFit(**config.stopping.to_dict())


def recipe_fingerprint(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The recipe keys that differ from :data:`RECIPE_DEFAULTS` (``max_grad_norm`` is a protocol key of the
    studies that had it before recipes existed, so it is left to them)."""
    return {k: config[k] for k, v in RECIPE_DEFAULTS.items()
            if k != "max_grad_norm" and k in config and config[k] != v}
