"""Mesh helpers: sizes from config, -1 fill, clear errors."""

import jax
import pytest
from jax.sharding import AxisType, PartitionSpec

from attnjax.parallel import batch_sharded, data_mesh, make_mesh, replicated


def test_make_mesh_shapes_and_auto_axes():
    assert data_mesh().shape == {"data": jax.device_count()}
    mesh = make_mesh((-1, 2), ("data", "model"))
    assert dict(mesh.shape) == {"data": jax.device_count() // 2, "model": 2}
    assert mesh.axis_types == (AxisType.Auto, AxisType.Auto)
    assert dict(data_mesh(1).shape) == {"data": 1}
    assert batch_sharded(mesh).spec == PartitionSpec("data") and replicated(mesh).spec == PartitionSpec()


def test_make_mesh_errors():
    with pytest.raises(ValueError, match="same length"):
        make_mesh((2,), ("a", "b"))
    with pytest.raises(ValueError, match="at most one -1"):
        make_mesh((-1, -1), ("a", "b"))
    with pytest.raises(ValueError, match="needs 16 devices"):
        make_mesh((16,), ("data",))
    with pytest.raises(ValueError, match="not divisible"):
        make_mesh((-1, 3), ("a", "b"))
