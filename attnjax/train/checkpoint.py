"""Checkpoints of a training run (orbax-checkpoint): save every N steps, keep the last K, skip corrupt ones.

A checkpoint is one orbax step directory ``<directory>/<step>/`` with two items:

* ``arrays``: a pytree of arrays (for :func:`attnjax.train.fit`: step, parameters, optimizer state and the
  raw bits of the RNG key), written from host copies, so the asynchronous write never races a later step
  that donates the device buffers;
* ``meta``: JSON: the caller's metadata (``fit``: the data streams' generator states and the logged
  metrics) plus the arrays' paths, shapes and dtypes and a SHA-256 of their contents.

Orbax writes a step into a temporary directory and renames it when complete, so a process killed mid-save
leaves no step directory (the temporary one is removed when the next run opens the directory). What the
rename cannot protect against (a disk or copy that later truncates or alters files) the checksum catches:
on restore, a checkpoint whose metadata cannot be read, whose arrays cannot be restored or whose contents
do not match the checksum is skipped with a :class:`CorruptCheckpointWarning` naming it, moved aside to
``<step>.corrupt`` (kept for inspection; orbax ignores it) and the next older one is tried. A checkpoint of
a *different* state (other paths, shapes or dtypes) is not corruption but the wrong directory: that raises.

The arrays are fetched to the host: a replicated state (what :func:`~attnjax.train.fit` trains) on every
process of a multi-process job, each saving the same checkpoint through orbax's coordinated save (tested
with two processes). A state sharded over hosts (model parallelism) saves with orbax directly (see
TPU_NOTES.md, "Checkpoints from many hosts").
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from typing import Any, Mapping

import jax
import numpy as np

ARRAYS_ITEM, META_ITEM = "arrays", "meta"
FORMAT_VERSION = 1


class CorruptCheckpointWarning(UserWarning):
    """A checkpoint could not be read or failed its checksum; it was skipped (and moved aside)."""


def _dtype(x: Any) -> str:
    return str(x.dtype) if hasattr(x, "dtype") else str(np.asarray(x).dtype)


def describe(tree: Any) -> list[list[Any]]:
    """``[[path, shape, dtype], ...]`` of ``tree``'s leaves in flattening order (JSON-compatible)."""
    return [[jax.tree_util.keystr(path), list(np.shape(x)), _dtype(x)]
            for path, x in jax.tree_util.tree_leaves_with_path(tree)]


def digest(tree: Any) -> str:
    """SHA-256 (hex) of ``tree``'s leaves: their paths, shapes, dtypes and bytes, in flattening order."""
    h = hashlib.sha256()
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        x = np.ascontiguousarray(np.asarray(x))
        h.update(f"{jax.tree_util.keystr(path)}|{x.shape}|{x.dtype}|".encode())
        h.update(x.tobytes())
    return h.hexdigest()


def generator_state(generator: np.random.Generator) -> dict[str, Any]:
    """JSON-compatible ``generator.bit_generator.state``: what regenerates its stream exactly from here on."""
    return _to_json(generator.bit_generator.state)


def set_generator_state(generator: np.random.Generator, state: Mapping[str, Any]) -> None:
    """Puts ``generator`` back where :func:`generator_state` found it.

    Raises:
        ValueError: ``state`` is of another bit generator (e.g. MT19937 saved, PCG64 given).
    """
    saved = state.get("bit_generator") if isinstance(state, Mapping) else None
    kind = type(generator.bit_generator).__name__
    if saved != kind:
        raise ValueError(f"saved data-stream state is of bit generator {saved!r}, but the generator is {kind!r}")
    generator.bit_generator.state = _from_json(state)


def _to_json(value: Any) -> Any:
    # PCG64 states are Python ints (any size: JSON keeps them exact); MT19937 and others hold arrays.
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class Restored:
    """A verified checkpoint: its ``step``, ``arrays`` (numpy, structured like the ``like`` tree), the caller's
    ``meta`` and its directory ``path``."""

    step: int
    arrays: Any
    meta: dict[str, Any]
    path: str


