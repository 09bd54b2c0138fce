"""Meshes and shardings, and sequence-parallel ring attention via ``jax.shard_map``."""

from attnjax.parallel.layouts import LAYOUTS, from_layout, layout_positions, to_layout
from attnjax.parallel.mesh import DATA_AXIS, batch_sharded, data_mesh, make_mesh, replicated
from attnjax.parallel.ring import ring_attention, ring_self_attention

__all__ = [
    "DATA_AXIS", "LAYOUTS", "batch_sharded", "data_mesh", "from_layout", "layout_positions", "make_mesh",
    "replicated", "ring_attention", "ring_self_attention", "to_layout",
]
