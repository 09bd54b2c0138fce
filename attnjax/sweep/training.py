"""A study's training recipe as config keys: declared once with today's defaults, parsed once into a
:class:`attnjax.train.Recipe`, and part of a cell's fingerprint only where it differs from the defaults
(so cells that keep the defaults keep the fingerprints, and the committed results, they had before).
"""

from __future__ import annotations

from typing import Any

import ml_collections

import optax

from attnjax.sweep.settings import add_keys
from attnjax.train import Recipe, make_recipe_optimizer

# The learning rate is a grid axis of each study (config.learning_rates.<model>), not a recipe key here.
RECIPE_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",  # "adam" or "adamw"
    "schedule": "constant",  # "constant" or "warmup_cosine" (linear warmup, then cosine decay)
    "warmup_steps": 0,  # warmup_cosine: steps of linear warmup from 0
    "final_fraction": 0.0,  # warmup_cosine: the last step's rate as a fraction of the peak
    "weight_decay": 0.0,  # adamw only
    "max_grad_norm": 1.0,  # global-norm clipping before the optimizer
}


def with_recipe_keys(config: ml_collections.ConfigDict, **defaults: Any) -> ml_collections.ConfigDict:
    """Adds the recipe keys to a study's ``config`` (``defaults`` override :data:`RECIPE_DEFAULTS`); returns it."""
    return add_keys(config, "recipe", RECIPE_DEFAULTS, **defaults)


def recipe(config: ml_collections.ConfigDict, learning_rate: str | float) -> Recipe:
    """The checked :class:`Recipe` of ``config`` at one learning rate of its grid (a numeric string or a float).

    Raises:
        ValueError, TypeError: a bad value, naming the key and the value given.
    """
    return Recipe.from_mapping({**{k: config.get(k, v) for k, v in RECIPE_DEFAULTS.items()},
                                "learning_rate": learning_rate})


def optimizer_for(config: ml_collections.ConfigDict, learning_rate: str | float) -> optax.GradientTransformation:
    """One cell's optimizer: ``config``'s recipe at ``learning_rate`` over ``config.num_steps`` steps (the
    same cached object for equal settings, so cells share compiled steps). Calling it for every learning
    rate of the grid is also how a study validates its recipe before training.

    Raises:
        ValueError, TypeError: a bad recipe value, naming the key and the value given.
    """
    return make_recipe_optimizer(recipe(config, learning_rate), config.num_steps)


def recipe_fingerprint(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The recipe keys that differ from :data:`RECIPE_DEFAULTS` (``max_grad_norm`` is a protocol key of the
    studies that had it before recipes existed, so it is left to them)."""
    return {k: config[k] for k, v in RECIPE_DEFAULTS.items()
            if k != "max_grad_norm" and k in config and config[k] != v}
