"""Device meshes built from configuration (axes ``data``, ``seq``, ``model``), and the shardings a step needs.

Meshes here use ``AxisType.Auto`` so jit's ``in_shardings``/``out_shardings`` drive placement (current
``jax.make_mesh`` defaults to Explicit axes, which would change the typing of every array).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
SEQ_AXIS = "seq"  # the sequence (token) dimension, for sequence-parallel ring attention
MODEL_AXIS = "model"  # reserved for tensor parallelism; size 1 unless configured
MESH_AXES = (DATA_AXIS, SEQ_AXIS, MODEL_AXIS)


def make_mesh(axis_sizes: Sequence[int], axis_names: Sequence[str],
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh of ``axis_sizes`` named ``axis_names``; one size may be ``-1`` (all remaining devices).

    Args:
        axis_sizes: e.g. ``(-1,)`` or ``(4, 2)``.
        axis_names: e.g. ``("data",)`` or ``("data", "model")``.
        devices: devices to use (default ``jax.devices()``); exactly ``prod(axis_sizes)`` are taken.

    Raises:
        ValueError: mismatched lengths, more than one ``-1``, non-positive sizes, or sizes whose
            product does not fit the devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes, names = [int(s) for s in axis_sizes], tuple(axis_names)
    if len(sizes) != len(names):
        raise ValueError(f"axis_sizes {tuple(sizes)} and axis_names {names} must have the same length")
    if sizes.count(-1) > 1 or any(s < 1 and s != -1 for s in sizes):
        raise ValueError(f"axis_sizes must be positive with at most one -1, got {tuple(sizes)}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices are not divisible by the fixed axis sizes {tuple(sizes)}")
        sizes[sizes.index(-1)] = len(devices) // known
    total = int(np.prod(sizes))
    if total > len(devices):
        raise ValueError(f"mesh {dict(zip(names, sizes))} needs {total} devices, only {len(devices)} available")
    grid = np.asarray(devices[:total], dtype=object).reshape(sizes)
    return Mesh(grid, names, axis_types=(AxisType.Auto,) * len(names))


def mesh_from_config(axis_sizes: Mapping[str, int] | Any = None,
                     devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The ``('data', 'seq', 'model')`` mesh of an experiment config, using *every* device.

    Args:
        axis_sizes: a dict (or ``ml_collections.ConfigDict``) from axis name in :data:`MESH_AXES` to
            its size, e.g. ``{"data": -1, "seq": 4}``. A missing axis has size 1, except that ``data``
            defaults to ``-1`` (the devices left over). None: everything on ``data``.
        devices: devices to use (default ``jax.devices()``, which spans every host after
            ``jax.distributed.initialize``).

    Returns:
        A :class:`~jax.sharding.Mesh` with axes ``('data', 'seq', 'model')`` (Auto axis types, see
        :func:`make_mesh`), all three present even when of size 1, so a step can always name them.

    Raises:
        ValueError: an unknown axis name, a non-positive size other than ``-1``, more than one
            ``-1``, or sizes whose product is not the device count (the message names both).
    """
    devices = list(jax.devices() if devices is None else devices)
    given = dict((axis_sizes or {}).items())
    unknown = sorted(set(given) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"axis_sizes has unknown axes {unknown}; the mesh axes are {MESH_AXES}, got {given}")
    sizes = {DATA_AXIS: -1, SEQ_AXIS: 1, MODEL_AXIS: 1}
    sizes.update({name: int(size) for name, size in given.items()})
    values = list(sizes.values())
    if values.count(-1) > 1 or any(s < 1 and s != -1 for s in values):
        raise ValueError(f"axis_sizes must be positive with at most one -1 (the rest of the devices), got {sizes}")
    fixed = int(np.prod([s for s in values if s != -1]))
    if -1 in values:
        if len(devices) % fixed:
            raise ValueError(f"axis_sizes {sizes}: the fixed sizes multiply to {fixed}, which does not divide "
                             f"the device count {len(devices)}")
        sizes[next(name for name, s in sizes.items() if s == -1)] = len(devices) // fixed
    elif fixed != len(devices):
        # A mesh smaller than the device count would leave devices idle without saying so.
        raise ValueError(f"axis_sizes {sizes} multiply to {fixed} devices, but the device count is {len(devices)}; "
                         f"the product must equal it (use -1 for one axis to take the rest)")
    return make_mesh(tuple(sizes.values()), tuple(sizes), devices)


def data_mesh(num_devices: int = -1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """1-D mesh with the single axis ``'data'`` (``-1``: every device)."""
    return make_mesh((num_devices,), (DATA_AXIS,), devices)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, RNG keys)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, axis: str = DATA_AXIS) -> NamedSharding:
    """Leading (batch) dimension split over ``axis``; the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(axis))
