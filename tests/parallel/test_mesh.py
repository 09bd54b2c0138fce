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


def test_mesh_from_config_axes_defaults_and_errors():
    from attnjax.parallel import mesh_from_config

    assert dict(mesh_from_config().shape) == {"data": 8, "seq": 1, "model": 1}
    assert dict(mesh_from_config({"data": -1, "seq": 4}).shape) == {"data": 2, "seq": 4, "model": 1}
    assert dict(mesh_from_config({"data": 2, "seq": 2, "model": 2}).shape) == {"data": 2, "seq": 2, "model": 2}
    assert mesh_from_config({"seq": 8}).axis_types == (AxisType.Auto,) * 3
    with pytest.raises(ValueError, match=r"multiply to 4 devices, but the device count is 8"):
        mesh_from_config({"data": 2, "seq": 2})
    with pytest.raises(ValueError, match="does not divide the device count 8"):
        mesh_from_config({"seq": 3})
    with pytest.raises(ValueError, match=r"unknown axes \['pipeline'\]"):
        mesh_from_config({"pipeline": 2})
    with pytest.raises(ValueError, match="at most one -1"):
        mesh_from_config({"data": -1, "seq": -1})
