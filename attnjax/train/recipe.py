"""The training recipe: optimizer, learning rate, schedule, weight decay and clipping as one value.

A :class:`Recipe` is a frozen (hashable) dataclass holding plain Python numbers. Experiment configs
describe it as a mapping (``config.recipe``), read once by :meth:`Recipe.from_mapping`, the single place
where strings such as ``"3e-4"`` become numbers. :func:`make_recipe_optimizer` turns it into an optax
transformation; for the default recipe (Adam, constant learning rate) that is exactly
:func:`attnjax.train.make_optimizer`'s cached object, so results and compiled steps are unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Mapping
from typing import Any

import optax

from attnjax.train.state import make_optimizer

__all__ = ["OPTIMIZERS", "SCHEDULES", "Recipe", "make_recipe_optimizer"]

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "warmup_cosine")

# Fields by kind; from_mapping parses strings with these, __post_init__ checks types with them.
_FLOAT_FIELDS = ("learning_rate", "final_fraction", "weight_decay", "max_grad_norm", "b1", "b2")
_INT_FIELDS = ("warmup_steps",)
_STR_FIELDS = ("optimizer", "schedule")


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to optimize: one frozen value, hashable and usable as a jit static argument.

    Attributes:
        optimizer: ``"adam"`` or ``"adamw"`` (decoupled weight decay, applied to every parameter).
        learning_rate: the peak learning rate, finite and > 0.
        schedule: ``"constant"``, or ``"warmup_cosine"``: linear warmup from 0 to ``learning_rate`` over
            ``warmup_steps`` updates, then cosine decay to ``final_fraction * learning_rate`` at update
            ``num_steps`` (given to :func:`make_recipe_optimizer`), held there afterwards. Update ``i``
            (0-based) uses the rate at ``i``, so with warmup the first update has rate 0.
        warmup_steps: int >= 0; non-zero only with ``"warmup_cosine"``.
        final_fraction: in [0, 1]; the final rate as a fraction of the peak. Non-zero only with
            ``"warmup_cosine"``.
        weight_decay: >= 0; non-zero only with ``"adamw"``. optax's decoupled decay: each update also
            subtracts ``rate * weight_decay * param``.
        max_grad_norm: clip the gradient's global norm to this (> 0) before the optimizer, or ``None``
            for no clipping.
        b1: Adam's first-moment decay, in [0, 1).
        b2: Adam's second-moment decay, in [0, 1).

    Numbers are stored as Python ``float``/``int`` (an ``int`` learning rate or a NumPy scalar is
    converted), so :meth:`to_dict` is plain JSON and equal recipes compare and hash equal.

    Raises:
        TypeError: a field of the wrong type, e.g. a string learning rate (parse it with
            :meth:`from_mapping`).
        ValueError: a value out of range, an unknown optimizer or schedule, or fields that do not go
            together (``weight_decay > 0`` with ``"adam"``; warmup or a final fraction with
            ``"constant"``). The message names the field, the value and what is valid.
    """

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    warmup_steps: int = 0
    final_fraction: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    b1: float = 0.9
    b2: float = 0.999

    def __post_init__(self) -> None:
        for name in _STR_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"Recipe.{name} must be a str, got {value!r} ({type(value).__name__})")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not _is_int(value):
                raise TypeError(f"Recipe.{name} must be an int, got {value!r} ({type(value).__name__})")
            object.__setattr__(self, name, int(value))
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if name == "max_grad_norm" and value is None:
                continue
            if not _is_real(value):
                hint = "; parse strings with Recipe.from_mapping" if isinstance(value, str) else ""
                raise TypeError(f"Recipe.{name} must be a real number{' or None' * (name == 'max_grad_norm')}, "
                                f"got {value!r} ({type(value).__name__}){hint}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"Recipe.{name} must be finite, got {value!r}")
            object.__setattr__(self, name, value)

        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Recipe.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Recipe.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"Recipe.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"Recipe.warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if not 0.0 <= self.final_fraction <= 1.0:
            raise ValueError(f"Recipe.final_fraction must be in [0, 1], got {self.final_fraction!r}")
        if self.weight_decay < 0:
            raise ValueError(f"Recipe.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"Recipe.max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        for name in ("b1", "b2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"Recipe.{name} must be in [0, 1), got {getattr(self, name)!r}")

        # Settings that would silently do nothing are errors, so a recorded recipe means what it says.
        if self.optimizer == "adam" and self.weight_decay > 0:
            raise ValueError(f"Recipe.weight_decay={self.weight_decay!r} needs optimizer='adamw', got "
                             f"optimizer={self.optimizer!r} (Adam has no decoupled weight decay)")
        if self.schedule == "constant" and self.warmup_steps:
            raise ValueError(f"Recipe.warmup_steps={self.warmup_steps!r} needs schedule='warmup_cosine', got "
                             f"schedule={self.schedule!r}")
        if self.schedule == "constant" and self.final_fraction:
            raise ValueError(f"Recipe.final_fraction={self.final_fraction!r} needs schedule='warmup_cosine', "
                             f"got schedule={self.schedule!r}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The recipe's keys, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, mapping: Any) -> Recipe:
        """Builds a recipe from a config mapping: the one place where strings become numbers.

        Args:
            mapping: a ``dict``, ``ml_collections.ConfigDict`` or anything with ``.items()``, whose keys
                are a subset of :meth:`field_names` (missing keys take the defaults). A numeric field may
                be a string (``"3e-4"``, ``"100"``), parsed with ``float``/``int``; ``max_grad_norm`` may
                also be ``None`` or the string ``"none"``. A :class:`Recipe` is returned as it is.

        Returns:
            The validated :class:`Recipe`.

        Raises:
            TypeError: ``mapping`` has no ``.items()``, a key is not a string, or a value has the wrong type.
            ValueError: an unknown key (the message lists the valid keys), an unparsable numeric string,
                or any error of :class:`Recipe` itself.
        """
        if isinstance(mapping, Recipe):
            return mapping
        if not (isinstance(mapping, Mapping) or callable(getattr(mapping, "items", None))):
            raise TypeError(f"Recipe.from_mapping: mapping must be a mapping (dict or ConfigDict), got "
                            f"{type(mapping).__name__}: {mapping!r}")
        items = dict(mapping.items())
        valid = cls.field_names()
        for key in items:
            if not isinstance(key, str):
                raise TypeError(f"Recipe.from_mapping: keys must be strings, got {key!r}; valid keys: {valid}")
        unknown = sorted(set(items) - set(valid))
        if unknown:
            raise ValueError(f"Recipe.from_mapping: unknown key(s) {unknown}; valid keys: {valid}")
        kwargs = {}
        for key, value in items.items():
            if isinstance(value, str) and key in _FLOAT_FIELDS + _INT_FIELDS:
                value = _parse_number(key, value)
            kwargs[key] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain, JSON-able ``dict`` (``str``, ``int``, ``float``, ``None``).

        ``Recipe.from_mapping(recipe.to_dict()) == recipe``.
        """
        return {name: getattr(self, name) for name in self.field_names()}

    def schedule_fn(self, num_steps: int | None = None) -> optax.Schedule:
        """The learning rate as a function of the update count (``optax`` schedule).

        Args:
            num_steps: the number of updates the run makes. Required for ``"warmup_cosine"`` (int >= 1,
                greater than ``warmup_steps``); ignored by ``"constant"``, but checked when given.

        Returns:
            ``count -> learning rate``: ``learning_rate`` for ``"constant"``; for ``"warmup_cosine"``
            ``learning_rate * count / warmup_steps`` up to ``warmup_steps``, then
            ``end + (learning_rate - end) * (1 + cos(pi * (count - warmup_steps) / (num_steps -
            warmup_steps))) / 2`` with ``end = final_fraction * learning_rate``, constant after
            ``num_steps``.

        Raises:
            TypeError, ValueError: a bad ``num_steps`` (see above).
        """
        num_steps = _check_num_steps(self, num_steps)
        if self.schedule == "constant":
            return optax.constant_schedule(self.learning_rate)
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=self.learning_rate, warmup_steps=self.warmup_steps,
            decay_steps=num_steps, end_value=self.final_fraction * self.learning_rate)


def _parse_number(field: str, text: str) -> float | int | None:
    stripped = text.strip()
    if field == "max_grad_norm" and stripped.lower() == "none":
        return None
    kind = int if field in _INT_FIELDS else float
    try:
        return kind(stripped)
    except ValueError:
        expected = "an int" if kind is int else "a number"
        if field == "max_grad_norm":
            expected += " or 'none'"
        raise ValueError(f"Recipe.{field}: cannot parse {text!r} as {expected}") from None


def _check_num_steps(recipe: Recipe, num_steps: int | None) -> int | None:
    if num_steps is not None:
        if not _is_int(num_steps):
            raise TypeError(f"num_steps must be an int or None, got {num_steps!r} ({type(num_steps).__name__})")
        num_steps = int(num_steps)
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if recipe.schedule == "warmup_cosine":
        if num_steps is None:
            raise ValueError("num_steps is required for schedule='warmup_cosine', got None")
        if not recipe.warmup_steps < num_steps:
            raise ValueError(f"Recipe.warmup_steps={recipe.warmup_steps} must be < num_steps={num_steps} for "
                             f"schedule='warmup_cosine'")
    return num_steps


def make_recipe_optimizer(recipe: Recipe, num_steps: int | None = None) -> optax.GradientTransformation:
    """``clip_by_global_norm(recipe.max_grad_norm)`` (unless ``None``) then Adam/AdamW on the schedule.

    Cached like :func:`~attnjax.train.make_optimizer`: equal recipes (and, for ``"warmup_cosine"``, equal
    ``num_steps``) give the *same* transformation object, so runs share compiled steps. An Adam recipe
    with a constant rate returns exactly ``make_optimizer(learning_rate, max_grad_norm, b1, b2)``, so it
    reproduces earlier results bit for bit.

    Args:
        recipe: the :class:`Recipe`.
        num_steps: the number of updates of the run; required for ``"warmup_cosine"`` (see
            :meth:`Recipe.schedule_fn`), ignored by ``"constant"``.

    Returns:
        The ``optax.GradientTransformation``.

    Raises:
        TypeError: ``recipe`` is not a :class:`Recipe` (build one with :meth:`Recipe.from_mapping`), or
            ``num_steps`` is not an int.
        ValueError: a bad ``num_steps`` for the schedule.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe (use Recipe.from_mapping for a config), got "
                        f"{type(recipe).__name__}: {recipe!r}")
    num_steps = _check_num_steps(recipe, num_steps)
    if recipe.optimizer == "adam" and recipe.schedule == "constant":
        return make_optimizer(recipe.learning_rate, recipe.max_grad_norm, recipe.b1, recipe.b2)
    # A constant rate does not depend on num_steps: one cache entry (one compiled step) for all lengths.
    return _build_optimizer(recipe, num_steps if recipe.schedule == "warmup_cosine" else None)


@functools.lru_cache(maxsize=None)
def _build_optimizer(recipe: Recipe, num_steps: int | None) -> optax.GradientTransformation:
    # A constant rate stays a float (as in make_optimizer): no schedule count in the optimizer state.
    rate = recipe.learning_rate if recipe.schedule == "constant" else recipe.schedule_fn(num_steps)
    if recipe.optimizer == "adamw":
        opt = optax.adamw(rate, b1=recipe.b1, b2=recipe.b2, weight_decay=recipe.weight_decay)
    else:
        opt = optax.adam(rate, b1=recipe.b1, b2=recipe.b2)
    return opt if recipe.max_grad_norm is None else optax.chain(optax.clip_by_global_norm(recipe.max_grad_norm), opt)
