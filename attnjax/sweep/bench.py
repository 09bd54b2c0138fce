"""What benchmarks share: fair wall times of several jitted functions, the device's matmul roof, compiling
within a memory budget, a plain optax train step to time any Flax module with, and the ``results.json`` and
``summary.md`` a benchmark writes."""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from attnjax.results import environment_info, write_json, write_text


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


def medians(calls: Sequence[tuple[Callable, tuple]], repeats: int, steps: int = 1) -> list[float]:
    """The median seconds per call of each of ``calls`` over :func:`round_robin`'s rounds."""
    return [statistics.median(times) for times in round_robin(calls, repeats, steps)]


def time_rows(rows: Sequence[tuple[dict[str, Any], Callable]], args: tuple, repeats: int, flops: float) -> None:
    """Times ``fn(*args)`` of each ``(row, fn)`` round-robin (:func:`round_robin`) and fills in the row's
    ``status`` (``ok``), median ``seconds``, ``all_seconds`` and useful ``gflops`` (``flops`` per call)."""
    for (row, _), times in zip(rows, round_robin([(fn, args) for _, fn in rows], repeats)):
        median = statistics.median(times)
        row.update(status="ok", seconds=median, all_seconds=times, gflops=flops / median / 1e9)


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


def compile_within(fn: Callable, args: Sequence[Any], budget_gib: float | None = None
                   ) -> tuple[Any | None, dict[str, Any]]:
    """``fn`` (jitted) compiled for ``args`` (arrays or ``jax.ShapeDtypeStruct``), and a row's facts:
    ``temp_bytes`` (:func:`temp_bytes`), and a ``status`` where it may not run: ``compile error: ...`` (then
    None, and the other rows go on) or ``skipped (memory)`` when its temporaries exceed ``budget_gib``."""
    try:
        compiled = fn.lower(*args).compile()
    except Exception as err:  # report, keep benchmarking the other rows
        return None, {"status": f"compile error: {type(err).__name__}: {str(err).splitlines()[0][:120]}"}
    row = {"temp_bytes": temp_bytes(compiled)}
    if budget_gib is not None and row["temp_bytes"] is not None and row["temp_bytes"] > budget_gib * 2**30:
        return None, {**row, "status": "skipped (memory)"}
    return compiled, row


def train_step(apply: Callable, tx: optax.GradientTransformation) -> Callable:
    """A plain optax step for any Flax ``apply`` (cross-entropy at every position): ``(params, opt_state, inputs,
    targets) -> (params, opt_state, loss)``, jitted, state donated; the same step for every network timed."""
    def step(params, opt_state, inputs, targets):
        def loss_fn(p):
            logits = apply({"params": p}, inputs).astype(jnp.float32)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def carried(step: Callable, state: list, batch: Sequence[Any]) -> Callable[[], Any]:
    """A call of ``step(*state, *batch) -> (*state, out)`` that carries ``state`` (a list, updated in place) from
    call to call, as a training loop does; returns ``out``. Time it with :func:`round_robin`."""
    def call() -> Any:
        *state[:], out = step(*state, *batch)
        return out
    return call


def write_benchmark(out: str, title: str, results: Mapping[str, Any], table: str) -> None:
    """Writes ``results.json`` (``results`` with the command line and the environment added) and ``summary.md``
    (``# title``, then ``table``) into ``out``; prints the table."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)  # python -m NAME: say so, not the file
    program = ["-m", spec.name] if spec is not None else sys.argv[:1]
    results = {"command": " ".join([os.path.basename(sys.executable), *program, *sys.argv[1:]]), **results,
               "environment": environment_info()}
    write_json(os.path.join(out, "results.json"), results)
    write_text(os.path.join(out, "summary.md"), f"# {title}\n\n" + table)
    print("\n" + table)
