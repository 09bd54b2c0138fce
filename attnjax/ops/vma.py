"""shard_map's varying-manual-axes (VMA) types, read and cast in one place.

Under ``jax.shard_map`` with its VMA check on, a loop carry must keep one type, and a freshly built
constant (an accumulator) varies over no mesh axis while the loop body's outputs vary wherever the
inputs do. The kernels therefore cast their accumulators to the inputs' varying axes up front.
Outside ``shard_map`` every array varies over nothing and these are no-ops.
"""

from __future__ import annotations

from typing import Any, Iterable

import jax
from jax import lax


def varying_axes_of(x: Any) -> frozenset:
    """Manual mesh axes that ``x`` varies over (empty outside ``shard_map``)."""
    manual = getattr(jax.typeof(x), "manual_axis_type", None)
    return frozenset(getattr(manual, "varying", None) or ())


def cast_varying(x: Any, axes: Iterable) -> Any:
    """``x`` made to vary over ``axes`` too (a no-op for the axes it already varies over)."""
    missing = tuple(a for a in sorted(axes, key=str) if a not in varying_axes_of(x))
    return lax.pcast(x, missing, to="varying") if missing else x
