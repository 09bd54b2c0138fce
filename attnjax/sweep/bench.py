"""What benchmarks share: fair wall times of several jitted functions, the device's matmul roof, a compiled
function's temporary memory, and the ``results.json`` and ``summary.md`` a benchmark writes."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from attnjax.results import write_json, write_text


def round_robin(calls: Sequence[tuple[Callable, tuple]], repeats: int, steps: int = 1) -> list[list[float]]:
    """Wall seconds per call of every ``fn(*args)`` in ``calls``: ``repeats`` rounds, in each of which every
    function runs once untimed, then ``steps`` times timed (the mean per call is recorded), so that load from
    other processes hits all of them alike.

    The untimed call (the first also compiles) comes right before each function's timed calls: a call that
    follows a different function pays for that function's aftermath (the XLA paths free gigabytes of
    temporaries, whose unmapping and page faults slow the next call down), so each timed call follows a call
    of the same function, as in a training loop. Only the last timed call is waited for.
    """
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for fn_times, (fn, args) in zip(times, calls):
            jax.block_until_ready(fn(*args))
            start = time.perf_counter()
            for _ in range(steps):
                out = fn(*args)
            jax.block_until_ready(out)
            fn_times.append((time.perf_counter() - start) / steps)
    return times


def matmul_roof(dtype: Any, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of one ``[n, n] @ [n, n]`` matmul on the default device, float32 accumulation (median round)."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    [times] = round_robin([(f, (a, a))], repeats)
    return 2.0 * n ** 3 / statistics.median(times) / 1e9


def temp_bytes(compiled: Any) -> int | None:
    """The temporary memory (bytes) XLA reserves for a compiled function; None where the backend does not say."""
    memory = compiled.memory_analysis()
    return None if memory is None else int(memory.temp_size_in_bytes)


def write_benchmark(out: str, title: str, results: Mapping[str, Any], table: str) -> None:
    """Writes ``results.json`` and ``summary.md`` (``# title``, then ``table``) into ``out``; prints the table."""
    write_json(os.path.join(out, "results.json"), results)
    write_text(os.path.join(out, "summary.md"), f"# {title}\n\n" + table)
    print("\n" + table)
