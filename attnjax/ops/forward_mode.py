"""Forward-mode autodiff for kernels whose derivative is a hand-written backward (a ``jax.custom_vjp``).

JAX cannot push tangents through a ``custom_vjp``: cuDNN's and the Pallas attention kernels are reverse-mode
only as they stand. The mechanism here gives them forward mode without touching their reverse mode: a
``jax.custom_jvp`` whose rule

* computes the primal output with the kernel (:func:`with_tangent_pass`: through ``jax.vjp``, keeping the
  kernel's residuals);
* computes the tangent as ``jax.custom_derivatives.linear_call(tangent_pass, transpose, residuals, tangents)``:
  a function linear in the tangents, which ``jax.jvp``, ``jax.jacfwd`` and ``jax.linearize`` evaluate
  (``tangent_pass``, a real forward-mode computation, e.g. the blockwise kernel's tangent pass), and whose
  transpose JAX takes to be ``transpose``, the kernel's own VJP on the saved residuals.

So ``jax.grad``, ``jax.vjp`` and ``jax.jacrev`` run the kernel's forward once and its own backward once, as the
bare ``custom_vjp`` does: the tangent pass is traced (to type the linear map) but never run or transposed.
Ring attention (:mod:`attnjax.parallel.ring_passes`) uses the same construction with its own passes.

Two rules of JAX 0.10's ``linear_call`` are completed here (registered at import):

* it has no batching rule, so ``jax.vmap`` of one (``jax.jacfwd`` is a vmap of ``jax.jvp``; per-example
  gradients are a vmap of its transpose) would fail. The rule registered (only where JAX has none) batches the
  linear inputs and calls ``linear_call`` again, on the callee and on its transpose each under ``jax.vmap``, so
  the result stays transposable and batchable in turn;
* its JVP asserts that the residuals have no tangent, which a derivative of a derivative breaks as soon as the
  residuals depend on the inputs. The rule registered keeps JAX's when they have none and otherwise adds the
  derivative of the callee with respect to them (``f(r, x)`` linear in ``x``: ``df = f(r, dx) + (d/dr f) dr``).
  With it, second-order derivatives through the ring attention (whose passes are plain JAX) work.

A kernel's own backward (cuDNN's, Pallas's) cannot be differentiated at all, so :func:`with_tangent_pass`
refuses second-order derivatives (``jax.hessian``, ``jax.jvp`` of ``jax.grad``, ``jacfwd``/``jacrev`` of
``jacfwd``) with a ``NotImplementedError`` naming the kernel (:func:`first_order_only`) instead of an
internal JAX failure.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
from jax.custom_derivatives import SymbolicZero, linear_call
from jax.extend.core import jaxpr_as_fun
from jax.interpreters import ad, batching

# JAX exports linear_call but not its primitive, whose rules are completed below.
from jax._src.custom_derivatives import linear_call_p


def _batch_linear_call(axis_data, args, dims, *, callee, transpose_thunk, num_callee_consts, num_res):
    """Batching rule of ``linear_call_p``: the linear inputs are batched (broadcast where they were not), the
    constants and residuals keep their batching, and both the callee and its transpose are vmapped."""
    if all(d is None for d in dims):
        out = linear_call_p.bind(*args, callee=callee, transpose_thunk=transpose_thunk,
                                 num_callee_consts=num_callee_consts, num_res=num_res)
        return out, [None] * len(out)
    size = axis_data.size
    fixed = num_callee_consts + num_res
    front = lambda x, d: x if d is None else batching.bdim_at_front(x, d, size)
    held = [front(x, d) for x, d in zip(args[:fixed], dims[:fixed])]
    held_axes = [None if d is None else 0 for d in dims[:fixed]]
    # Every linear input batched: then the transpose's outputs (their cotangents) are batched like them.
    linear = [batching.bdim_at_front(x, d, size) if d is not None else batching.broadcast(x, size, 0, None)
              for x, d in zip(args[fixed:], dims[fixed:])]
    const_axes, res_axes = held_axes[:num_callee_consts], held_axes[num_callee_consts:]

    def batched(held, linear):
        consts, res = held
        call = lambda c, r, x: jaxpr_as_fun(callee)(*c, *r, *x)
        return jax.vmap(call, in_axes=(const_axes, res_axes, 0))(consts, res, linear)

    def batched_transpose(held, cotangents):
        _, res = held
        transpose, transpose_consts = transpose_thunk()
        call = lambda r, ct: jaxpr_as_fun(transpose)(*transpose_consts, *r, *ct)
        return jax.vmap(call, in_axes=(res_axes, 0))(res, cotangents)

    held = (held[:num_callee_consts], held[num_callee_consts:])
    out = linear_call(batched, batched_transpose, held, linear)
    return out, [0] * len(out)


if linear_call_p not in batching.fancy_primitive_batchers:
    batching.fancy_primitive_batchers[linear_call_p] = _batch_linear_call

_jax_linear_call_jvp = ad.primitive_jvps[linear_call_p]


def _linear_call_jvp(primals, tangents, *, callee, transpose_thunk, num_callee_consts, num_res):
    """JVP of ``linear_call_p`` that also takes tangents of the constants and residuals (JAX's own rule asserts
    they are zero, and is used as it is when they are): for ``f(r, x)`` linear in ``x``,
    ``d f = f(r, dx) + (d/dr f)(r, x) dr``, the first term again a ``linear_call`` and the second JAX's
    derivative of the callee. This is what a derivative of a derivative needs when the residuals depend on
    the differentiated inputs (``jax.hessian`` through the ring attention's backward)."""
    params = dict(callee=callee, transpose_thunk=transpose_thunk, num_callee_consts=num_callee_consts,
                  num_res=num_res)
    fixed = num_callee_consts + num_res
    if all(type(t) is ad.Zero for t in tangents[:fixed]):
        return _jax_linear_call_jvp(primals, tangents, **params)
    held, linear = primals[:fixed], primals[fixed:]
    out = linear_call_p.bind(*primals, **params)
    d_held = [ad.instantiate_zeros(t) for t in tangents[:fixed]]
    d_out = jax.jvp(lambda *held: jaxpr_as_fun(callee)(*held, *linear), tuple(held), tuple(d_held))[1]
    if not all(type(t) is ad.Zero for t in tangents[fixed:]):
        d_linear = [ad.instantiate_zeros(t) for t in tangents[fixed:]]
        d_out = [ad.add_tangents(a, b) for a, b in zip(d_out, linear_call_p.bind(*held, *d_linear, **params))]
    return out, list(d_out)


ad.primitive_jvps[linear_call_p] = _linear_call_jvp


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _first_order_only(what: str, tree: Any) -> Any:
    return tree


@_first_order_only.defjvp
def _refuse_second_order(what, primals, tangents):
    raise NotImplementedError(
        f"{what} takes first-order derivatives, in forward mode (jax.jvp, jax.jacfwd, jax.linearize) and in "
        f"reverse mode (jax.grad, jax.vjp, jax.jacrev), but not derivatives of derivatives (jax.hessian, jax.jvp "
        f"or jax.grad of jax.grad, jax.jacfwd or jax.jacrev of jax.jacfwd): the kernel cannot be differentiated "
        f"beyond its own backward; implementation='blockwise' or 'dense' takes them")


def first_order_only(what: str, tree: Any) -> Any:
    """``tree`` (a pytree of arrays) unchanged; differentiating the result raises ``NotImplementedError``
    naming ``what``. Applied to the primals inside a :func:`with_tangent_pass` rule, it turns any derivative
    taken *of* that rule (a second-order one) into that error instead of an internal JAX failure."""
    return _first_order_only(what, tree)


def _is_zero(t: Any) -> bool:
    return isinstance(t, SymbolicZero)


def with_tangent_pass(kernel: Callable, tangent_pass: Callable, args: tuple, consts: Any, *, what: str) -> Any:
    """``kernel(args, consts)``, differentiable in forward mode by ``tangent_pass`` and in reverse mode by the
    kernel's own VJP (module docstring).

    Args:
        kernel: ``kernel(args, consts) -> out`` (a pytree of arrays), reverse-mode differentiable in ``args``
            (typically a ``jax.custom_vjp``); ``jax.grad`` uses its VJP as it is.
        tangent_pass: ``tangent_pass(args, consts, tangents) -> d out``, the tangent of ``kernel``'s output,
            linear in ``tangents`` (``args``' tuple with None for a zero tangent). It is only evaluated, never
            differentiated or transposed.
        args: a tuple of the differentiable inputs, floating arrays or None (an absent optional input).
        consts: a pytree of arrays never differentiated (masks, lengths, segment ids).
        what: how errors name the kernel, e.g. ``"implementation='cudnn'"``.

    Returns:
        ``kernel(args, consts)``.

    Raises:
        NotImplementedError: a second-order derivative (see :func:`first_order_only`).
        ValueError: a nonzero tangent on a floating array in ``consts``.
    """

    @jax.custom_jvp
    def call(args, consts):
        return kernel(args, consts)

    def rule(primals, tangents):
        args, consts = first_order_only(what, primals)
        d_args, d_consts = tangents
        if not all(_is_zero(t) for t in jax.tree.leaves(d_consts, is_leaf=_is_zero)):
            raise ValueError(f"{what}: the masks, lengths and ids it takes are not differentiable, "
                             f"but one of them has a nonzero tangent")
        wanted = tuple(a is not None and not _is_zero(t) for a, t in zip(args, d_args))

        def run(*chosen):
            chosen = iter(chosen)
            return kernel(tuple(next(chosen) if w else a for a, w in zip(args, wanted)), consts)

        out, pullback = jax.vjp(run, *(a for a, w in zip(args, wanted) if w))
        linear = tuple(t if w else None for t, w in zip(d_args, wanted))

        def tangent(residuals, linear):
            args, consts, _ = residuals
            return tangent_pass(args, consts, linear)

        def transpose(residuals, cotangent):
            grads = iter(residuals[2](cotangent))
            return tuple(next(grads) if w else None for w in wanted)

        return out, linear_call(tangent, transpose, (args, consts, pullback), linear)

    call.defjvp(rule, symbolic_zeros=True)
    return call(args, consts)