class Checkpointer:
    """An orbax ``CheckpointManager`` over ``directory`` keeping the last ``keep`` checkpoints.

    Use as a context manager (or call :meth:`close`): saves are asynchronous, and closing waits for them.

    Args:
        directory: created if missing. One training run per directory.
        keep: how many of the newest checkpoints to keep (>= 1; 2 or more leaves an older one to fall back to
            when the newest turns out corrupt).

    Raises:
        ValueError: ``keep`` not an int >= 1.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        import orbax.checkpoint as ocp  # imported here: only runs that checkpoint pay its import time

        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ValueError(f"keep must be an int >= 1, got {keep!r}")
        self._ocp = ocp
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Waits for pending saves, then releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def wait(self) -> None:
        """Blocks until every started save is on disk."""
        self._manager.wait_until_finished()

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints in the directory, ascending."""
        return sorted(self._manager.all_steps())

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def save(self, step: int, arrays: Any, meta: Mapping[str, Any]) -> bool:
        """Starts saving ``arrays`` (a pytree) and ``meta`` (JSON-serializable) as checkpoint ``step``.

        The arrays are copied to the host before this returns; the write itself continues in the background.

        Returns:
            False if a checkpoint of ``step`` already exists (nothing is written), else True.
        """
        if step in self._manager.all_steps():
            return False
        host = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), arrays)
        record = {**meta, "format": FORMAT_VERSION, "step": int(step), "tree": describe(host), "sha256": digest(host)}
        args = self._ocp.args
        self._manager.save(step, args=args.Composite(**{ARRAYS_ITEM: args.StandardSave(host),
                                                         META_ITEM: args.JsonSave(record)}), force=True)
        return True

    def restore_latest(self, like: Any) -> Restored | None:
        """The newest checkpoint that reads back intact, or None when there is none.

        Args:
            like: a pytree with the paths, shapes and dtypes the saved arrays must have (e.g. the fresh state).

        Returns:
            The :class:`Restored` checkpoint; every newer one that was corrupt or partial has been skipped with
            a :class:`CorruptCheckpointWarning` naming its directory and moved aside to ``<step>.corrupt``.

        Raises:
            ValueError: a checkpoint that reads back intact but holds other arrays than ``like`` (another model
                or optimizer wrote this directory); the message names the directory and the first difference.
        """
        expected = describe(like)
        target = jax.tree.map(lambda x: np.zeros(np.shape(x), x.dtype), like)
        args = self._ocp.args
        for step in reversed(self.steps()):
            path = self.path(step)
            try:
                meta = self._manager.restore(step, args=args.Composite(**{META_ITEM: args.JsonRestore()}))[META_ITEM]
                if not isinstance(meta, dict) or {"tree", "sha256"} - set(meta):
                    raise ValueError(f"metadata lacks the 'tree' and 'sha256' entries: {str(meta)[:200]}")
            except Exception as err:  # noqa: BLE001 - whatever orbax raises on a damaged directory
                self._set_aside(step, f"its metadata cannot be read ({type(err).__name__}: {str(err)[:300]})")
                continue
            if meta["tree"] != expected:
                diff = next(((a, b) for a, b in zip(meta["tree"], expected) if a != b),
                            (f"{len(meta['tree'])} arrays", f"{len(expected)} arrays"))
                raise ValueError(f"checkpoint {path} holds other arrays than this run's state (first difference: "
                                 f"saved {diff[0]}, expected {diff[1]}); it belongs to another run: use another "
                                 f"checkpoint directory or delete this one")
            try:
                restored = self._manager.restore(
                    step, args=args.Composite(**{ARRAYS_ITEM: args.StandardRestore(target)}))[ARRAYS_ITEM]
                # Orbax may hand scalars back as Python numbers: give every leaf the saved dtype and shape.
                restored = jax.tree.map(lambda x, t: np.asarray(x, t.dtype).reshape(t.shape), restored, target)
            except Exception as err:  # noqa: BLE001
                self._set_aside(step, f"its arrays cannot be restored ({type(err).__name__}: {str(err)[:300]})")
                continue
            if digest(restored) != meta["sha256"]:
                self._set_aside(step, "its arrays do not match the checksum saved with them")
                continue
            user_meta = {k: v for k, v in meta.items() if k not in ("format", "step", "tree", "sha256")}
            return Restored(step=step, arrays=restored, meta=user_meta, path=path)
        return None

    def _set_aside(self, step: int, reason: str) -> None:
        path = self.path(step)
        aside, n = f"{path}.corrupt", 1
        while os.path.exists(aside):
            aside, n = f"{path}.corrupt{n}", n + 1
        os.rename(path, aside)
        self._manager.reload()  # forget the step, so a new checkpoint of it can be written
        warnings.warn(f"checkpoint {path} is corrupt or partial: {reason}; skipped it (moved to {aside})",
                      CorruptCheckpointWarning, stacklevel=3)


__all__ = ["Checkpointer", "CorruptCheckpointWarning", "Restored", "describe", "digest", "generator_state",
           "set_generator_state"]
