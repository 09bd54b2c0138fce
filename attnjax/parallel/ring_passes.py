"""The passes round the ring of one ring-attention call, and how derivatives use them.

Each pass sends the key/value blocks round the ring of ``P`` devices (``lax.ppermute``) and does one ring step
per block held (:mod:`attnjax.parallel.ring_kernels`):

* :func:`ring_forward`: the local output and the per-row log-sum-exp (online softmax, float32 statistics);
* :func:`ring_tangent`: forward mode. From that log-sum-exp, per tile, ``P = exp(S - lse)`` and the logits'
  tangent ``dS = scale * (dQ K^T + Q dK^T)`` (through the softcap and the ``score_mod``, whose params may have a
  tangent too); ``mu = rowsum(P * dS)`` and ``A = (P * dS) V + P dV`` accumulate locally, and ``d out = A - mu *
  out``. The key/value tangents ``dK``/``dV`` travel with their block;
* :func:`ring_backward`: the hand-written reverse pass; ``dK``/``dV`` accumulators travel with their block and
  are back home after ``P`` hops, the ``score_mod`` params' gradient is one ``psum`` of every device's share.

:func:`ring` ties them together as a ``jax.custom_jvp`` whose tangent is a ``linear_call`` of the tangent pass
with the backward as its transpose (:mod:`attnjax.ops.forward_mode`): ``jax.jvp``/``jax.jacfwd`` run the forward
and the tangent pass, ``jax.grad`` runs the forward and the hand-written backward, never the tangent pass, so
reverse mode keeps its ``O((T + S) / P)`` memory per device and saves only the output and the log-sum-exp.
Derivatives of derivatives differentiate these passes (plain JAX) through ``linear_call``'s JVP as completed
in :mod:`attnjax.ops.forward_mode`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero, linear_call

from attnjax.ops.primitives import MASK_VALUE, lse_for_recompute, stat_dtype
from attnjax.ops.vma import cast_varying, varying_axes_of
from attnjax.parallel.layouts import layout_positions
from attnjax.parallel.ring_kernels import (RingConfig, backward_step, forward_step, from_tiles, make_hooks,
                                           tangent_step, to_tiles, varying_axes)


def _ring_setup(cfg: RingConfig, T: int, S: int):
    axis_size = lax.axis_size(cfg.axis_name)
    index = lax.axis_index(cfg.axis_name)
    perm = [(j, (j + 1) % axis_size) for j in range(axis_size)]
    q_pos = layout_positions(cfg.layout, T, axis_size, index).reshape(-1, cfg.block_q)

    def k_positions(step):
        # The block held at `step` started on device index - step (it moves one hop per step).
        source = (index - step) % axis_size
        return layout_positions(cfg.layout, S, axis_size, source).reshape(-1, cfg.block_k)

    return axis_size, perm, q_pos, k_positions


def _send(cfg: RingConfig, perm, tree):
    return jax.tree.map(lambda x: lax.ppermute(x, cfg.axis_name, perm), tree)


def _tiles_or_none(x, size):
    return None if x is None else to_tiles(x, size)


def _key_block(cfg: RingConfig, k, v, k_seg):
    """What travels round the ring: tiled keys, values and key segment ids (None stays None)."""
    return to_tiles(k, cfg.block_k), to_tiles(v, cfg.block_k), _tiles_or_none(k_seg, cfg.block_k)


def _kernel_axes(cfg: RingConfig, q, k, v, q_seg, k_seg, q_lengths, kv_lengths, score_params, mask_consts, *more):
    """The mesh axes the ring's accumulators vary over: the ring axis and every input's."""
    return varying_axes(cfg, q, k, v, q_seg, k_seg, q_lengths, kv_lengths, *jax.tree.leaves(score_params),
                        *mask_consts, *more)


def _varying_params(score_params, axes):
    """``(params, consts)`` with ``params`` cast to vary over ``axes`` once, so the hooks' replay (which casts
    its arguments to those axes) adds no cast per tile, and their gradient is a per-device share."""
    if score_params is None:
        return None
    params, consts = score_params
    return jax.tree.map(lambda x: cast_varying(x, axes), params), consts


@jax.named_call  # names the pass in profiles and jaxprs
def ring_forward(cfg: RingConfig, q, k, v, q_seg, k_seg, q_lengths, kv_lengths, score_params=None, mask_consts=()):
    """Returns the local output ``[B, T/P, N, Hv]`` and the tiled log-sum-exp ``[nq, B, K, G, bq]`` (``stat_dtype``)."""
    B, T, N, _ = q.shape
    S, K, Hv = k.shape[1], v.shape[2], v.shape[3]
    G, nq, bq = N // K, T // cfg.block_q, cfg.block_q
    axis_size, perm, q_pos, k_positions = _ring_setup(cfg, T, S)
    axes = _kernel_axes(cfg, q, k, v, q_seg, k_seg, q_lengths, kv_lengths, score_params, mask_consts)
    hooks = make_hooks(cfg, B, N, K, _varying_params(score_params, axes), mask_consts)
    q_tiles, q_seg_tiles = to_tiles(q, bq), _tiles_or_none(q_seg, bq)
    acc = stat_dtype(q.dtype)
    state = (cast_varying(jnp.full((nq, B, K, G, bq), MASK_VALUE, acc), axes),
             cast_varying(jnp.zeros((nq, B, K, G, bq), acc), axes),
             cast_varying(jnp.zeros((nq, B, K, G, bq, Hv), acc), axes))

    def step(s, kv, state):
        k_tiles, v_tiles, k_seg_tiles = kv
        return forward_step(cfg, q_tiles, q_pos, q_seg_tiles, k_tiles, v_tiles, k_positions(s), k_seg_tiles,
                            q_lengths, kv_lengths, state, hooks)

    def body(s, carry):
        kv, state = carry
        # Send the block on before using it, so the transfer can overlap this step's compute.
        return _send(cfg, perm, kv), step(s, kv, state)

    kv, state = lax.fori_loop(0, axis_size - 1, body, (_key_block(cfg, k, v, k_seg), state))
    m, l, acc = step(axis_size - 1, kv, state)  # the last block needs no onward send

    seen = l > 0
    safe_l = jnp.where(seen, l, 1.0)
    # Rows that saw no key output zeros, and their lse is the log of an empty sum (primitives).
    out = jnp.where(seen[..., None], acc / safe_l[..., None], 0.0)  # [nq, B, K, G, bq, Hv]
    out = out.transpose(1, 0, 4, 2, 3, 5).reshape(B, T, N, Hv).astype(q.dtype)
    return out, jnp.where(seen, m + jnp.log(safe_l), -jnp.inf)


@jax.named_call  # names the pass in profiles and jaxprs
def ring_tangent(cfg: RingConfig, q, k, v, q_seg, k_seg, q_lengths, kv_lengths, score_params, mask_consts, out, lse,
                 dq, dk, dv, d_score_params):
    """Forward mode: the tangent ``[B, T/P, N, Hv]`` of the local output for the tangents ``dq``, ``dk``, ``dv``
    (local shards' shapes) and ``d_score_params`` (``score_params``' structure; float0 at integer leaves), each
    None when zero. ``out`` and the tiled ``lse`` are :func:`ring_forward`'s; ``dK``/``dV`` travel with their
    key/value block, so no device holds more than one remote block of each."""
    B, T, N, _ = q.shape
    S, K, Hv = k.shape[1], v.shape[2], v.shape[3]
    G, nq, bq = N // K, T // cfg.block_q, cfg.block_q
    axis_size, perm, q_pos, k_positions = _ring_setup(cfg, T, S)
    real = lambda x: x.dtype != jax.dtypes.float0
    axes = _kernel_axes(cfg, q, k, v, q_seg, k_seg, q_lengths, kv_lengths, score_params, mask_consts, out, dq, dk, dv,
                        *filter(real, jax.tree.leaves(d_score_params)))
    hooks = make_hooks(cfg, B, N, K, _varying_params(score_params, axes), mask_consts)
    d_params = None
    if d_score_params is not None:  # cast like the params the hooks replay (_varying_params); consts as they are
        d_params = (jax.tree.map(lambda x: cast_varying(x, axes) if real(x) else x, d_score_params[0]),
                    d_score_params[1])
    acc = stat_dtype(q.dtype)
    q_tiles, q_seg_tiles = to_tiles(q, bq), _tiles_or_none(q_seg, bq)
    dq_tiles = _tiles_or_none(dq, bq)
    lse = lse_for_recompute(lse)
    state = (cast_varying(jnp.zeros((nq, B, K, G, bq), acc), axes),
             cast_varying(jnp.zeros((nq, B, K, G, bq, Hv), acc), axes))

    def step(s, block, state):
        k_tiles, v_tiles, k_seg_tiles, dk_tiles, dv_tiles = block
        return tangent_step(cfg, q_tiles, q_pos, q_seg_tiles, dq_tiles, lse, k_tiles, v_tiles, dk_tiles, dv_tiles,
                            k_positions(s), k_seg_tiles, q_lengths, kv_lengths, state, hooks, d_params)

    def body(s, carry):
        block, state = carry
        return _send(cfg, perm, block), step(s, block, state)

    block = (*_key_block(cfg, k, v, k_seg), _tiles_or_none(dk, cfg.block_k), _tiles_or_none(dv, cfg.block_k))
    block, state = lax.fori_loop(0, axis_size - 1, body, (block, state))
    mu, a = step(axis_size - 1, block, state)
    out_tiles = out.reshape(B, nq, bq, K, G, Hv).transpose(1, 0, 3, 4, 2, 5)  # like acc: [nq, B, K, G, bq, Hv]
    d_out = a - mu[..., None] * out_tiles.astype(acc)
    return d_out.transpose(1, 0, 4, 2, 3, 5).reshape(B, T, N, Hv).astype(q.dtype)


@jax.named_call  # names the pass in profiles and jaxprs
def ring_backward(cfg: RingConfig, q, k, v, q_seg, k_seg, q_lengths, kv_lengths, score_params, mask_consts,
                   wanted, out, lse, do):
    """Ring backward: ``dK``/``dV`` accumulators travel with their key/value block and return home.

    Returns ``(dq, dk, dv, d score_params)``: the last has ``score_params``' structure, the gradient at the
    leaves ``wanted`` marks and None elsewhere (or is None without a ``score_mod``)."""
    B, T, N, H = q.shape
    S, K, Hv = k.shape[1], v.shape[2], v.shape[3]
    G, nq, bq, nk, bk = N // K, T // cfg.block_q, cfg.block_q, S // cfg.block_k, cfg.block_k
    axis_size, perm, q_pos, k_positions = _ring_setup(cfg, T, S)
    axes = _kernel_axes(cfg, q, k, v, q_seg, k_seg, q_lengths, kv_lengths, score_params, mask_consts, do)
    acc = stat_dtype(q.dtype)
    hook_params = _varying_params(score_params, axes)
    hooks = make_hooks(cfg, B, N, K, hook_params, mask_consts)
    # The score_mod's differentiated leaves: rebuild() puts tracers of them back into its params.
    leaves, treedef = jax.tree.flatten(hook_params)
    chosen = [i for i, w in enumerate(wanted) if w is not None] if cfg.has_score_mod else []
    diff = tuple(leaves[i] for i in chosen)

    def rebuild(values):
        filled = list(leaves)
        for i, x in zip(chosen, values):
            filled[i] = x
        return jax.tree.unflatten(treedef, filled)

    delta = jnp.sum(do.astype(acc) * out.astype(acc), axis=-1)  # [B, T, N]
    delta = delta.reshape(B, nq, bq, K, G).transpose(1, 0, 3, 4, 2)  # [nq, B, K, G, bq], like lse
    lse = lse_for_recompute(lse)
    q_tiles, do_tiles, q_seg_tiles = to_tiles(q, bq), to_tiles(do, bq), _tiles_or_none(q_seg, bq)

    def step(s, kv, dq, dkv):
        k_tiles, v_tiles, k_seg_tiles = kv
        dq, dk, dv, dparams = backward_step(cfg, q_tiles, q_pos, q_seg_tiles, do_tiles, lse, delta, k_tiles, v_tiles,
                                            k_positions(s), k_seg_tiles, q_lengths, kv_lengths, (dq, *dkv), hooks,
                                            rebuild, diff)
        return dq, (dk, dv, dparams)

    def body(s, carry):
        kv, dkv, dq = carry
        nxt = _send(cfg, perm, kv)
        dq, (dk, dv, dparams) = step(s, kv, dq, dkv)
        # The params' gradient accumulators stay home; only dK/dV travel with their block.
        return nxt, (*_send(cfg, perm, (dk, dv)), dparams), dq

    dq = cast_varying(jnp.zeros((nq, B, bq, N, H), acc), axes)
    dkv = (cast_varying(jnp.zeros((nk, B, bk, K, H), acc), axes),
           cast_varying(jnp.zeros((nk, B, bk, K, Hv), acc), axes),
           tuple(cast_varying(jnp.zeros(x.shape, acc), axes) for x in diff))
    kv, dkv, dq = lax.fori_loop(0, axis_size - 1, body, (_key_block(cfg, k, v, k_seg), dkv, dq))
    dq, (dk, dv, dparams) = step(axis_size - 1, kv, dq, dkv)
    # P hops in all: each dK/dV accumulator is back on the device that owns its block.
    dk, dv = _send(cfg, perm, (dk, dv))
    d_score_params = None
    if chosen:
        # Each device holds its share of the gradient of a value it shares with others (replicated over
        # the ring, and over the batch axis under data parallelism): the sum over those devices is the
        # gradient, with the primal's type (varying over exactly the axes the primal varies over).
        originals = jax.tree.leaves(score_params)
        grads = [None] * len(leaves)
        for i, g in zip(chosen, dparams):
            shared = tuple(a for a in sorted(axes, key=str) if a not in varying_axes_of(originals[i]))
            grads[i] = (lax.psum(g, shared) if shared else g).astype(originals[i].dtype)
        d_score_params = jax.tree.unflatten(treedef, grads)
    return (from_tiles(dq).astype(q.dtype), from_tiles(dk).astype(k.dtype), from_tiles(dv).astype(v.dtype),
            d_score_params)


def _check_differentiated_consts(cfg: RingConfig, consts: tuple, differentiated: list, axes) -> None:
    """Reverse mode's limit on values a ``score_mod`` closes over (forward mode has none).

    Raises:
        ValueError: a differentiated floating one that does not vary over every axis of the kernel: its per-tile
            cotangent would need a collective inside the tile loop.
    """
    for leaf, wanted in zip(consts, differentiated):
        if wanted and not set(axes) <= set(varying_axes_of(leaf)):
            raise ValueError(
                f"ring_attention differentiates score_mod_params, but the score_mod closes over a differentiated "
                f"{jnp.result_type(leaf)}{list(jnp.shape(leaf))} value that is replicated over mesh "
                f"axes {sorted(set(axes) - set(varying_axes_of(leaf)), key=str)}; pass it in "
                f"score_mod_params (score_mod(score, batch, head, q_idx, kv_idx, params)) instead")


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def ring(cfg: RingConfig, q, k, v, q_seg, k_seg, q_lengths, kv_lengths, score_params, mask_consts):
    """The local output ``[B, T/P, N, Hv]`` of ring attention (call inside ``shard_map``), differentiable in
    ``q``, ``k``, ``v`` and ``score_params`` (``(params, closed-over values)`` of the ``score_mod``), in forward
    mode by :func:`ring_tangent` and in reverse mode by :func:`ring_backward` (module docstring)."""
    return ring_forward(cfg, q, k, v, q_seg, k_seg, q_lengths, kv_lengths, score_params, mask_consts)[0]


def _zero_tangent(x):
    """A zero tangent for ``x``: float0 for integer arrays, as ``jax.jvp`` wants it."""
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
        return jnp.zeros(jnp.shape(x), jnp.result_type(x))
    return np.zeros(jnp.shape(x), jax.dtypes.float0)


def _ring_jvp(cfg: RingConfig, primals, tangents):
    symbolic = lambda t: isinstance(t, SymbolicZero)
    is_zero = lambda t: symbolic(t) or t.dtype == jax.dtypes.float0  # float0: an integer leaf's tangent
    d_q, d_k, d_v = (None if is_zero(t) else t for t in tangents[:3])
    # One entry per leaf of score_params = (params, closed-over values). Segment ids, lengths and the
    # mask_mod's values only select keys: their tangents cannot change the output.
    d_leaves = tuple(None if is_zero(t) else t for t in jax.tree.leaves(tangents[7], is_leaf=symbolic))
    differentiated = [d is not None for d in d_leaves]
    out, lse = ring_forward(cfg, *primals)

    def tangent(residuals, linear):
        values, out, lse = residuals
        d_q, d_k, d_v, d_leaves = linear
        d_score_params = None
        if any(differentiated):
            leaves, treedef = jax.tree.flatten(values[7])
            d_score_params = jax.tree.unflatten(treedef, [_zero_tangent(x) if d is None else d
                                                          for x, d in zip(leaves, d_leaves)])
        return ring_tangent(cfg, *values, out, lse, d_q, d_k, d_v, d_score_params)

    def transpose(residuals, d_out):
        values, out, lse = residuals
        if any(differentiated):
            params, consts = values[7]
            _check_differentiated_consts(cfg, consts, differentiated[len(jax.tree.leaves(params)):],
                                         _kernel_axes(cfg, *values))
        wanted = tuple(() if w else None for w in differentiated)
        dq, dk, dv, d_params = ring_backward(cfg, *values, wanted, out, lse, d_out)
        d_params = ((None,) * len(d_leaves) if d_params is None
                    else tuple(jax.tree.leaves(d_params, is_leaf=lambda x: x is None)))
        return (None if d_q is None else dq, None if d_k is None else dk, None if d_v is None else dv, d_params)

    return out, linear_call(tangent, transpose, (primals, out, lse), (d_q, d_k, d_v, d_leaves))


ring.defjvp(_ring_jvp, symbolic_zeros=True)
