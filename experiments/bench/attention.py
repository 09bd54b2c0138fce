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
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from attnjax import sweep
from attnjax import ops
from attnjax.ops import BlockSizes, dot_product_attention
from attnjax.ops.registry import get_attention, init_attention_params
from attnjax.sweep import bench
from attnjax.sweep.report import markdown_table

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "attention_config.py")
REFERENCE = "jax_nn_xla"
# Rows of the flex-attention issue: a bias or mask in the kernel (a ``score_mod``/``mask_mod``) against the same
# bias or mask materialized (built inside the timed function, as a model builds it), and the mechanisms.
BIASES = ("alibi", "t5")
MECHANISMS = ("fire", "ssmax", "forgetting", "stick_breaking", "cope")
DOCUMENTS = 8  # the document mask: T split into this many equal segments
FLEX_ROWS = (*(f"{path}_{bias}_{form}" for bias in BIASES for path, form in
               (("blockwise", "score_mod"), ("blockwise", "bias"), ("dense", "bias"))),
             "blockwise_documents_mask_mod", "blockwise_documents_mask", "blockwise_causal_mask_mod", *MECHANISMS)
IMPLEMENTATIONS = ("attnjax_dense", "attnjax_blockwise", REFERENCE, "flax_linen", *FLEX_ROWS)


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
    return flex_fn(name, causal, block_sizes)


def flex_fn(name: str, causal: bool, block_sizes: BlockSizes) -> Callable:
    """``(q, k, v) -> out`` for a row of :data:`FLEX_ROWS` (blockwise or dense attnjax with a hook, its
    materialized form, or a mechanism on its blockwise path with freshly initialized parameters)."""
    def run(q, k, v, path="blockwise", **kw):
        return dot_product_attention(q, k, v, is_causal=kw.pop("is_causal", causal), implementation=path,
                                     block_sizes=block_sizes, **kw)

    if name in MECHANISMS:
        def mechanism(q, k, v):
            B, T, N, H = q.shape
            kw = init_attention_params(name, jax.random.key(0), head_dim=H, num_heads=N)
            if name == "forgetting":  # gates as a layer would give them: log sigmoid of a random projection
                kw["log_forget"] = jax.nn.log_sigmoid(3.0 + jax.random.normal(jax.random.key(1), (B, T, N)))
            return get_attention(name)(q, k, v, is_causal=causal or name == "stick_breaking",
                                       implementation="blockwise", block_sizes=block_sizes, **kw)
        return mechanism
    if name.startswith("blockwise_documents") or name == "blockwise_causal_mask_mod":
        def masked(q, k, v):
            ids = jnp.broadcast_to(jnp.arange(q.shape[1]) * DOCUMENTS // q.shape[1], q.shape[:2])
            if name == "blockwise_causal_mask_mod":
                return run(q, k, v, is_causal=False, mask_mod=ops.causal_mask_mod())
            if name.endswith("mask_mod"):
                return run(q, k, v, mask_mod=ops.segment_mask_mod(ids))
            return run(q, k, v, mask=ops.segment_mask(ids))
        return masked
    path, bias_name, form = name.split("_", 2)
    if form not in ("score_mod", "bias") or bias_name not in BIASES:
        raise ValueError(f"unknown implementation {name!r}; expected one of {IMPLEMENTATIONS}")

    def biased(q, k, v):
        N, T = q.shape[2], q.shape[1]
        if bias_name == "alibi":
            slopes = ops.alibi_slopes(N)
            if form == "score_mod":
                return run(q, k, v, path, **ops.alibi_score_mod(slopes, is_causal=causal).keywords())
            positions = jnp.arange(T)
            return run(q, k, v, path, bias=ops.alibi_bias(positions, positions, slopes, is_causal=causal))
        table = ops.t5_table_init(jax.random.key(0), 32, N)
        if form == "score_mod":
            return run(q, k, v, path, **ops.t5_score_mod(table, is_causal=causal).keywords())
        positions = jnp.arange(T)
        return run(q, k, v, path, bias=ops.t5_relative_bias(table, positions, positions, is_causal=causal))
    return biased


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
    compiled, facts = bench.compile_within(fn, specs, config.budget_gib)
    row: dict[str, Any] = {**dataclasses.asdict(setting), "implementation": name, **facts}
    if compiled is not None and setting.length > config.max_timed_length:
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
    bench.time_rows(runnable, setting_inputs(setting, config), config.repeats,
                    flops(setting, config.batch, config.heads, config.head_dim))
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


def flex_table(causal: dict[str, Any], bidirectional: dict[str, Any]) -> str:
    """The README's flex-attention table from two committed runs of this benchmark (``results.json`` of the
    causal rows at 1024, 4096 and 16384, and of the non-causal rows at 4096): fwd+bwd times, the ratio to plain
    blockwise attention and the compiled temporary memory."""
    def cell(rows, name, length, key):
        row = next((r for r in rows if r["implementation"] == name and r["length"] == length), {})
        return row.get(key)

    lines = []
    runs = ((causal["rows"], "causal", (1024, 4096)), (bidirectional["rows"], "non-causal", (4096,)))
    for rows, label, lengths in runs:
        base = cell(rows, "attnjax_blockwise", 4096, "seconds")
        for name in dict.fromkeys(r["implementation"] for r in rows):
            times = [cell(rows, name, n, "seconds") for n in (1024, 4096)]
            mib = [cell(rows, name, n, "temp_bytes") for n in (4096, 16384)]
            lines.append([name, label, *("-" if t is None or n not in lengths else f"{t * 1e3:,.0f}"
                                         for t, n in zip(times, (1024, 4096))),
                          f"{times[1] / base:.2f}x" if times[1] else "-",
                          *("-" if b is None else f"{b / 2**20:,.0f}" for b in mib)])
    return markdown_table(["implementation", "mask", "ms, T=1024", "ms, T=4096", "time / blockwise, 4096",
                           "temp MiB, 4096", "temp MiB, 16384"], lines, align="llrrrrr")


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
    results = {"config": config.to_dict(), "block_sizes": dataclasses.asdict(block_sizes),
               "matmul_roof_gflops": roofs, "rows": rows}
    bench.write_benchmark(config.out, "Attention benchmark", results, table)
    return results


if __name__ == "__main__":
    sweep.config_cli(CONFIG_FILE, check_config, run)
