"""A study's grid: cells built from typed axes, their random streams, and ``--config.only`` selection.

A :class:`Cell` is one point of the grid (``task=parity_check/model=lstm/.../seed=0``). Every cell draws its
random streams from its own field values (:meth:`Cell.rng`, :meth:`Cell.key`), so a result depends on the
cell, never on the order cells run in, on the selection, or on resuming.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import numpy as np

# An axis is its values, or a function of the fields chosen so far that returns them (a model's own
# learning rates, an attention model's variants): the grid is then one call, not nested loops.
Axis = Union[Iterable[Any], Callable[[Mapping[str, Any]], Iterable[Any]]]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of a grid: ordered ``(field, value)`` pairs such as ``(("task", "parity_check"), ("seed", 0))``.

    Values are str, int, float or bool. The cell's :attr:`id` (``"task=parity_check/seed=0"``) keys its
    entry in results.json.
    """

    fields: tuple[tuple[str, Any], ...]

    @property
    def id(self) -> str:
        return "/".join(f"{k}={v}" for k, v in self.fields)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.fields)

    def __getitem__(self, name: str) -> Any:
        for k, v in self.fields:
            if k == name:
                return v
        raise KeyError(f"cell {self.id} has no field {name!r}")

    def _entropy(self, stream: str, fields: Sequence[str] | None) -> list[int]:
        names = [k for k, _ in self.fields] if fields is None else list(fields)
        # crc32 of text is stable across processes and machines (Python's hash() is salted).
        return [zlib.crc32(stream.encode())] + [zlib.crc32(f"{n}={self[n]}".encode()) for n in names]

    def rng(self, stream: str, fields: Sequence[str] | None = None) -> np.random.Generator:
        """A NumPy generator for ``stream`` determined by the named fields only (default: all).

        Keying a data stream on ``("task", "seed")`` alone gives every model of a seed the same
        training examples, which is what a paired comparison between models needs.
        """
        return np.random.default_rng(self._entropy(stream, fields))

    def key(self, stream: str, fields: Sequence[str] | None = None):
        """A JAX key for ``stream`` determined by the named fields only (default: all)."""
        import jax

        seed = np.random.SeedSequence(self._entropy(stream, fields)).generate_state(1)[0]
        return jax.random.key(int(seed))


def grid(**axes: Axis) -> list[Cell]:
    """The product of ``axes`` in the order given (the last axis varies fastest).

    An axis given as a function receives the fields chosen so far (a dict) and returns that axis's
    values, so ``grid(model=models, lr=lambda f: lrs[f["model"]], seed=seeds)`` gives each model its own
    learning rates.
    """
    partial: list[dict[str, Any]] = [{}]
    for name, axis in axes.items():
        partial = [{**fields, name: value} for fields in partial
                   for value in (axis(fields) if callable(axis) else axis)]
    return [Cell(tuple(fields.items())) for fields in partial]


def names(value: str | Sequence[str]) -> list[str]:
    """``"a, b,c"`` or ``["a", "b"]`` -> ``["a", "b", "c"]`` (empty entries dropped)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [s.strip() for s in items if s.strip()]


def numbers(value: str | int | float | Sequence[Any], kind: type, name: str, low: float | None = None,
            high: float | None = None) -> list:
    """``"64,128"`` (or one number, or a list) -> ``[64, 128]`` as ``kind``; given ``low`` (and ``high``), at
    least one number, each in ``[low, high]``.

    Raises:
        ValueError: an entry that is not a ``kind`` or out of range, or none where ``low`` is given, naming the
            config key ``name``.
    """
    items = names(str(value)) if isinstance(value, (str, int, float)) else list(value)
    try:
        out = [kind(s) for s in items]
    except (TypeError, ValueError):
        raise ValueError(f"config.{name} must be comma-separated {kind.__name__}s, got {value!r}") from None
    if low is not None and not out:
        raise ValueError(f"config.{name} lists no {kind.__name__}")
    if low is not None and any(x < low or (high is not None and x > high) for x in out):
        raise ValueError(f"config.{name} must be {f'>= {low}' if high is None else f'in [{low}, {high}]'}, "
                         f"got {value!r}")
    return out


def int_tuples(value: str, name: str, form: str, separator: str = ":", size: int = 2) -> list[tuple[int, ...]]:
    """``"64:4,128:8"`` -> ``[(64, 4), (128, 8)]``: comma-separated tuples of ``size`` positive ints.

    Raises:
        ValueError: another entry, naming the config key ``name`` and the ``form`` expected (``"seq_len:kv"``).
    """
    tuples = [item.split(separator) for item in names(value)]
    if any(len(t) != size or not all(s.strip().isdigit() and int(s) > 0 for s in t) for t in tuples):
        raise ValueError(f"config.{name} must be comma-separated {form}, got {value!r}")
    return [tuple(int(s) for s in t) for t in tuples]


def check_names(kind: str, given: Iterable[str], valid: Iterable[str], key: str | None = None) -> None:
    """Raises ValueError naming the unknown ``kind`` entries and listing the valid ones; given ``key``, the config
    key the names come from, also when there are none (``config.tasks lists no task``)."""
    given = list(given)
    if key is not None and not given:
        raise ValueError(f"config.{key} lists no {kind}")
    valid = sorted(valid)
    unknown = [g for g in given if g not in valid]
    if unknown:
        raise ValueError(f"unknown {kind} {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")


def check_ints(config: Mapping[str, Any], **lows: int) -> None:
    """Checks that each key of ``lows`` holds an int (not a bool) of at least its value in ``config``.

    Raises:
        ValueError: naming the first key out of range and the value given.
    """
    for key, low in lows.items():
        value = config[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"config.{key} must be an int >= {low}, got {value!r}")


def select(cells: Sequence[Cell], only: str) -> list[Cell]:
    """The cells that ``only`` keeps.

    ``only`` is empty (every cell) or comma-separated clauses that must all hold: ``field=v1|v2``
    keeps cells whose ``field`` is one of the values (compared as text); ``shard=i/n`` keeps every
    ``n``-th cell starting at ``i`` (in grid order), to split a grid across machines.

    Raises:
        ValueError: malformed clause, unknown field, a value no cell has, or a selection that is empty.
    """
    if not cells:
        raise ValueError("the config's grid has no cells (check its task/model/seed lists)")
    fields = [k for k, _ in cells[0].fields]
    kept = list(enumerate(cells))
    for clause in names(only):
        field, sep, wanted = clause.partition("=")
        field = field.strip()
        if not sep or not wanted.strip():
            raise ValueError(f"config.only clause {clause!r} must look like field=value[|value] or shard=i/n")
        if field == "shard":
            match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", wanted)
            if not match or not int(match[1]) < int(match[2]):
                raise ValueError(f"config.only shard must be i/n with 0 <= i < n, got {wanted!r}")
            i, n = int(match[1]), int(match[2])
            kept = [(j, c) for j, c in kept if j % n == i]
            continue
        if field not in fields:
            raise ValueError(f"config.only field {field!r} is not a grid field; "
                             f"grid fields: {', '.join(fields)}, shard")
        values = {v.strip() for v in wanted.split("|")}
        present = {str(c[field]) for c in cells}
        check_names(f"config.only value(s) of {field}", sorted(values), present)
        kept = [(j, c) for j, c in kept if str(c[field]) in values]
    if not kept:
        raise ValueError(f"config.only={only!r} selects no cell")
    return [c for _, c in kept]
