"""Config of ``python -m experiments.bench.attention``: which kernels, shapes and dtypes to time.

Lists are comma-separated strings, so any of them is one override away:
``--config.lengths=1024,4096 --config.dtypes=float32 --config.passes=fwd+bwd --config.causal=0``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.lengths = "512,1024,2048,4096,8192,16384"  # T = S
    c.dtypes = "float32,bfloat16"
    c.passes = "fwd,fwd+bwd"
    c.causal = "0,1"
    c.implementations = "attnjax_dense,attnjax_blockwise,jax_nn_xla,flax_linen"
    c.batch = 1
    c.heads = 8
    c.head_dim = 64
    c.repeats = 5  # timed rounds after one warm-up; the median is reported
    c.budget_gib = 6.0  # never execute a function whose compiled temporary memory exceeds this
    c.max_timed_length = 1 << 30  # above this T, report compiled memory only
    c.block_q = 0  # blockwise block sizes (0: BlockSizes() defaults)
    c.block_k = 0
    c.roof_size = 2048  # n of the n x n x n matmul that measures the roof
    c.out = "results/bench_attention"  # directory for results.json and summary.md
    return c
