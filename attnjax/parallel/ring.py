"""Ring attention: sequence-parallel exact attention with ``jax.shard_map`` and ``lax.ppermute``.

The query, key and value sequences are split over the devices of one mesh axis (``axis_name``, of
size ``P``). Every device keeps its own queries and, for ``P`` steps, computes attention of those
queries against the key/value block it currently holds while passing that block on to the next
device of the ring (``lax.ppermute``). The per-query softmax is accumulated online (running max,
running sum, running weighted values, all float32), so after ``P`` steps each device holds the exact
attention output of its queries, and no device ever holds more than one remote key/value block.
Within a step the shards are tiled again (``block_size``, :mod:`attnjax.parallel.ring_kernels`), so
memory per device is ``O((T + S) / P)`` for the shards plus one ``[B, N, block, block]`` logits tile.

Masks (causal, sliding window, padding) are built from *global* token positions, which depend on the
device index (``lax.axis_index``) and on the sequence layout (see :mod:`attnjax.parallel.layouts`), so the result is
exactly that of the dense reference ``attnjax.dot_product_attention`` on the unsharded sequence.
Segment ids (packed sequences) are sharded like the tokens; the key ids travel round the ring with
their key/value block.

Derivatives (:mod:`attnjax.parallel.ring_passes`) start from the forward's local output and per-row
log-sum-exp, the only values kept; each pass sends the key/value blocks round the ring once more and
recomputes each tile's probabilities, so nothing of size ``T x S`` is stored. Reverse mode (``jax.grad``,
``jax.vjp``, ``jax.jacrev``) is a hand-written ring backward: it adds into the local ``dQ`` and into
``dK``/``dV`` accumulators that travel *with* their key/value block and arrive back at the block's owner
after ``P`` hops. Forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``) is a ring tangent pass whose
``dK``/``dV`` tangents travel with their block the same way. Both take every option the forward takes.
All three passes are plain JAX, so derivatives of derivatives (``jax.hessian``, ``jax.jvp`` of ``jax.grad``,
``jax.grad`` of ``jax.grad``) work too, by JAX's differentiation of those passes (not memory-bounded like the
first-order ones).

``score_mod`` and ``mask_mod`` (PyTorch FlexAttention's hooks, :mod:`attnjax.ops.flex`) work as in
``attnjax.dot_product_attention``: each tile calls them at the *global* positions of its queries and keys
(which depend on the device, the ring step and the layout), so position arrays and segment ids of the whole
sequence can be looked up inside; tiles a ``mask_mod`` hides entirely are skipped. ``score_mod_params`` are
replicated over the ring: every device accumulates its share of their gradient over its tiles, and one
``psum`` after the backward ring adds the shares (the transpose of using a replicated value on every
device, done once rather than per tile).
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

from attnjax.ops import checks, flex
from attnjax.ops.primitives import stat_dtype
from attnjax.parallel.layouts import check_layout, check_layout_length, chunks_per_shard, from_layout, to_layout
from attnjax.parallel.ring_kernels import RingConfig, pick_block, varying_axes
from attnjax.parallel.ring_passes import ring


# --------------------------------------------------------------------------------------------------
# Public API.


def _check_ring_arguments(query, key, value, *, layout, query_seq_lengths, key_value_seq_lengths,
                          query_segment_ids, key_segment_ids, scale, logit_softcap, local_window_size, block_size):
    check_layout(layout)
    checks.check_positive_int("block_size", block_size)
    dims = checks.check_inputs(query, key, value, query_seq_lengths=query_seq_lengths,
                               key_value_seq_lengths=key_value_seq_lengths)
    checks.check_segment_ids(query_segment_ids, key_segment_ids, query, key)
    checks.check_positive("scale", scale)
    checks.check_positive("logit_softcap", logit_softcap)
    window = checks.normalize_window(local_window_size)
    return dims, window


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
    query_segment_ids: jnp.ndarray | None = None,
    key_segment_ids: jnp.ndarray | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    scale: float | None = None,
    logit_softcap: float | None = None,
    block_size: int = 512,
    score_mod: Callable[..., Any] | None = None,
    mask_mod: Callable[..., Any] | None = None,
    score_mod_params: Any = None,
    batch_axis_name: Hashable | None = None,
) -> jnp.ndarray:
    """Exact attention over a sequence sharded along mesh axis ``axis_name``; call inside ``jax.shard_map``.

    Equals ``attnjax.dot_product_attention`` on the gathered sequence (same keywords, same numerics:
    float32 softmax statistics, output in the query dtype, a query with no visible key gets zeros and
    zero, finite gradients). Shapes below are *per shard*; ``P = lax.axis_size(axis_name)``. Differentiable in
    ``query``, ``key``, ``value`` and ``score_mod_params``, in reverse mode (``jax.grad``, a hand-written ring
    backward) and in forward mode (``jax.jvp``, ``jax.jacfwd``, a ring tangent pass), and to second order.

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
        query_segment_ids: ``[B, T/P]`` int, the local queries' segment ids (packed sequences): a
            query sees only keys of its own segment, as with ``mask=attnjax.ops.segment_mask(...)``
            on the gathered sequence. Sharded, and in ``layout`` order, like the queries.
        key_segment_ids: ``[B, S/P]`` int, the local keys' ids; default ``query_segment_ids``
            (self-attention).
        local_window_size: ``w`` or ``(left, right)``: query ``i`` sees keys ``i-left..i+right``.
        scale: logit multiplier, default ``1 / sqrt(H)``.
        logit_softcap: if set, logits become ``cap * tanh(logits / cap)`` before masking.
        block_size: target tile length inside a ring step (see :func:`~attnjax.parallel.ring_kernels.pick_block`):
            the largest temporary is one ``[B, N, block, block]`` float32 tile, whatever ``T/P``.
        score_mod: ``score_mod(score, batch, head, q_idx, kv_idx, params) -> score``, as in
            :func:`attnjax.dot_product_attention` (applied after the scale and softcap, before the masks).
            ``q_idx`` and ``kv_idx`` are *global* positions in the unpermuted sequence (whatever the device,
            ring step and ``layout``), so arrays it closes over or reads from ``params`` must cover the whole
            sequence (replicated over ``axis_name``), not this shard.
        mask_mod: ``mask_mod(batch, head, q_idx, kv_idx) -> bool`` (``True`` = attend), global positions
            likewise; and-ed with the other masks, and tiles it hides entirely are skipped.
        score_mod_params: pytree of arrays passed to ``score_mod`` as ``params``, replicated over
            ``axis_name``. Its gradient is the sum of every device's share (one ``psum`` per backward pass).
            Values the hooks close over are constants of the backward: reverse mode through a differentiated
            floating one raises ValueError (pass it here instead); forward mode takes their tangents.
        batch_axis_name: the mesh axis the batch is sharded over, if any; only the hooks use it, to see the
            global batch index (as in the unsharded call). None: ``batch`` is the local row ``[0, B)``.

    Returns:
        ``[B, T/P, N, Hv]`` local output, in the query dtype.

    Raises:
        ValueError: malformed shapes, layout, window, scale, softcap or block size, an odd zigzag
            local length, ``axis_name`` not bound by an enclosing ``shard_map``, ``score_mod_params`` without
            ``score_mod``, or a hook that does not return a scalar.
        TypeError: non-floating inputs, mismatched dtypes, non-integer lengths or segment ids, or a hook that
            is not callable or has the wrong arity or return dtype.
    """
    (_, T, S, _, _, H), window = _check_ring_arguments(
        query, key, value, layout=layout, query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths, query_segment_ids=query_segment_ids,
        key_segment_ids=key_segment_ids, scale=scale, logit_softcap=logit_softcap,
        local_window_size=local_window_size, block_size=block_size)
    try:
        lax.axis_size(axis_name)
    except NameError as error:
        raise ValueError(
            f"ring_attention must run inside jax.shard_map with the sequence sharded over mesh axis "
            f"axis_name={axis_name!r}, which is not bound here ({error}); from global arrays use "
            f"ring_self_attention(..., mesh=mesh, axis_name=...)") from None
    if layout == "zigzag":
        for name, length in (("query", T), ("key", S)):
            if length % 2:
                raise ValueError(
                    f"layout 'zigzag' needs an even per-shard {name} length (two chunks per device), "
                    f"got {name} shard shape {tuple(np.shape(query if name == 'query' else key))}")
    if batch_axis_name is not None:
        try:
            lax.axis_size(batch_axis_name)
        except NameError:
            raise ValueError(f"batch_axis_name={batch_axis_name!r} is not a mesh axis bound by the enclosing "
                             f"jax.shard_map") from None
    query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)
    mods = flex.check_mods(score_mod, mask_mod, score_mod_params, score_dtype=stat_dtype(query.dtype))
    chunks = chunks_per_shard(layout)
    cfg = RingConfig(axis_name=axis_name, layout=layout, is_causal=bool(is_causal), window=window,
                     scale=float(checks.default_scale(scale, H)),
                     logit_softcap=None if logit_softcap is None else float(logit_softcap),
                     block_q=pick_block(T, chunks, int(block_size)), block_k=pick_block(S, chunks, int(block_size)),
                     batch_axis_name=batch_axis_name)
    q_lengths = None if query_seq_lengths is None else jnp.asarray(query_seq_lengths, jnp.int32)
    kv_lengths = None if key_value_seq_lengths is None else jnp.asarray(key_value_seq_lengths, jnp.int32)
    q_seg = None if query_segment_ids is None else jnp.asarray(query_segment_ids, jnp.int32)
    k_seg = q_seg if key_segment_ids is None else jnp.asarray(key_segment_ids, jnp.int32)
    params = None if mods is None or mods.score_mod is None else jax.tree.map(jnp.asarray, score_mod_params)
    return _ring_call(dataclasses.replace(cfg, mods=mods), query, key, value, q_seg, k_seg, q_lengths, kv_lengths,
                      params)


@functools.partial(jax.jit, static_argnums=(0,))
def _ring_call(cfg: RingConfig, q, k, v, q_seg, k_seg, q_lengths, kv_lengths, score_mod_params):
    """:func:`~attnjax.parallel.ring_passes.ring` with the values the hooks close over made its arguments.

    Traced under ``jax.jit`` (cached on ``cfg``, which holds the caller's hooks), so the hooks are traced once
    per cache entry."""
    score_params, mask_consts = None, ()
    if cfg.mods is not None:
        # Values the hooks close over cross the custom_jvp boundary as arguments (like the blockwise kernel's).
        axes = varying_axes(cfg, q, k, v, q_seg, k_seg, q_lengths, kv_lengths, *jax.tree.leaves(score_mod_params))
        mods, score_params, mask_consts = flex.with_explicit_closures(cfg.mods, score_mod_params,
                                                                      score_dtype=stat_dtype(q.dtype), axes=axes)
        cfg = dataclasses.replace(cfg, mods=mods)
    return ring(cfg, q, k, v, q_seg, k_seg, q_lengths, kv_lengths, score_params, mask_consts)


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
    query_segment_ids: jnp.ndarray | None = None,
    key_segment_ids: jnp.ndarray | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    scale: float | None = None,
    logit_softcap: float | None = None,
    block_size: int = 512,
    score_mod: Callable[..., Any] | None = None,
    mask_mod: Callable[..., Any] | None = None,
    score_mod_params: Any = None,
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
    ``[B/D]``, segment ids ``[B/D, T/P]`` and ``[B/D, S/P]``.

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
        query_segment_ids: ``[B, T]`` int global segment ids (packed sequences).
        key_segment_ids: ``[B, S]`` int; default ``query_segment_ids``.
        query_seq_lengths, key_value_seq_lengths, local_window_size, scale, logit_softcap, block_size:
            as in :func:`ring_attention`.
        score_mod, mask_mod, score_mod_params: the hooks of :func:`attnjax.dot_product_attention`, written for
            the unsharded call: they see global positions and global batch indices, and may close over
            global arrays (replicated into the ``shard_map``); the params are replicated
            (``PartitionSpec()``) and differentiable.

    Returns:
        ``[B, T, N, Hv]`` in the query dtype, in the original (unpermuted) order.

    Raises:
        ValueError: unknown axis names, a sequence length not divisible by ``P`` (``2P`` for zigzag),
            a batch not divisible by the batch axis size, or any error of :func:`ring_attention`.
    """
    layout = ("zigzag" if is_causal else "contiguous") if layout is None else layout
    (B, T, S, _, _, _), _ = _check_ring_arguments(
        query, key, value, layout=layout, query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths, query_segment_ids=query_segment_ids,
        key_segment_ids=key_segment_ids, scale=scale, logit_softcap=logit_softcap,
        local_window_size=local_window_size, block_size=block_size)
    flex.check_mods(score_mod, mask_mod, score_mod_params, score_dtype=stat_dtype(jnp.result_type(query)))
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
    segments_spec = PartitionSpec(batch_axis_name, axis_name)  # [B, T|S], sharded like the tokens
    # Only the optional arrays that were given are passed through shard_map (None has no sharding).
    lengths = {name: jnp.asarray(x) for name, x in (("query_seq_lengths", query_seq_lengths),
                                                     ("key_value_seq_lengths", key_value_seq_lengths))
               if x is not None}
    segments = {name: jnp.asarray(x) for name, x in (("query_segment_ids", query_segment_ids),
                                                      ("key_segment_ids", key_segment_ids))
                if x is not None}

    params_spec = PartitionSpec()  # the score_mod's params, replicated
    params = None if score_mod_params is None else jax.tree.map(jnp.asarray, score_mod_params)

    def local(q, k, v, lengths, segments, params):
        return ring_attention(q, k, v, axis_name=axis_name, is_causal=is_causal, layout=layout,
                              local_window_size=local_window_size, scale=scale, logit_softcap=logit_softcap,
                              block_size=block_size, score_mod=score_mod, mask_mod=mask_mod, score_mod_params=params,
                              batch_axis_name=batch_axis_name, **lengths, **segments)

    sharded = jax.shard_map(local, mesh=mesh,
                            in_specs=(seq_spec, seq_spec, seq_spec, lengths_spec, segments_spec, params_spec),
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
    segments_sharding = jax.sharding.NamedSharding(mesh, segments_spec) if explicit else None
    segments = {name: place(to_layout(x, layout, axis_size, out_sharding=segments_sharding), segments_spec)
                for name, x in segments.items()}
    params = jax.tree.map(lambda x: place(x, params_spec), params)
    return from_layout(sharded(q, k, v, lengths, segments, params), layout, axis_size, out_sharding=seq_sharding)
