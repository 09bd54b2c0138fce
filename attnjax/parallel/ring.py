"""Ring attention: sequence-parallel exact attention with ``jax.shard_map`` and ``lax.ppermute``.

The query, key and value sequences are split over the devices of one mesh axis (``axis_name``, of
size ``P``). Every device keeps its own queries and, for ``P`` steps, computes attention of those
queries against the key/value block it currently holds while passing that block on to the next
device of the ring (``lax.ppermute``). The per-query softmax is accumulated online (running max,
running sum, running weighted values, all float32), so after ``P`` steps each device holds the exact
attention output of its queries, and no device ever holds more than one remote key/value block:
memory per device is ``O(T·S / P²)`` for the block logits plus ``O((T + S) / P)`` for the shards.

Masks (causal, sliding window, padding) are built from *global* token positions, which depend on the
device index (``lax.axis_index``) and on the sequence layout (see :mod:`attnjax.parallel.layouts`), so the result is
exactly that of the dense reference ``attnjax.dot_product_attention`` on the unsharded sequence.

Gradients use a hand-written ring backward (``jax.custom_vjp``): the forward keeps only the local
output and the per-row log-sum-exp; the backward sends key/value blocks round the ring once more,
recomputes each block's probabilities, adds into the local ``dQ`` and into ``dK``/``dV`` accumulators
that travel *with* their key/value block and arrive back at the block's owner after ``P`` hops.
Nothing of size ``T x S`` is stored between forward and backward.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Hashable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec

from attnjax.ops import checks
from attnjax.ops.dot_product import MASK_VALUE, scaled_logits
from attnjax.ops.masks import combine_masks, position_mask
from attnjax.parallel.layouts import (check_layout, check_layout_length, chunks_per_shard, from_layout, layout_positions,
                                      to_layout)


@dataclasses.dataclass(frozen=True)
class _RingConfig:
    """Static (hashable) options of one ring attention call."""

    axis_name: Hashable
    layout: str
    is_causal: bool
    window: checks.Window | None
    scale: float
    logit_softcap: float | None


# --------------------------------------------------------------------------------------------------
# VMA typing: loop carries and lax.cond branches must have the same "varying over mesh axes" type on
# every path. Accumulators start as constants (varying over nothing), so they are cast to the union of
# the inputs' varying axes, plus the ring axis (positions depend on lax.axis_index).


def _varying_axes(x: Any) -> frozenset:
    manual = getattr(jax.typeof(x), "manual_axis_type", None)
    return frozenset(getattr(manual, "varying", ()))


def _axis_tuple(axis_name: Hashable) -> tuple:
    return tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)


def _target_axes(cfg: _RingConfig, *arrays: Any) -> frozenset:
    axes = frozenset(_axis_tuple(cfg.axis_name))
    for x in arrays:
        if x is not None:
            axes |= _varying_axes(x)
    return axes


def _vary(x: jnp.ndarray, axes: frozenset) -> jnp.ndarray:
    missing = tuple(a for a in sorted(axes, key=str) if a not in _varying_axes(x))
    return lax.pcast(x, missing, to="varying") if missing else x


# --------------------------------------------------------------------------------------------------
# One (query chunk, key chunk) block. Internal layouts: grouped queries ``[B, T, K, G, H]``, logits
# ``[B, K, G, T, S]``, row statistics ``[B, K, G, T]``, accumulators ``[B, K, G, T, H]``.


def _block_mask(cfg: _RingConfig, q_pos, k_pos, q_lengths, kv_lengths) -> jnp.ndarray | None:
    """Boolean mask broadcastable to ``[B, K, G, Tc, Sc]`` from global positions, or None."""
    structural = position_mask(q_pos, k_pos, is_causal=cfg.is_causal, window=cfg.window)
    q_ok = None if q_lengths is None else (q_pos[None, :] < q_lengths[:, None])[:, None, None, :, None]
    k_ok = None if kv_lengths is None else (k_pos[None, :] < kv_lengths[:, None])[:, None, None, None, :]
    return combine_masks(None if structural is None else structural[None, None, None], q_ok, k_ok)


def _block_logits(cfg: _RingConfig, q, k):
    B, T, N, _ = q.shape
    K, S = k.shape[2], k.shape[1]
    logits = scaled_logits(q, k, scale=cfg.scale, logit_softcap=cfg.logit_softcap)
    return logits.reshape(B, K, N // K, T, S)


def _forward_block(cfg: _RingConfig, q, k, v, mask, state):
    """Online-softmax update of ``state = (m, l, acc)`` with one key/value block."""
    m, l, acc = state
    logits = _block_logits(cfg, q, k)
    if mask is not None:
        logits = jnp.where(mask, logits, MASK_VALUE)
    m_new = jnp.maximum(m, logits.max(axis=-1))
    p = jnp.exp(logits - m_new[..., None])
    if mask is not None:
        # A row with no visible key in this block has m_new == MASK_VALUE == its logits: exp(0) = 1
        # would count masked keys, so zero them explicitly.
        p = jnp.where(mask, p, 0.0)
    alpha = jnp.exp(m - m_new)
    pv = jnp.einsum("BKGTS,BSKH->BKGTH", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return m_new, alpha * l + p.sum(axis=-1), alpha[..., None] * acc + pv


def _backward_block(cfg: _RingConfig, q, k, v, do, lse, delta, mask, grads):
    """Adds one block's contribution to ``grads = (dq [B,T,N,H], dk [B,S,K,H], dv [B,S,K,Hv])`` (float32)."""
    dq, dk, dv = grads
    B, T, N, H = q.shape
    K = k.shape[2]
    q_g = q.reshape(B, T, K, N // K, H)
    do_g = do.reshape(B, T, K, N // K, v.shape[3])
    logits = _block_logits(cfg, q, k)
    # lse is finite for every row (0 for rows with no visible key, whose p is zeroed by the mask).
    # Masked logits become MASK_VALUE, whose exp underflows to exactly 0 against any finite lse.
    p = jnp.exp((logits if mask is None else jnp.where(mask, logits, MASK_VALUE)) - lse[..., None])
    dv = dv + jnp.einsum("BKGTS,BTKGH->BSKH", p.astype(do.dtype), do_g, preferred_element_type=jnp.float32)
    dp = jnp.einsum("BTKGH,BSKH->BKGTS", do_g, v, preferred_element_type=jnp.float32)
    ds = p * (dp - delta[..., None])
    if cfg.logit_softcap is not None:
        # d/dx [c tanh(x / c)] = 1 - tanh² = 1 - (capped / c)²; masked entries already have ds = 0.
        ds = ds * (1.0 - jnp.square(logits / cfg.logit_softcap))
    ds = ds * jnp.float32(cfg.scale)
    dq = dq + jnp.einsum("BKGTS,BSKH->BTKGH", ds.astype(k.dtype), k,
                         preferred_element_type=jnp.float32).reshape(B, T, N, H)
    dk = dk + jnp.einsum("BKGTS,BTKGH->BSKH", ds.astype(q.dtype), q_g, preferred_element_type=jnp.float32)
    return dq, dk, dv


def _skip_if_masked(mask, compute: Callable, state):
    """Runs ``compute(state)`` unless ``mask`` hides the whole block (then returns ``state`` unchanged)."""
    if mask is None:
        return compute(state)
    return lax.cond(jnp.any(mask), compute, lambda s: s, state)


# --------------------------------------------------------------------------------------------------
# The ring loops.


def _split(x: jnp.ndarray, n: int) -> list:
    """Static split of the sequence axis (1) into ``n`` equal chunks."""
    size = x.shape[1] // n
    return [x[:, c * size:(c + 1) * size] for c in range(n)]


def _ring_setup(cfg: _RingConfig, q, k):
    axis_size = lax.axis_size(cfg.axis_name)
    index = lax.axis_index(cfg.axis_name)
    perm = [(j, (j + 1) % axis_size) for j in range(axis_size)]
    n = chunks_per_shard(cfg.layout)
    q_pos = _split(layout_positions(cfg.layout, q.shape[1], axis_size, index)[None], n)
    q_pos = [p[0] for p in q_pos]

    def k_positions(step):
        # The block held at `step` started on device index - step (it moves one hop per step).
        source = (index - step) % axis_size
        return [p[0] for p in _split(layout_positions(cfg.layout, k.shape[1], axis_size, source)[None], n)]

    return axis_size, perm, n, q_pos, k_positions


def _ring_forward(cfg: _RingConfig, q, k, v, q_lengths, kv_lengths):
    """Returns the local output ``[B, T/P, N, Hv]`` and log-sum-exp ``[B, K, G, T/P]`` (float32)."""
    axis_size, perm, n, q_pos, k_positions = _ring_setup(cfg, q, k)
    B, T, N, _ = q.shape
    K, Hv = v.shape[2], v.shape[3]
    axes = _target_axes(cfg, q, k, v, q_lengths, kv_lengths)
    q_chunks = _split(q, n)
    Tc = T // n

    def init():
        m = _vary(jnp.full((B, K, N // K, Tc), MASK_VALUE, jnp.float32), axes)
        l = _vary(jnp.zeros((B, K, N // K, Tc), jnp.float32), axes)
        acc = _vary(jnp.zeros((B, K, N // K, Tc, Hv), jnp.float32), axes)
        return m, l, acc

    def step(s, k_blk, v_blk, states):
        k_chunks, v_chunks, k_pos = _split(k_blk, n), _split(v_blk, n), k_positions(s)
        states = list(states)
        for i in range(n):
            for j in range(n):
                mask = _block_mask(cfg, q_pos[i], k_pos[j], q_lengths, kv_lengths)
                compute = functools.partial(_forward_block, cfg, q_chunks[i], k_chunks[j], v_chunks[j], mask)
                states[i] = _skip_if_masked(mask, compute, states[i])
        return tuple(states)

    def body(s, carry):
        (k_blk, v_blk), states = carry
        # Send the block on before using it, so the transfer can overlap this step's compute.
        nxt = (lax.ppermute(k_blk, cfg.axis_name, perm), lax.ppermute(v_blk, cfg.axis_name, perm))
        return nxt, step(s, k_blk, v_blk, states)

    states = tuple(init() for _ in range(n))
    (k_blk, v_blk), states = lax.fori_loop(0, axis_size - 1, body, ((k, v), states))
    states = step(axis_size - 1, k_blk, v_blk, states)

    outs, lses = [], []
    for m, l, acc in states:
        seen = l > 0
        safe_l = jnp.where(seen, l, 1.0)
        # Rows that saw no key output zeros; their lse is unused (the mask zeroes p) but kept finite.
        outs.append(jnp.where(seen[..., None], acc / safe_l[..., None], 0.0))
        lses.append(jnp.where(seen, m + jnp.log(safe_l), 0.0))
    out = jnp.concatenate(outs, axis=3)  # [B, K, G, T, Hv]
    out = out.transpose(0, 3, 1, 2, 4).reshape(B, T, N, Hv).astype(q.dtype)
    return out, jnp.concatenate(lses, axis=3)


def _ring_backward(cfg: _RingConfig, q, k, v, q_lengths, kv_lengths, out, lse, do):
    """Ring backward: ``dK``/``dV`` accumulators travel with their key/value block and return home."""
    axis_size, perm, n, q_pos, k_positions = _ring_setup(cfg, q, k)
    B, T, N, H = q.shape
    K = k.shape[2]
    axes = _target_axes(cfg, q, k, v, q_lengths, kv_lengths, do)
    delta = jnp.sum(do.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # [B, T, N]
    delta = delta.reshape(B, T, K, N // K).transpose(0, 2, 3, 1)  # [B, K, G, T]
    q_chunks, do_chunks = _split(q, n), _split(do, n)
    lse_chunks = [lse[..., i * (T // n):(i + 1) * (T // n)] for i in range(n)]
    delta_chunks = [delta[..., i * (T // n):(i + 1) * (T // n)] for i in range(n)]

    def step(s, k_blk, v_blk, dq, dkv):
        k_chunks, v_chunks, k_pos = _split(k_blk, n), _split(v_blk, n), k_positions(s)
        dq, dk, dv = list(dq), list(dkv[0]), list(dkv[1])
        for i in range(n):
            for j in range(n):
                mask = _block_mask(cfg, q_pos[i], k_pos[j], q_lengths, kv_lengths)
                compute = functools.partial(_backward_block, cfg, q_chunks[i], k_chunks[j], v_chunks[j],
                                            do_chunks[i], lse_chunks[i], delta_chunks[i], mask)
                dq[i], dk[j], dv[j] = _skip_if_masked(mask, compute, (dq[i], dk[j], dv[j]))
        return tuple(dq), (tuple(dk), tuple(dv))

    def send(tree):
        return jax.tree.map(lambda x: lax.ppermute(x, cfg.axis_name, perm), tree)

    def body(s, carry):
        kv, dkv, dq = carry
        nxt = send(kv)
        dq, dkv = step(s, *kv, dq, dkv)
        return nxt, send(dkv), dq

    def zeros(shape):
        return _vary(jnp.zeros(shape, jnp.float32), axes)

    dq = tuple(zeros((B, T // n, N, H)) for _ in range(n))
    S = k.shape[1]
    Hv = v.shape[3]
    dkv = (tuple(zeros((B, S // n, K, H)) for _ in range(n)), tuple(zeros((B, S // n, K, Hv)) for _ in range(n)))
    kv, dkv, dq = lax.fori_loop(0, axis_size - 1, body, ((k, v), dkv, dq))
    dq, dkv = step(axis_size - 1, *kv, dq, dkv)
    # P hops in all: each dK/dV accumulator is back on the device that owns its block.
    dk, dv = send(dkv)
    return (jnp.concatenate(dq, axis=1).astype(q.dtype), jnp.concatenate(dk, axis=1).astype(k.dtype),
            jnp.concatenate(dv, axis=1).astype(v.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _ring(cfg, q, k, v, q_lengths, kv_lengths):
    return _ring_forward(cfg, q, k, v, q_lengths, kv_lengths)[0]


def _ring_fwd(cfg, q, k, v, q_lengths, kv_lengths):
    out, lse = _ring_forward(cfg, q, k, v, q_lengths, kv_lengths)
    return out, (q, k, v, q_lengths, kv_lengths, out, lse)


def _ring_bwd(cfg, residuals, do):
    q, k, v, q_lengths, kv_lengths, out, lse = residuals
    dq, dk, dv = _ring_backward(cfg, q, k, v, q_lengths, kv_lengths, out, lse, do)
    return dq, dk, dv, None, None


_ring.defvjp(_ring_fwd, _ring_bwd)


# --------------------------------------------------------------------------------------------------
# Public API.


def _check_ring_arguments(query, key, value, *, layout, query_seq_lengths, key_value_seq_lengths,
                          scale, logit_softcap, local_window_size):
    check_layout(layout)
    B, T, S, N, K, H = checks.check_qkv(query, key, value)
    checks.check_seq_lengths("query_seq_lengths", query_seq_lengths, B)
    checks.check_seq_lengths("key_value_seq_lengths", key_value_seq_lengths, B)
    checks.check_positive("scale", scale)
    checks.check_positive("logit_softcap", logit_softcap)
    window = checks.normalize_window(local_window_size)
    return (B, T, S, N, K, H), window


def ring_attention(
    query: jnp.ndarray,
    key: jnp.ndarray,
    value: jnp.ndarray,
    *,
    axis_name: Hashable,
    is_causal: bool = False,
    layout: str = "contiguous",
    query_seq_lengths: jnp.ndarray | None = None,
    key_value_seq_lengths: jnp.ndarray | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    scale: float | None = None,
    logit_softcap: float | None = None,
) -> jnp.ndarray:
    """Exact attention over a sequence sharded along mesh axis ``axis_name``; call inside ``jax.shard_map``.

    Equals ``attnjax.dot_product_attention`` on the gathered sequence (same keywords, same numerics:
    float32 softmax statistics, output in the query dtype, a query with no visible key gets zeros and
    zero, finite gradients). Shapes below are *per shard*; ``P = lax.axis_size(axis_name)``.

    The shards must be in ``layout`` order: shard ``i`` of a ``contiguous`` sequence is positions
    ``[i·T/P, (i+1)·T/P)``; for ``striped`` and ``zigzag`` permute the global arrays with
    :func:`to_layout` before ``shard_map`` and the output back with :func:`from_layout` (or use
    :func:`ring_self_attention`, which does both). Use ``zigzag`` for causal attention: it halves the
    work of the busiest device (see :mod:`attnjax.parallel.layouts`).

    Args:
        query: ``[B, T/P, N, H]`` local queries.
        key: ``[B, S/P, K, H]`` local keys, same dtype, ``N % K == 0`` (``K < N``: grouped-query).
        value: ``[B, S/P, K, Hv]`` local values (``Hv`` may differ from ``H``).
        axis_name: the mesh axis (or tuple of axes) the sequence is sharded over.
        is_causal: query at global position ``i`` sees keys at global positions ``j <= i``.
        layout: one of :data:`LAYOUTS`, the order of positions across shards (both for queries and keys).
        query_seq_lengths: ``[B]`` int *global* lengths (replicated over ``axis_name``); queries at
            or past the length output zeros.
        key_value_seq_lengths: ``[B]`` int *global* lengths; keys at or past the length are ignored.
        local_window_size: ``w`` or ``(left, right)``: query ``i`` sees keys ``i-left..i+right``.
        scale: logit multiplier, default ``1 / sqrt(H)``.
        logit_softcap: if set, logits become ``cap * tanh(logits / cap)`` before masking.

    Returns:
        ``[B, T/P, N, Hv]`` local output, in the query dtype.

    Raises:
        ValueError: malformed shapes, layout, window, scale or softcap, or a zigzag local length that is odd.
        TypeError: non-floating inputs, mismatched dtypes, non-integer lengths.
    """
    (_, T, S, _, _, H), window = _check_ring_arguments(
        query, key, value, layout=layout, query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths, scale=scale, logit_softcap=logit_softcap,
        local_window_size=local_window_size)
    if layout == "zigzag":
        for name, length in (("query", T), ("key", S)):
            if length % 2:
                raise ValueError(
                    f"layout 'zigzag' needs an even per-shard {name} length (two chunks per device), "
                    f"got {name} shard shape {tuple(np.shape(query if name == 'query' else key))}")
    cfg = _RingConfig(axis_name=axis_name, layout=layout, is_causal=bool(is_causal), window=window,
                      scale=float(1.0 / np.sqrt(H) if scale is None else scale),
                      logit_softcap=None if logit_softcap is None else float(logit_softcap))
    q_lengths = None if query_seq_lengths is None else jnp.asarray(query_seq_lengths, jnp.int32)
    kv_lengths = None if key_value_seq_lengths is None else jnp.asarray(key_value_seq_lengths, jnp.int32)
    return _ring(cfg, jnp.asarray(query), jnp.asarray(key), jnp.asarray(value), q_lengths, kv_lengths)


def ring_self_attention(
    query: jnp.ndarray,
    key: jnp.ndarray,
    value: jnp.ndarray,
    *,
    mesh: Mesh,
    axis_name: str,
    is_causal: bool = False,
    layout: str | None = None,
    batch_axis_name: str | None = None,
    query_seq_lengths: jnp.ndarray | None = None,
    key_value_seq_lengths: jnp.ndarray | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    scale: float | None = None,
    logit_softcap: float | None = None,
) -> jnp.ndarray:
    """:func:`ring_attention` on global arrays: permutes into ``layout``, shards, runs the ring, restores order.

    Builds ``jax.shard_map`` over ``mesh`` with the sequence axis sharded over ``axis_name`` (and,
    optionally, the batch over ``batch_axis_name``); other mesh axes see replicated inputs. Works
    under ``jax.jit`` and ``jax.grad``, on Auto meshes and on Explicit ones (``jax.make_mesh``'s
    default; call it under ``jax.jit`` or inside ``with jax.set_mesh(mesh)``, and the output stays
    sharded along the sequence). Despite the name, keys may have a different length ``S``
    (cross-attention) as long as it splits the same way.

    Per-shard shapes inside the ``shard_map`` (``P`` = size of ``axis_name``, ``D`` = size of
    ``batch_axis_name`` or 1): query ``[B/D, T/P, N, H]``, key/value ``[B/D, S/P, K, H]``, lengths
    ``[B/D]``.

    For ``striped``/``zigzag`` the permutation into the layout and back moves every token across
    devices on each call (a gather on sharded inputs). In a model with many attention layers it is
    cheaper to permute the tokens once (:func:`to_layout`), keep activations in that order, and call
    :func:`ring_attention` inside your own ``shard_map``: position-wise layers (MLPs, norms) do not
    care about token order, and positional encodings only need
    :func:`~attnjax.parallel.layouts.layout_positions`.

    Args:
        query: ``[B, T, N, H]`` global queries.
        key: ``[B, S, K, H]`` global keys (``N % K == 0``).
        value: ``[B, S, K, Hv]`` global values.
        mesh: the device mesh.
        axis_name: mesh axis the sequence is sharded over (the ring).
        is_causal: causal masking (top-left aligned, as ``jax.nn``).
        layout: one of :data:`LAYOUTS`; default ``"zigzag"`` if ``is_causal`` else ``"contiguous"``.
        batch_axis_name: optional mesh axis to shard the batch over (data parallelism).
        query_seq_lengths, key_value_seq_lengths, local_window_size, scale, logit_softcap: as in
            :func:`ring_attention`.

    Returns:
        ``[B, T, N, Hv]`` in the query dtype, in the original (unpermuted) order.

    Raises:
        ValueError: unknown axis names, a sequence length not divisible by ``P`` (``2P`` for zigzag),
            a batch not divisible by the batch axis size, or any error of :func:`ring_attention`.
    """
    layout = ("zigzag" if is_causal else "contiguous") if layout is None else layout
    (B, T, S, _, _, _), _ = _check_ring_arguments(
        query, key, value, layout=layout, query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths, scale=scale, logit_softcap=logit_softcap,
        local_window_size=local_window_size)
    for name, axis in (("axis_name", axis_name), ("batch_axis_name", batch_axis_name)):
        if axis is not None and axis not in mesh.shape:
            raise ValueError(f"{name} {axis!r} is not an axis of the mesh, whose axes are {dict(mesh.shape)}")
    if batch_axis_name == axis_name:
        raise ValueError(f"batch_axis_name must differ from axis_name, both are {axis_name!r}")
    axis_size = mesh.shape[axis_name]
    check_layout_length(f"query {tuple(np.shape(query))}", T, layout, axis_size)
    check_layout_length(f"key {tuple(np.shape(key))}", S, layout, axis_size)
    if batch_axis_name is not None and B % mesh.shape[batch_axis_name]:
        raise ValueError(
            f"batch size {B} of query {tuple(np.shape(query))} must be divisible by the size "
            f"{mesh.shape[batch_axis_name]} of batch_axis_name {batch_axis_name!r}")

    seq_spec = PartitionSpec(batch_axis_name, axis_name, None, None)  # [B, T|S, N|K, H]
    lengths_spec = PartitionSpec(batch_axis_name)  # [B], global lengths, replicated over the ring
    # Only the lengths that were given are passed through shard_map (None has no sharding).
    lengths = {name: jnp.asarray(x) for name, x in (("query_seq_lengths", query_seq_lengths),
                                                     ("key_value_seq_lengths", key_value_seq_lengths))
               if x is not None}

    def local(q, k, v, lengths):
        return ring_attention(q, k, v, axis_name=axis_name, is_causal=is_causal, layout=layout,
                              local_window_size=local_window_size, scale=scale, logit_softcap=logit_softcap,
                              **lengths)

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(seq_spec, seq_spec, seq_spec, lengths_spec),
                            out_specs=seq_spec)
    # On a mesh with Explicit axes, shard_map demands inputs already sharded as its in_specs say, and
    # permutations of a sharded axis need their output sharding spelled out.
    explicit = any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types)
    seq_sharding = jax.sharding.NamedSharding(mesh, seq_spec) if explicit else None

    def place(x, spec):
        return jax.reshard(x, jax.sharding.NamedSharding(mesh, spec)) if explicit else x

    q, k, v = (place(to_layout(jnp.asarray(x), layout, axis_size, out_sharding=seq_sharding), seq_spec)
               for x in (query, key, value))
    lengths = {name: place(x, lengths_spec) for name, x in lengths.items()}
    return from_layout(sharded(q, k, v, lengths), layout, axis_size, out_sharding=seq_sharding)
