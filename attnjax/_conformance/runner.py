"""Compiled programs of the conformance kit: outputs *and* jacobians, for the function under test
and for the reference it is compared with (softmax attention at the expected scale)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from attnjax._conformance.common import call
from attnjax.ops.dot_product import dot_product_attention


class Runner:
    """Jitted programs returning outputs *and* jacobians, one per input structure.

    ``pair`` evaluates a non-causal problem (optionally masked) and a causal problem in a single XLA
    program, so each drawn example compiles once and every property of that example reuses it:
    compiling is what dominates on tiny shapes (eager dispatch would compile every primitive).
    ``fn`` must therefore be traceable by ``jax.jit`` (any JAX function is).
    """

    def __init__(self, fn, supports_causal: bool = True):
        self.fn = fn
        self.supports_causal = supports_causal
        self._pair = jax.jit(functools.partial(self._pair_of, fn))
        # Outputs only, for the larger approximation inputs where jacobians would cost the most.
        self._outputs = jax.jit(functools.partial(self._outputs_of, fn), static_argnums=3)

    @staticmethod
    def _outputs_of(fn, q, k, v, causal: bool):
        return call(fn, q, k, v, None, False), (call(fn, q, k, v, None, True) if causal else None)

    def outputs(self, q, k, v):
        """``[(False, out), (True, causal_out)]`` (the causal one only if supported)."""
        out, causal = self._outputs(q, k, v, self.supports_causal)
        return [(False, out)] + ([(True, causal)] if causal is not None else [])

    @staticmethod
    def _out_and_jac(fn, q, k, v, mask, is_causal):
        def f(a, b, c):
            out = call(fn, a, b, c, mask, is_causal)
            return out.astype(jnp.float32), out

        jac, out = jax.jacrev(f, argnums=(0, 1, 2), has_aux=True)(q, k, v)
        return out, jac

    @staticmethod
    def _pair_of(fn, plain, mask, causal):
        first = Runner._out_and_jac(fn, *plain, mask, False)
        second = None if causal is None else Runner._out_and_jac(fn, *causal, None, True)
        return first, second

    def pair(self, q, k, v, mask=None, causal_inputs=None):
        """``((out, jacs), (causal_out, causal_jacs) or None)``; jacobians ``[B, T, N, H, B', L, M, H']``.

        ``causal_inputs`` is a ``(q, k, v)`` triple run with ``is_causal=True`` (no mask), or None.
        """
        if not self.supports_causal:
            causal_inputs = None
        return self._pair((q, k, v), None if mask is None else jnp.asarray(mask), causal_inputs)

    def both(self, q, k, v, mask=None):
        """Non-causal (optionally masked) and causal results on the same inputs: one program per structure."""
        first, second = self.pair(q, k, v, mask, (q, k, v))
        return [(False, first)] + ([(True, second)] if second is not None else [])


@functools.lru_cache(maxsize=8)
def softmax_reference(scale: float | None) -> Runner:
    """Softmax attention, ``softmax(scale * q k^T) v`` (default scale ``1/sqrt(H)``), as a :class:`Runner`."""
    return Runner(functools.partial(dot_product_attention, scale=scale), True)
