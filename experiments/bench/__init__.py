"""Benchmarks: ``python -m experiments.bench.attention`` (attention kernels), ``python -m experiments.bench.models``."""
