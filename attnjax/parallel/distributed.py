"""Multi-host start-up and host-local data, on JAX's own distributed runtime (``jax.distributed``).

Every process of a multi-host job runs the same program:

1. :func:`initialize_from_config` first, before any other JAX call: it connects the process to the
   coordinator (process 0), after which ``jax.devices()`` lists the devices of *every* host and a
   mesh over them (:func:`~attnjax.parallel.mesh.mesh_from_config`) spans the job;
2. the same seeded model and optimizer state on every process, made one replicated global array with
   :func:`to_global` (``jax.device_put`` refuses shardings over other hosts' devices);
3. per step, only its own rows of the global batch (:func:`process_batch_rows`), assembled into one
   global array with :func:`global_batch_from_process_data` (``jax.make_array_from_process_local_data``);
4. the same jitted step: XLA's collectives (gloo on CPU, NCCL on GPU, ICI/DCN on TPU) do the rest.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from attnjax.parallel.mesh import DATA_AXIS, batch_sharded, replicated

# The environment variables read when an argument is not given. JAX_COORDINATOR_ADDRESS is also what
# jax.distributed reads itself; the other two are attnjax's (jax has none for them outside clusters
# it auto-detects: TPU pods, SLURM, Open MPI).
ENV_VARS = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
            "process_id": "JAX_PROCESS_ID"}


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Where a process finds the others. None: not set (auto-detected, or a single process).

    Attributes:
        coordinator_address: ``"host:port"`` of process 0, reachable from every process.
        num_processes: processes in the job.
        process_id: this process, in ``[0, num_processes)``.
        local_device_ids: restrict this process to these local devices (e.g. one GPU per process).
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None


def _int_or_none(name: str, value: Any, source: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int, got {value!r} from {source}") from None


def resolve_config(config: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> DistributedConfig:
    """Explicit values (``config``) over the environment variables :data:`ENV_VARS`.

    Args:
        config: mapping (or ``ml_collections.ConfigDict``) with any of the :class:`DistributedConfig` fields.
        env: the environment (default ``os.environ``).

    Raises:
        ValueError: an unknown key, or a value that is not an int where one is needed.
    """
    env = os.environ if env is None else env
    given = {k: v for k, v in dict((config or {}).items()).items() if v is not None}
    fields = [f.name for f in dataclasses.fields(DistributedConfig)]
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ValueError(f"distributed config has unknown keys {unknown}; valid keys are {fields}")
    values: dict[str, Any] = {}
    for name, var in ENV_VARS.items():
        source = "the config" if name in given else f"environment variable {var}"
        value = given.get(name, env.get(var))
        if name == "coordinator_address":
            values[name] = str(value) if value else None
        else:
            values[name] = _int_or_none(name, value, source)
    ids = given.get("local_device_ids")
    values["local_device_ids"] = None if ids is None else tuple(int(i) for i in np.atleast_1d(ids))
    return DistributedConfig(**values)


def initialize_from_config(config: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None,
                           auto_detect: bool = False, initialization_timeout: int = 300) -> bool:
    """Calls ``jax.distributed.initialize`` for a multi-process run; does nothing for a single process.

    Call it first, before any other JAX operation (JAX refuses afterwards). Values come from ``config``,
    else from the environment variables :data:`ENV_VARS`:

    * all three of coordinator, process count and process id known: they are passed explicitly;
    * ``num_processes == 1``, or none known and ``auto_detect=False``: a single process, nothing is called;
    * none or some known and ``auto_detect=True``: ``jax.distributed.initialize`` fills in the rest from
      the cluster (Cloud TPU pod slices, SLURM, Open MPI).

    Args:
        config: see :func:`resolve_config`.
        env: the environment (default ``os.environ``).
        auto_detect: let JAX detect the cluster for values not given.
        initialization_timeout: seconds to wait for every process to connect.

    Returns:
        True if the JAX distributed runtime is (now) initialized, False for a single-process run.

    Raises:
        ValueError: some but not all of coordinator/num_processes/process_id without ``auto_detect``
            (the message names the missing ones and their variables), ``num_processes < 1``,
            ``process_id`` outside ``[0, num_processes)``, or a coordinator address without a port.
    """
    if jax.distributed.is_initialized():
        return True
    cfg = resolve_config(config, env)
    required = {name: getattr(cfg, name) for name in ENV_VARS}
    missing = [name for name, value in required.items() if value is None]
    if cfg.num_processes is not None and cfg.num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {cfg.num_processes}")
    if cfg.num_processes == 1:
        return False
    if not auto_detect:
        if len(missing) == len(required):
            return False
        if missing:
            raise ValueError(f"multi-process start-up needs {sorted(required)}; missing {missing} (set them in the "
                             f"config or as {[ENV_VARS[m] for m in missing]}, or pass auto_detect=True on a cluster "
                             f"JAX detects), got {required}")
    if cfg.process_id is not None and cfg.num_processes is not None and not 0 <= cfg.process_id < cfg.num_processes:
        raise ValueError(f"process_id must be in [0, num_processes={cfg.num_processes}), got {cfg.process_id}")
    if cfg.coordinator_address is not None and ":" not in cfg.coordinator_address:
        raise ValueError(f"coordinator_address must be 'host:port', got {cfg.coordinator_address!r}")
    jax.distributed.initialize(coordinator_address=cfg.coordinator_address, num_processes=cfg.num_processes,
                               process_id=cfg.process_id,
                               local_device_ids=None if cfg.local_device_ids is None else list(cfg.local_device_ids),
                               initialization_timeout=initialization_timeout)
    return True


def to_global(tree: Any, mesh: Mesh) -> Any:
    """Host values that every process holds identically -> global arrays replicated over ``mesh``.

    For the model and optimizer state and the RNG key, built from the same seed on every process.
    Works in a single process too (it is then a ``device_put``).

    Args:
        tree: pytree of arrays (numpy, jax, or typed PRNG keys).
        mesh: the (possibly multi-host) mesh.
    """
    sharding = replicated(mesh)

    def one(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            # Typed keys have no numpy form: move their raw bits, then wrap them again on the devices.
            wrap = functools.partial(jax.random.wrap_key_data, impl=jax.random.key_impl(x))
            return jax.jit(wrap, out_shardings=sharding)(one(jax.random.key_data(x)))
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree.map(one, tree)


def process_batch_rows(mesh: Mesh, global_batch_size: int, data_axis: str = DATA_AXIS) -> slice:
    """The rows of a ``[global_batch_size, ...]`` batch that this process feeds (its devices' shards).

    Args:
        mesh: the mesh; the batch is split over ``data_axis``.
        global_batch_size: ``B`` over all processes.
        data_axis: the batch axis of the mesh.

    Returns:
        ``slice(start, stop)`` into the global batch; every process gets ``B / num_processes`` rows when
        each holds the same number of devices of ``data_axis``.

    Raises:
        ValueError: ``B`` not divisible by the ``data_axis`` size, or this process's rows not contiguous
            (a mesh whose device order interleaves hosts along ``data_axis``).
    """
    size = mesh.shape[data_axis]
    if global_batch_size % size:
        raise ValueError(f"global batch size {global_batch_size} must be divisible by mesh axis {data_axis!r} "
                         f"of size {size}")
    indices = batch_sharded(mesh, data_axis).addressable_devices_indices_map((global_batch_size,))
    rows = sorted({(s[0].start or 0, global_batch_size if s[0].stop is None else s[0].stop)
                   for s in indices.values()})
    if any(a[1] != b[0] for a, b in zip(rows, rows[1:])):
        raise ValueError(f"this process's rows of the batch are not contiguous ({rows}); build the mesh with "
                         f"each host's devices adjacent along {data_axis!r} (jax.devices() order does)")
    return slice(rows[0][0], rows[-1][1])


def global_batch_from_process_data(local_batch: Mapping[str, Any], mesh: Mesh, global_batch_size: int,
                                   data_axis: str = DATA_AXIS) -> dict[str, jax.Array]:
    """One global batch, split over ``data_axis``, from each process's own rows.

    Args:
        local_batch: this process's rows ``[B_local, ...]`` of every array (the ``process_batch_rows``
            slice of the global batch; generate or load only those).
        mesh: the (possibly multi-host) mesh.
        global_batch_size: ``B`` over all processes.
        data_axis: the batch axis of the mesh.

    Returns:
        ``{name: [B, ...] jax.Array}`` sharded ``PartitionSpec(data_axis)``.

    Raises:
        ValueError: an array whose leading size is not this process's row count.
    """
    rows = process_batch_rows(mesh, global_batch_size, data_axis)
    sharding = batch_sharded(mesh, data_axis)
    out = {}
    for name, x in local_batch.items():
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] != rows.stop - rows.start:
            raise ValueError(f"local_batch[{name!r}] must hold this process's {rows.stop - rows.start} rows "
                             f"({rows.start}:{rows.stop} of {global_batch_size}), got shape {x.shape}")
        out[name] = jax.make_array_from_process_local_data(sharding, x, (global_batch_size, *x.shape[1:]))
    return out
