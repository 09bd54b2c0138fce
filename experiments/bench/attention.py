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
import functools
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
MECHANISMS = ("fire", "ssmax", "forgetting", "stick_breaking", "cope")
DOCUMENTS = 8  # the document mask: T split into this many equal segments


@dataclasses.dataclass(frozen=True)
class Setting:
    dtype: str
    causal: bool
    passes: str  # "fwd" or "fwd+bwd"
    length: int


def _positions(q):  # query and key positions, [T] each
    return jnp.arange(q.shape[1]), jnp.arange(q.shape[1])


def _documents(q):  # segment ids [B, T]: T split into DOCUMENTS equal documents
    return jnp.broadcast_to(jnp.arange(q.shape[1]) * DOCUMENTS // q.shape[1], q.shape[:2])


def _t5_table(q):
    return ops.t5_table_init(jax.random.key(0), 32, q.shape[2])


# The flex-attention issue's rows: a bias or mask in the kernel (a score_mod/mask_mod) against the same one
# materialized, built inside the timed function as a model builds it. (q, causal) -> attnjax's keywords.
HOOKS = {
    "alibi_score_mod": lambda q, causal: ops.alibi_score_mod(ops.alibi_slopes(q.shape[2]), is_causal=causal).keywords(),
    "alibi_bias": lambda q, causal: {"bias": ops.alibi_bias(*_positions(q), ops.alibi_slopes(q.shape[2]),
                                                            is_causal=causal)},
    "t5_score_mod": lambda q, causal: ops.t5_score_mod(_t5_table(q), is_causal=causal).keywords(),
    "t5_bias": lambda q, causal: {"bias": ops.t5_relative_bias(_t5_table(q), *_positions(q), is_causal=causal)},
    "documents_mask_mod": lambda q, causal: {"mask_mod": ops.segment_mask_mod(_documents(q))},
    "documents_mask": lambda q, causal: {"mask": ops.segment_mask(_documents(q))},
    "causal_mask_mod": lambda q, causal: {"is_causal": False, "mask_mod": ops.causal_mask_mod()},
}
HOOKED = (*(("blockwise", hook) for hook in HOOKS), ("dense", "alibi_bias"), ("dense", "t5_bias"))


def _attnjax(path: str, hook: str | None, q, k, v, causal: bool, block_sizes: BlockSizes):
    """attnjax on ``path`` (dense ignores the block sizes) with the keywords of ``HOOKS[hook]`` (None: none)."""
    hooks = HOOKS[hook](q, causal) if hook else {}
    return dot_product_attention(q, k, v, implementation=path, block_sizes=block_sizes,
                                 **{"is_causal": causal, **hooks})


def _flax_linen(q, k, v, causal: bool, block_sizes: BlockSizes):
    mask = None
    if causal:  # built from iota inside the traced function, as a model would
        mask = (jnp.arange(k.shape[1])[None, :] <= jnp.arange(q.shape[1])[:, None])[None, None]
    return nn.dot_product_attention(q, k, v, mask=mask)


def _mechanism(name: str, q, k, v, causal: bool, block_sizes: BlockSizes):
    """A mechanism on its blockwise path with freshly initialized parameters."""
    B, T, N, H = q.shape
    kw = init_attention_params(name, jax.random.key(0), head_dim=H, num_heads=N)
    if name == "forgetting":  # gates as a layer would give them: log sigmoid of a random projection
        kw["log_forget"] = jax.nn.log_sigmoid(3.0 + jax.random.normal(jax.random.key(1), (B, T, N)))
    return get_attention(name)(q, k, v, is_causal=causal or name == "stick_breaking", implementation="blockwise",
                               block_sizes=block_sizes, **kw)


# Every row: (q, k, v, causal, block_sizes) -> out, [B, T, N, H] layout.
ROWS: dict[str, Callable] = {
    "attnjax_dense": functools.partial(_attnjax, "dense", None),
    "attnjax_blockwise": functools.partial(_attnjax, "blockwise", None),
    REFERENCE: lambda q, k, v, causal, _: jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla"),
    "flax_linen": _flax_linen,
    **{f"{path}_{hook}": functools.partial(_attnjax, path, hook) for path, hook in HOOKED},
    **{name: functools.partial(_mechanism, name) for name in MECHANISMS},
}
IMPLEMENTATIONS = tuple(ROWS)


def prepare_row(name: str, setting: Setting, config: ml_collections.ConfigDict,
                block_sizes: BlockSizes) -> tuple[dict[str, Any], Callable | None]:
    """Compiles one row, jitted forward (``(q, k, v) -> out``) or forward+backward (``(q, k, v, dout) -> (dq, dk,
    dv)``), and checks its memory; returns the row and the compiled function if it may run."""
    attn = lambda q, k, v: ROWS[name](q, k, v, setting.causal, block_sizes)  # noqa: E731
    fn = jax.jit(attn if setting.passes == "fwd" else lambda q, k, v, dout: jax.vjp(attn, q, k, v)[1](dout))
    spec = jax.ShapeDtypeStruct((config.batch, setting.length, config.heads, config.head_dim), jnp.dtype(setting.dtype))
    compiled, facts = bench.compile_within(fn, (spec,) * (4 if setting.passes == "fwd+bwd" else 3), config.budget_gib)
    row: dict[str, Any] = {**dataclasses.asdict(setting), "implementation": name, **facts}
    if compiled is not None and setting.length > config.max_timed_length:
        row["status"] = "memory only"
        return row, None
    return row, compiled


def time_group(setting: Setting, prepared: list[tuple[dict[str, Any], Callable | None]],
               config: ml_collections.ConfigDict) -> None:
    """Times the runnable rows of one setting round-robin on the same standard normal ``q, k, v`` (and ``dout``);
    fills in the median time, the useful GFLOP/s and the ratio to ``jax.nn``."""
    runnable = [(row, fn) for row, fn in prepared if fn is not None]
    if not runnable:
        return
    shape = (config.batch, setting.length, config.heads, config.head_dim)
    keys = jax.random.split(jax.random.PRNGKey(setting.length), 4 if setting.passes == "fwd+bwd" else 3)
    inputs = tuple(jax.random.normal(k, shape, jnp.float32).astype(setting.dtype) for k in keys)
    flops = 4.0 * config.batch * config.heads * setting.length * setting.length * config.head_dim
    flops *= (3.5 if setting.passes == "fwd+bwd" else 1.0) * (0.5 if setting.causal else 1.0)
    bench.time_rows(runnable, inputs, config.repeats, flops)
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
    sweep.numbers(config.causal, int, "causal", low=0, high=1)
    sweep.numbers(config.lengths, int, "lengths", low=1)


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
