"""Meshes and shardings, sequence-parallel ring attention via ``jax.shard_map``, multi-host start-up."""

from attnjax.parallel.distributed import (global_batch_from_process_data, initialize_from_config, process_batch_rows,
                                          to_global)
from attnjax.parallel.layouts import LAYOUTS, from_layout, to_layout
from attnjax.parallel.mesh import (DATA_AXIS, SEQ_AXIS, batch_sharded, data_mesh, make_mesh, mesh_from_config,
                                   replicated)
from attnjax.parallel.ring import ring_attention, ring_self_attention
from attnjax.parallel.sequence import RingAttentionFn, local_positions

__all__ = [
    "DATA_AXIS", "LAYOUTS", "RingAttentionFn", "SEQ_AXIS", "batch_sharded", "data_mesh", "from_layout",
    "global_batch_from_process_data", "initialize_from_config", "local_positions", "make_mesh", "mesh_from_config",
    "process_batch_rows", "replicated", "ring_attention", "ring_self_attention", "to_global", "to_layout",
]
