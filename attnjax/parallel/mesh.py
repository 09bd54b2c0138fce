"""Device meshes built from configuration, and the shardings a data-parallel step needs.

Meshes here use ``AxisType.Auto`` so jit's ``in_shardings``/``out_shardings`` drive placement (current
``jax.make_mesh`` defaults to Explicit axes, which would change the typing of every array).
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


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


def data_mesh(num_devices: int = -1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """1-D mesh with the single axis ``'data'`` (``-1``: every device)."""
    return make_mesh((num_devices,), (DATA_AXIS,), devices)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, RNG keys)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, axis: str = DATA_AXIS) -> NamedSharding:
    """Leading (batch) dimension split over ``axis``; the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(axis))
