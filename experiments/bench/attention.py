"""Attention kernels side by side: ``python -m experiments.bench.attention``.

attnjax dense and blockwise, ``jax.nn.dot_product_attention`` (XLA) and ``flax.linen.dot_product_attention``;
forward and forward+backward; float32 and bfloat16; ``[B, T, N, H]`` with T = S over ``--config.lengths``,
causal and not. Each row: the median time, useful GFLOP/s (forward ``4*B*N*T*S*H``, forward+backward 3.5x
that, causal rows half), the ratio to ``jax.nn`` and the compiled temporary memory; the device's matmul
GFLOP/s is the roof. Every function is compiled first: one over ``config.budget_gib`` of temporaries is
reported, never run. The implementations of a row are timed round-robin on the same inputs
(:func:`attnjax.sweep.bench.round_robin`), so background load hits them alike. Writes ``summary.md`` and
``results.json`` to ``config.out``.

    python -m experiments.bench.attention --config.lengths=1024,4096 --config.dtypes=float32 --config.passes=fwd+bwd
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from attnjax import sweep
from attnjax.ops import BlockSizes, dot_product_attention
from attnjax.results import environment_info
from attnjax.sweep import bench
from attnjax.sweep.report import markdown_table

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "attention_config.py")
IMPLEMENTATIONS = ("attnjax_dense", "attnjax_blockwise", "jax_nn_xla", "flax_linen")
REFERENCE = "jax_nn_xla"


@dataclasses.dataclass(frozen=True)
class Setting:
    dtype: str
    causal: bool
    passes: str  # "fwd" or "fwd+bwd"
    length: int


def attention_fn(name: str, causal: bool, block_sizes: BlockSizes) -> Callable:
    """``(q, k, v) -> out`` for one implementation, ``[B, T, N, H]`` layout."""
    if name == "attnjax_dense":
        return lambda q, k, v: dot_product_attention(q, k, v, is_causal=causal, implementation="dense")
    if name == "attnjax_blockwise":
        return lambda q, k, v: dot_product_attention(q, k, v, is_causal=causal, implementation="blockwise",
                                                     block_sizes=block_sizes)
    if name == "jax_nn_xla":
        return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")
    if name == "flax_linen":
        def flax_attention(q, k, v):
            mask = None
            if causal:  # built from iota inside the traced function, as a model would
                T, S = q.shape[1], k.shape[1]
                mask = (jnp.arange(S)[None, :] <= jnp.arange(T)[:, None])[None, None]
            return nn.dot_product_attention(q, k, v, mask=mask)
        return flax_attention
    raise ValueError(f"unknown implementation {name!r}; expected one of {IMPLEMENTATIONS}")


def benchmark_fn(attn: Callable, passes: str) -> Callable:
    """Jitted forward (``(q, k, v) -> out``) or forward+backward (``(q, k, v, dout) -> (dq, dk, dv)``)."""
    if passes == "fwd":
        return jax.jit(attn)
    if passes == "fwd+bwd":
        return jax.jit(lambda q, k, v, dout: jax.vjp(attn, q, k, v)[1](dout))
    raise ValueError(f"passes must be 'fwd' or 'fwd+bwd', got {passes!r}")


def flops(setting: Setting, batch: int, heads: int, head_dim: int) -> float:
    fwd = 4.0 * batch * heads * setting.length * setting.length * head_dim
    total = fwd * (3.5 if setting.passes == "fwd+bwd" else 1.0)
    return total * (0.5 if setting.causal else 1.0)


def setting_inputs(setting: Setting, config: ml_collections.ConfigDict) -> tuple[jnp.ndarray, ...]:
    """``q, k, v`` (and ``dout`` for fwd+bwd), ``[B, T, N, H]`` standard normal, shared by every row."""
    shape = (config.batch, setting.length, config.heads, config.head_dim)
    keys = jax.random.split(jax.random.PRNGKey(setting.length), 4 if setting.passes == "fwd+bwd" else 3)
    return tuple(jax.random.normal(k, shape, jnp.float32).astype(setting.dtype) for k in keys)


def prepare_row(name: str, setting: Setting, config: ml_collections.ConfigDict,
                block_sizes: BlockSizes) -> tuple[dict[str, Any], Callable | None]:
    """Compiles one row and checks its memory; returns the row and the compiled function if it may run."""
    B, N, H = config.batch, config.heads, config.head_dim
    fn = benchmark_fn(attention_fn(name, setting.causal, block_sizes), setting.passes)
    spec = jax.ShapeDtypeStruct((B, setting.length, N, H), jnp.dtype(setting.dtype))
    specs = (spec,) * (4 if setting.passes == "fwd+bwd" else 3)
    row: dict[str, Any] = {**dataclasses.asdict(setting), "implementation": name}
    try:
        compiled = fn.lower(*specs).compile()
    except Exception as err:  # report, keep benchmarking the other rows
        row.update(status=f"compile error: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
        return row, None
    row["temp_bytes"] = temp = bench.temp_bytes(compiled)
    if temp is not None and temp > config.budget_gib * 2**30:
        row["status"] = "skipped (memory)"
        return row, None
    if setting.length > config.max_timed_length:
        row["status"] = "memory only"
        return row, None
    return row, compiled


def time_group(setting: Setting, prepared: list[tuple[dict[str, Any], Callable | None]],
               config: ml_collections.ConfigDict) -> None:
    """Times the runnable rows of one setting round-robin on shared inputs; fills in the median time,
    GFLOP/s and the ratio to ``jax.nn``."""
    runnable = [(row, fn) for row, fn in prepared if fn is not None]
    if not runnable:
        return
    inputs = setting_inputs(setting, config)
    all_times = bench.round_robin([(fn, inputs) for _, fn in runnable], config.repeats)
    for (row, _), times in zip(runnable, all_times):
        median = statistics.median(times)
        row.update(status="ok", seconds=median, all_seconds=times,
                   gflops=flops(setting, config.batch, config.heads, config.head_dim) / median / 1e9)
    if reference := next((row for row, _ in runnable if row["implementation"] == REFERENCE), None):
        for row, _ in runnable:
            row["ratio_to_jax_nn"] = reference["seconds"] / row["seconds"]


def markdown(rows: list[dict[str, Any]], roofs: dict[str, float], roof_size: int = 2048) -> str:
    table = markdown_table(
        ["dtype", "causal", "pass", "T=S", "implementation", "time (ms)", "GFLOP/s", "vs jax.nn", "temp MiB", "status"],
        [[r["dtype"], r["causal"], r["passes"], r["length"], r["implementation"],
          f"{r['seconds'] * 1e3:,.1f}" if "seconds" in r else "-", f"{r['gflops']:.1f}" if "gflops" in r else "-",
          f"{r['ratio_to_jax_nn']:.2f}x" if r.get("ratio_to_jax_nn") else "-",
          "-" if r.get("temp_bytes") is None else f"{r['temp_bytes'] / 2**20:,.1f}", r["status"]] for r in rows],
        align="lllrlrrrrl")
    roof = ", ".join(f"{k}: {v:.1f} GFLOP/s" for k, v in roofs.items())
    return table + f"\n\nMatmul roof (n x n x n, n={roof_size}) on {jax.devices()[0].device_kind}: {roof}\n"


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first bad field (before anything is compiled)."""
    sweep.check_names("implementation", sweep.names(config.implementations), IMPLEMENTATIONS)
    sweep.check_names("pass", sweep.names(config.passes), ("fwd", "fwd+bwd"))
    sweep.check_names("dtype", sweep.names(config.dtypes), ("float32", "bfloat16", "float16"))
    for c in sweep.numbers(config.causal, int, "causal"):
        if c not in (0, 1):
            raise ValueError(f"config.causal entries must be 0 or 1, got {config.causal!r}")
    lengths = sweep.numbers(config.lengths, int, "lengths")
    if not lengths or min(lengths) < 1:
        raise ValueError(f"config.lengths must list positive lengths, got {config.lengths!r}")


