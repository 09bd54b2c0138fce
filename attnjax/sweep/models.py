"""A study's model blocks: every field of a model's config as plain config data, and the check of a study's
model list.

A study's config holds one block per model (``config.transformer``, ``config.lstm``) built by
:func:`model_block`, so every field of the model's config dataclass can be overridden from the command line
(``--config.transformer.attention.implementation=blockwise``) and a misspelt field is refused before training.
A field holding a dataclass (a Transformer's :class:`~attnjax.ops.AttentionConfig`) is a nested block.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import ml_collections
from ml_collections import config_dict

from attnjax.nn import get_model_spec, model_config, model_kind

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
# The attention's fields under the flat names a Transformer config had before the attention became one value.
_FLAT_ATTENTION_NAMES = {"name": "attention", "options": "attention_options", "implementation": "implementation",
                         "block_q": "block_q", "block_kv": "block_kv"}
# What a study of each kind trains on (attnjax.nn.contract), for the error of a model of another kind.
_KIND_SHAPES = {"sequence": "[B, L, V] -> per-position [B, L, C] logits (pooling=None)",
                "classifier": "[B, L] -> [B, C] logits (set its pooling)",
                "seq2seq": "source [B, S, V], target_inputs [B, T] -> [B, T, C] logits"}
# Model fields added after results were committed, with the default that is the earlier model: a fingerprint leaves
# them out at that default, so those results keep their fingerprints.
_LATER_FIELDS = {"bidirectional": False}


def _placeholder(field: dataclasses.Field) -> Any:
    """A typed empty value for a field whose default is None, so ``--config.x.field=v`` knows v's type."""
    kinds = [_TYPES[t.strip()] for t in str(field.type).split("|") if t.strip() in _TYPES]
    return config_dict.placeholder(kinds[0]) if kinds else None


def _block(cls: type, values: Mapping[str, Any], left_out: set[str], prefix: str = "") -> dict[str, Any]:
    """``cls``'s fields minus ``left_out`` (dotted names) as plain config data: ``values`` over the defaults,
    a dataclass-valued field as a nested dict of its own fields."""
    block = {}
    for f in dataclasses.fields(cls):
        if prefix + f.name in left_out:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        value = values.get(f.name, default)
        if dataclasses.is_dataclass(default):
            given = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value)
            unknown = sorted(set(given) - {g.name for g in dataclasses.fields(default)})
            if unknown:
                raise ValueError(f"unknown field(s) {unknown} for {prefix}{f.name}; valid: "
                                 f"{', '.join(g.name for g in dataclasses.fields(default))}")
            block[f.name] = _block(type(default), given, left_out, f"{prefix}{f.name}.")
        else:
            block[f.name] = _placeholder(f) if value is None else value
    return block


def fingerprint_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A model's fields as a cell's fingerprint hashes them: a nested attention block under the flat field
    names it had before the attention became one value, and without :data:`_LATER_FIELDS` at their defaults, so
    results committed before either keep their fingerprints."""
    flat = {k: v for k, v in fields.items() if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}
    attention = flat.get("attention")
    if hasattr(attention, "items"):
        del flat["attention"]
        flat.update({_FLAT_ATTENTION_NAMES[k]: v for k, v in attention.items()})
    return flat


def model_block(name: str, *, set_per_cell: Iterable[str] = (), **fields: Any) -> ml_collections.ConfigDict:
    """Every field of model ``name``'s config as a ConfigDict: the dataclass defaults, then ``fields``.

    Args:
        name: a model of :data:`attnjax.nn.MODELS`.
        set_per_cell: fields the study sets in each cell (an attention model's variant, as
            ``"attention.name"``); left out of the block, so overriding them on the command line is an error
            instead of being ignored.
        fields: this study's values (a nested field as a mapping of its own fields).

    Raises:
        ValueError: unknown model, or ``fields`` naming a field the block does not hold (the message lists
            the valid ones).
    """
    spec = get_model_spec(name)
    left_out = set(spec.fixed) | set(set_per_cell)
    valid = [f.name for f in dataclasses.fields(spec.config) if f.name not in left_out]
    unknown = sorted(set(fields) - set(valid))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} for the {name!r} block; valid: {', '.join(valid)}")
    return ml_collections.ConfigDict(_block(spec.config, fields, left_out))


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


def check_kind(kind: str, fields: Mapping[str, Iterable[Mapping[str, Any]]]) -> None:
    """Builds every config of a study's cells and checks that each is a model of the study's ``kind``
    (:data:`attnjax.nn.contract.MODEL_KINDS`): ``fields`` maps a model to the fields of its cells (what a cell
    sets, a width or a variant, can make a bad config, or set ``pooling``).

    Raises:
        ValueError, TypeError: a config that does not build; a model of another kind (naming the shapes the
            study needs).
    """
    for model, configs in fields.items():
        for config in configs:
            model_config(model, config)
            if model_kind(model, config) != kind:
                raise ValueError(f"model {model!r} must be a {kind} model here: {_KIND_SHAPES[kind]}")
