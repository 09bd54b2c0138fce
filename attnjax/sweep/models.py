"""A study's model blocks: every field of a model's config as plain config data, and the check of a study's
model list.

A study's config holds one block per model (``config.transformer``, ``config.lstm``) built by
:func:`model_block`, so every field of the model's config dataclass can be overridden from the command line
(``--config.transformer.implementation=blockwise``) and a misspelt field is refused before training.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import ml_collections
from ml_collections import config_dict

from attnjax.nn import get_model_spec, model_config

# How a model runs rather than what it is: set where it applies (a study's compute_dtype, a diagnostic
# pass), never in a study's model block.
EXECUTION_FIELDS = ("dtype", "sow_attention_weights", "sequence_parallel_axis", "sequence_parallel_layout")
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _placeholder(field: dataclasses.Field) -> Any:
    """A typed empty value for a field whose default is None, so ``--config.x.field=v`` knows v's type."""
    kinds = [_TYPES[t.strip()] for t in str(field.type).split("|") if t.strip() in _TYPES]
    return config_dict.placeholder(kinds[0]) if kinds else None


def model_block(name: str, *, set_per_cell: Iterable[str] = (), **fields: Any) -> ml_collections.ConfigDict:
    """Every field of model ``name``'s config as a ConfigDict: the dataclass defaults, then ``fields``.

    Args:
        name: a model of :data:`attnjax.nn.MODELS`.
        set_per_cell: fields the study sets in each cell (an attention model's variant); left out of the
            block, so overriding them on the command line is an error instead of being ignored.
        fields: this study's values.

    Raises:
        ValueError: unknown model, or ``fields`` naming a field the block does not hold (the message lists
            the valid ones).
    """
    spec = get_model_spec(name)
    left_out = set(spec.fixed) | set(EXECUTION_FIELDS) | set(set_per_cell)
    block_fields = [f for f in dataclasses.fields(spec.config) if f.name not in left_out]
    valid = [f.name for f in block_fields]
    unknown = sorted(set(fields) - set(valid))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} for the {name!r} block; valid: {', '.join(valid)}")
    block = {}
    for f in block_fields:
        value = fields.get(f.name, f.default)
        if value is dataclasses.MISSING:
            value = f.default_factory()  # type: ignore[misc]
        block[f.name] = _placeholder(f) if value is None else value
    return ml_collections.ConfigDict(block)


def check_models(models: Iterable[str], blocks: Mapping[str, Any], learning_rates: Mapping[str, Any],
                 recipes: Mapping[str, Any] | None = None) -> list[str]:
    """Checks a study's models: each a model of :data:`attnjax.nn.MODELS` with a config block in ``blocks``
    that builds, learning rates in ``learning_rates``, and (if given) recipe names in ``recipes``. Returns
    the names.

    Raises:
        ValueError, TypeError: no model, an unknown name, a missing block or learning rate, a bad field.
    """
    models = list(models)
    if not models:
        raise ValueError("config.models lists no model")
    for model in models:
        get_model_spec(model)
        if model not in blocks or model not in learning_rates:
            raise ValueError(f"model {model!r} needs a config block config.{model} and config.learning_rates.{model}")
        if recipes is not None and model not in recipes:
            raise ValueError(f"model {model!r} needs its recipe names in config.recipes.{model}")
        model_config(model, dict(blocks[model]))
    return models