def run(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Benchmarks every setting of ``config``; writes ``results.json`` and ``summary.md`` to ``config.out``."""
    check_config(config)
    defaults = BlockSizes()
    block_sizes = BlockSizes(config.block_q or defaults.block_q, config.block_k or defaults.block_k)
    dtypes, implementations = sweep.names(config.dtypes), sweep.names(config.implementations)
    roofs = {dtype: bench.matmul_roof(jnp.dtype(dtype), config.roof_size) for dtype in dtypes}
    rows = []
    for cell in sweep.grid(dtype=dtypes, causal=sweep.numbers(config.causal, int, "causal"),
                           passes=sweep.names(config.passes), length=sweep.numbers(config.lengths, int, "lengths")):
        setting = Setting(cell["dtype"], bool(cell["causal"]), cell["passes"], cell["length"])
        prepared = [prepare_row(name, setting, config, block_sizes) for name in implementations]
        time_group(setting, prepared, config)
        for row, _ in prepared:
            print(markdown([row], {}).splitlines()[2], flush=True)
            rows.append(row)
        del prepared  # frees this setting's inputs and executables before the next one
    table = markdown(rows, roofs, config.roof_size)
    results = {"command": " ".join([os.path.basename(sys.executable), "-m", "experiments.bench.attention",
                                    *sys.argv[1:]]),
               "config": config.to_dict(), "block_sizes": dataclasses.asdict(block_sizes),
               "matmul_roof_gflops": roofs, "rows": rows, "environment": environment_info()}
    bench.write_benchmark(config.out, "Attention benchmark", results, table)
    return results


if __name__ == "__main__":
    sweep.config_cli(CONFIG_FILE, check_config, run)
