"""Per-device work of one ring step: the local queries against the key/value block currently held.

Inside a ring step the local shards are tiled again, into query tiles of ``block_q`` rows and key
tiles of ``block_k`` columns, so that the largest temporary is one ``[B, N, block_q, block_k]``
float32 tile however long the per-device sequence is (flash-attention style). A tile whose mask is
entirely False (causal future, outside a local window, padding) is skipped; this is what turns the
zigzag layout's structure into saved work. A tile whose every (query, key) pair is visible (the
interior of a causal or windowed pattern) skips building and applying its mask.

``score_mod`` and ``mask_mod`` (:mod:`attnjax.ops.flex`) are evaluated per tile at the tile's *global*
positions (:class:`Hooks`): ``score_mod`` rewrites the scaled, capped logits before the masks, and a
``mask_mod`` is and-ed into the tile's mask, so a tile it hides entirely is skipped like a causal one (block
sparsity, as in the blockwise kernel) and a tile it shows entirely takes the mask-free branch. The backward
pulls each tile's logit cotangent back through ``score_mod`` (``jax.vjp``), into the score gradient and into
the ``params`` gradient accumulators ``dparams``; the tangent step pushes the logits' tangent and the params'
through it (``jax.jvp``).

Three steps, one per pass of :mod:`attnjax.parallel.ring_passes`: :func:`forward_step` (online softmax),
:func:`tangent_step` (forward mode, from the forward's log-sum-exp) and :func:`backward_step`.

Shapes (per device; ``nq = Tl / block_q`` query tiles, ``nk = Sl / block_k`` key tiles):

* queries ``[nq, B, bq, N, H]``, query positions ``[nq, bq]``, query segment ids ``[nq, B, bq]`` or None;
* keys ``[nk, B, bk, K, H]``, values ``[nk, B, bk, K, Hv]``, key positions ``[nk, bk]``, key segment
  ids ``[nk, B, bk]`` or None;
* online-softmax state per query tile: running max ``m`` and sum ``l`` ``[nq, B, K, G, bq]``,
  weighted values ``acc [nq, B, K, G, bq, Hv]``, all float32 (float64 for float64 inputs);
* gradients ``dq [nq, B, bq, N, H]``, ``dk [nk, B, bk, K, H]``, ``dv [nk, B, bk, K, Hv]``, float32, and
  ``dparams``: a tuple of float32 accumulators, one per differentiated leaf of the ``score_mod`` params;
* tangents ``dq``, ``dk``, ``dv`` shaped like the queries, keys and values (None when zero), and the tangent
  pass's state ``mu [nq, B, K, G, bq]`` and ``a [nq, B, K, G, bq, Hv]``, float32.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Hashable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from attnjax.ops import checks, flex
from attnjax.ops.masks import combine_masks
from attnjax.ops.primitives import MASK_VALUE, scaled_logits, stat_dtype
from attnjax.ops.visibility import Visibility
from attnjax.ops.vma import varying_axes_of


@dataclasses.dataclass(frozen=True)
class RingConfig(flex.WithMods):
    """Static (hashable) options of one ring attention call."""

    axis_name: Hashable
    layout: str
    is_causal: bool
    window: checks.Window | None
    scale: float
    logit_softcap: float | None
    block_q: int
    block_k: int
    mods: flex.Mods | None = None
    batch_axis_name: Hashable | None = None

    @property
    def visibility(self) -> Visibility:
        return Visibility(self.is_causal, self.window)


class Hooks(NamedTuple):
    """What the ``score_mod``/``mask_mod`` of one ring call read besides the tile's global positions.

    Attributes:
        batch: ``[B]`` int32 batch indices (global ones when ``RingConfig.batch_axis_name`` shards the batch).
        heads: ``[N]`` int32 query-head indices.
        params: the ``score_mod``'s ``(params, closed-over values)`` (:func:`attnjax.ops.flex.with_explicit_closures`).
        mask_consts: the values the ``mask_mod`` closes over.
        kv_heads: ``K``, to fold the ``[.., N, ..]`` hooks' outputs into the ``[.., K, G, ..]`` tile layout.
    """

    batch: jnp.ndarray
    heads: jnp.ndarray
    params: Any
    mask_consts: tuple
    kv_heads: int


def make_hooks(cfg: RingConfig, B: int, N: int, K: int, params: Any, mask_consts: tuple) -> Hooks | None:
    """The :class:`Hooks` of a call with hooks (None without); call inside ``shard_map``."""
    if cfg.mods is None:
        return None
    batch = jnp.arange(B, dtype=jnp.int32)
    if cfg.batch_axis_name is not None:  # the shard's rows are rows index * B .. of the whole batch
        batch = batch + lax.axis_index(cfg.batch_axis_name).astype(jnp.int32) * B
    return Hooks(batch, jnp.arange(N, dtype=jnp.int32), params, tuple(mask_consts), K)


def _hook_mask(cfg: RingConfig, hooks: Hooks, q_pos, k_pos) -> jnp.ndarray:
    """``mask_mod`` on a tile: bool ``[B|1, K|1, G|1, bq|1, bk|1]`` (1 along what it does not read)."""
    visible = cfg.mods.mask((hooks.batch, hooks.heads, q_pos, k_pos), hooks.mask_consts)
    b, n, t, s = visible.shape
    return visible.reshape(b, hooks.kv_heads, n // hooks.kv_heads, t, s) if n > 1 else visible.reshape(b, 1, 1, t, s)


def _tile_scores(cfg: RingConfig, hooks: Hooks, q_pos, k_pos, logits, params):
    """``score_mod`` on every entry of a tile's logits ``[B, K, G, bq, bk]`` (query head ``k*G + g``)."""
    B, K, G, T, S = logits.shape
    flat = logits.reshape(B, K * G, T, S)
    return cfg.mods.scores(flat, params, (hooks.batch, hooks.heads, q_pos, k_pos)).reshape(logits.shape)


def _tile_scores_jvp(cfg: RingConfig, hooks: Hooks, q_pos, k_pos, d_params, logits, d_logits):
    """``(score_mod(logits), its tangent)`` on a tile, for the logits' tangent ``d_logits`` and the tangent
    ``d_params`` of ``hooks.params`` (either None: zero)."""
    scores = functools.partial(_tile_scores, cfg, hooks, q_pos, k_pos)
    if d_params is None:
        if d_logits is None:
            return scores(logits, hooks.params), None
        return jax.jvp(lambda s: scores(s, hooks.params), (logits,), (d_logits,))
    if d_logits is None:
        return jax.jvp(lambda p: scores(logits, p), (hooks.params,), (d_params,))
    return jax.jvp(scores, (logits, hooks.params), (d_logits, d_params))


def pick_block(length: int, chunks: int, target: int) -> int:
    """Tile length for a shard of ``length`` tokens made of ``chunks`` runs of consecutive positions.

    The largest divisor of the run length not above ``target``, so that tiles never straddle two
    runs (a zigzag tile then holds consecutive positions and skips cleanly). If the run length has
    no divisor in ``[target / 8, target]`` (e.g. a large prime), the whole run is one tile: correct,
    but with an ``O(run²)`` temporary instead of ``O(target²)``.
    """
    run = length // chunks
    if run <= target:
        return run
    for size in range(target, max(target // 8, 1) - 1, -1):
        if run % size == 0:
            return size
    return run


def to_tiles(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """``[B, L, ...]`` -> ``[L / size, B, size, ...]``."""
    B, L = x.shape[:2]
    return jnp.moveaxis(x.reshape(B, L // size, size, *x.shape[2:]), 1, 0)


def from_tiles(x: jnp.ndarray) -> jnp.ndarray:
    """``[n, B, size, ...]`` -> ``[B, n·size, ...]``."""
    n, B, size = x.shape[:3]
    return jnp.moveaxis(x, 0, 1).reshape(B, n * size, *x.shape[3:])


# --------------------------------------------------------------------------------------------------
# VMA typing: loop carries and lax.cond branches must have the same "varying over mesh axes" type on
# every path. Accumulators start as constants (varying over nothing), so they are cast to the union of
# the inputs' varying axes plus the ring axis (positions depend on lax.axis_index).


def varying_axes(cfg: RingConfig, *arrays: Any) -> frozenset:
    """Mesh axes any of ``arrays`` varies over, plus the ring axis."""
    axes = frozenset(cfg.axis_name if isinstance(cfg.axis_name, (tuple, list)) else (cfg.axis_name,))
    for x in arrays:
        if x is not None:
            axes |= varying_axes_of(x)
    return axes


# --------------------------------------------------------------------------------------------------
# One (query tile, key tile) pair. Logits are ``[B, K, G, bq, bk]``.


def _tile_mask(cfg: RingConfig, q_pos, k_pos, q_seg, k_seg, q_lengths, kv_lengths, hooked=None
               ) -> jnp.ndarray | None:
    """Boolean mask broadcastable to ``[B, K, G, bq, bk]`` from global positions, segment ids and the
    ``mask_mod``'s tile ``hooked`` (:func:`_hook_mask`), or None."""
    visible = cfg.visibility.mask(q_pos, k_pos, query_seq_lengths=q_lengths, key_value_seq_lengths=kv_lengths)
    same_segment = None if q_seg is None else (q_seg[:, :, None] == k_seg[:, None, :])[:, None, None]
    return combine_masks(None if visible is None else visible[:, None, None], same_segment, hooked)


def _tile_fully_visible(cfg: RingConfig, q_pos, k_pos, q_seg, k_seg, q_lengths, kv_lengths, hooked=None
                        ) -> jnp.ndarray | bool:
    """Whether every (query, key) pair of a tile is visible, from the extremes of its global positions
    (and, with segment ids, whether each batch row's tile holds a single segment on both sides; with a
    ``mask_mod``, whether its tile ``hooked`` is all True)."""
    conds = [cfg.visibility.all_visible(jnp.min(q_pos), jnp.max(q_pos), jnp.min(k_pos), jnp.max(k_pos),
                                        query_seq_lengths=q_lengths, key_value_seq_lengths=kv_lengths)]
    conds = [c for c in conds if c is not None]
    if q_seg is not None:
        first = q_seg[:, :1]
        conds.append(jnp.all(q_seg == first) & jnp.all(k_seg == first))
    if hooked is not None:
        conds.append(jnp.all(hooked))
    return functools.reduce(jnp.logical_and, conds) if conds else True


def _tile_logits(cfg: RingConfig, q, k):
    B, T, N, _ = q.shape
    K, S = k.shape[2], k.shape[1]
    logits = scaled_logits(q, k, scale=cfg.scale, logit_softcap=cfg.logit_softcap)
    return logits.reshape(B, K, N // K, T, S)


def _forward_tile(cfg: RingConfig, q, k, v, scores: Callable | None, mask, state):
    """Online-softmax update of ``state = (m, l, acc)`` with one key tile; ``scores`` is the tile's
    ``score_mod`` (``logits -> logits``) or None."""
    m, l, acc = state
    logits = _tile_logits(cfg, q, k)
    if scores is not None:
        logits = scores(logits)
    if mask is not None:
        logits = jnp.where(mask, logits, MASK_VALUE)
    m_new = jnp.maximum(m, logits.max(axis=-1))
    p = jnp.exp(logits - m_new[..., None])
    if mask is not None:
        # A row with no visible key so far has m_new == MASK_VALUE == its masked logits: exp(0) = 1
        # would count masked keys, so zero them explicitly.
        p = jnp.where(mask, p, 0.0)
    alpha = jnp.exp(m - m_new)
    pv = jnp.einsum("BKGTS,BSKH->BKGTH", p.astype(v.dtype), v, preferred_element_type=stat_dtype(q.dtype))
    return m_new, alpha * l + p.sum(axis=-1), alpha[..., None] * acc + pv


def _backward_tile(cfg: RingConfig, q, k, v, do, lse, delta, scores: Callable | None, diff, mask, grads):
    """Adds one tile's contribution to ``grads = (dq [B,bq,N,H], dk [B,bk,K,H], dv [B,bk,K,Hv], dparams)``.

    ``scores(logits, diff)`` is the tile's ``score_mod`` as a function of the differentiated ``params`` leaves
    ``diff`` (None without a ``score_mod``); ``dparams`` accumulates their gradient (float32)."""
    dq, dk, dv, dparams = grads
    B, T, N, H = q.shape
    K = k.shape[2]
    q_g = q.reshape(B, T, K, N // K, H)
    do_g = do.reshape(B, T, K, N // K, v.shape[3])
    raw = logits = _tile_logits(cfg, q, k)
    if scores is not None:
        logits, pull = jax.vjp(scores, raw, diff)
    # lse is +inf on rows with no visible key (primitives.lse_for_recompute) and finite elsewhere:
    # masked logits become MASK_VALUE, whose exp underflows to exactly 0, so p needs no second where.
    p = jnp.exp((logits if mask is None else jnp.where(mask, logits, MASK_VALUE)) - lse[..., None])
    dv = dv + jnp.einsum("BKGTS,BTKGH->BSKH", p.astype(do.dtype), do_g, preferred_element_type=stat_dtype(q.dtype))
    dp = jnp.einsum("BTKGH,BSKH->BKGTS", do_g, v, preferred_element_type=stat_dtype(q.dtype))
    ds = p * (dp - delta[..., None])
    if scores is not None:  # through score_mod: the capped logits' cotangent and the params'
        ds, d_diff = pull(ds)
        dparams = tuple(acc + d.astype(acc.dtype) for acc, d in zip(dparams, d_diff))
    if cfg.logit_softcap is not None:
        # d/dx [c tanh(x / c)] = 1 - tanh² = 1 - (capped / c)²; masked entries already have ds = 0.
        ds = ds * (1.0 - jnp.square(raw / cfg.logit_softcap))
    ds = ds * jnp.asarray(cfg.scale, ds.dtype)
    dq = dq + jnp.einsum("BKGTS,BSKH->BTKGH", ds.astype(k.dtype), k,
                         preferred_element_type=stat_dtype(q.dtype)).reshape(B, T, N, H)
    dk = dk + jnp.einsum("BKGTS,BTKGH->BSKH", ds.astype(q.dtype), q_g, preferred_element_type=stat_dtype(q.dtype))
    return dq, dk, dv, dparams


def _tangent_tile(cfg: RingConfig, q, k, v, dq, dk, dv, lse, scores: Callable | None, mask, state):
    """Adds one tile's contribution to the tangent pass's ``state = (mu [B,K,G,bq], a [B,K,G,bq,Hv])``.

    ``dq [B,bq,N,H]``, ``dk [B,bk,K,H]``, ``dv [B,bk,K,Hv]`` are the tiles' tangents (None: zero); ``scores(logits,
    dlogits)`` is the tile's ``score_mod`` and its tangent, in the logits and in the params (None without one).
    With ``P = exp(S - lse)`` recomputed and ``dS`` the logits' tangent: ``mu += rowsum(P * dS)`` and
    ``a += (P * dS) V + P dV``."""
    mu, a = state
    B, T, N, H = q.shape
    K = k.shape[2]
    acc = stat_dtype(q.dtype)
    raw = logits = _tile_logits(cfg, q, k)
    parts = []
    if dq is not None:
        parts.append(jnp.einsum("BTKGH,BSKH->BKGTS", dq.reshape(B, T, K, N // K, H), k, preferred_element_type=acc))
    if dk is not None:
        parts.append(jnp.einsum("BTKGH,BSKH->BKGTS", q.reshape(B, T, K, N // K, H), dk, preferred_element_type=acc))
    ds = None
    if parts:
        ds = functools.reduce(jnp.add, parts) * jnp.asarray(cfg.scale, acc)
        if cfg.logit_softcap is not None:  # d/dx [c tanh(x / c)] = 1 - (capped / c)²
            ds = ds * (1.0 - jnp.square(raw / cfg.logit_softcap))
    if scores is not None:
        logits, ds = scores(raw, ds)
    if mask is not None:
        logits = jnp.where(mask, logits, MASK_VALUE)
        if ds is not None and scores is not None:  # p == 0 there, but a score_mod's tangent need not be finite
            ds = jnp.where(mask, ds, 0.0)
    # Masked logits' exp underflows to exactly 0; rows with no visible key have lse = +inf (lse_for_recompute).
    p = jnp.exp(logits - lse[..., None])
    if ds is not None:
        p_ds = p * ds
        mu = mu + p_ds.sum(axis=-1)
        a = a + jnp.einsum("BKGTS,BSKH->BKGTH", p_ds.astype(v.dtype), v, preferred_element_type=acc)
    if dv is not None:
        a = a + jnp.einsum("BKGTS,BSKH->BKGTH", p.astype(dv.dtype), dv, preferred_element_type=acc)
    return mu, a


def _run_tile(cfg: RingConfig, q_pos, k_pos, q_seg, k_seg, q_lengths, kv_lengths, hooks: Hooks | None,
              compute: Callable, state):
    """``compute(mask, state)`` for one tile: skipped (``state`` returned) when the mask (``mask_mod``
    included) hides the whole tile, run with ``mask=None`` when every pair is visible, with the tile's mask
    otherwise."""
    hooked = _hook_mask(cfg, hooks, q_pos, k_pos) if cfg.has_mask_mod else None
    mask = _tile_mask(cfg, q_pos, k_pos, q_seg, k_seg, q_lengths, kv_lengths, hooked)
    if mask is None:
        return compute(None, state)
    branch = jnp.where(_tile_fully_visible(cfg, q_pos, k_pos, q_seg, k_seg, q_lengths, kv_lengths, hooked), 2,
                       jnp.where(jnp.any(mask), 1, 0))
    return lax.switch(branch, [lambda s: s, functools.partial(compute, mask), functools.partial(compute, None)],
                      state)


# --------------------------------------------------------------------------------------------------
# One ring step: all query tiles against all key tiles of the block held now.


def _tile(x, i):
    return None if x is None else x[i]


def forward_step(cfg: RingConfig, q, q_pos, q_seg, k, v, k_pos, k_seg, q_lengths, kv_lengths, state,
                 hooks: Hooks | None = None):
    """Online-softmax update of every query tile's ``state = (m, l, acc)`` with one key/value block."""

    def query_tile(i, state):
        m, l, acc = state
        q_i, pos_i, seg_i = q[i], q_pos[i], _tile(q_seg, i)

        def key_tile(j, tile_state):
            scores = (functools.partial(_tile_scores, cfg, hooks, pos_i, k_pos[j], params=hooks.params)
                      if cfg.has_score_mod else None)
            compute = functools.partial(_forward_tile, cfg, q_i, k[j], v[j], scores)
            return _run_tile(cfg, pos_i, k_pos[j], seg_i, _tile(k_seg, j), q_lengths, kv_lengths, hooks, compute,
                             tile_state)

        m_i, l_i, acc_i = lax.fori_loop(0, k.shape[0], key_tile, (m[i], l[i], acc[i]))
        return m.at[i].set(m_i), l.at[i].set(l_i), acc.at[i].set(acc_i)

    return lax.fori_loop(0, q.shape[0], query_tile, state)


def backward_step(cfg: RingConfig, q, q_pos, q_seg, do, lse, delta, k, v, k_pos, k_seg, q_lengths, kv_lengths,
                  grads, hooks: Hooks | None = None, rebuild: Callable | None = None, diff: tuple = ()):
    """Adds one key/value block's contribution to ``grads = (dq, dk, dv, dparams)`` (tiled, float32).

    ``rebuild(diff)`` makes the ``score_mod``'s params from the differentiated leaves ``diff``, whose
    gradients ``dparams`` accumulates (an empty tuple when none is differentiated)."""

    def key_tile(j, grads):
        dq, dk, dv, dparams = grads
        k_j, v_j, pos_j, seg_j = k[j], v[j], k_pos[j], _tile(k_seg, j)

        def query_tile(i, carry):
            dq, dk_j, dv_j, dparams = carry
            scores = None
            if cfg.has_score_mod:
                scores = lambda s, d, pos_i=q_pos[i]: _tile_scores(cfg, hooks, pos_i, pos_j, s, rebuild(d))
            compute = functools.partial(_backward_tile, cfg, q[i], k_j, v_j, do[i], lse[i], delta[i], scores, diff)
            dq_i, dk_j, dv_j, dparams = _run_tile(cfg, q_pos[i], pos_j, _tile(q_seg, i), seg_j, q_lengths,
                                                  kv_lengths, hooks, compute, (dq[i], dk_j, dv_j, dparams))
            return dq.at[i].set(dq_i), dk_j, dv_j, dparams

        dq, dk_j, dv_j, dparams = lax.fori_loop(0, q.shape[0], query_tile, (dq, dk[j], dv[j], dparams))
        return dq, dk.at[j].set(dk_j), dv.at[j].set(dv_j), dparams

    return lax.fori_loop(0, k.shape[0], key_tile, grads)


def tangent_step(cfg: RingConfig, q, q_pos, q_seg, dq, lse, k, v, dk, dv, k_pos, k_seg, q_lengths, kv_lengths, state,
                 hooks: Hooks | None = None, d_params: Any = None):
    """Adds one key/value block's contribution to every query tile's tangent ``state = (mu, a)``
    (``[nq, B, K, G, bq]`` and ``[nq, B, K, G, bq, Hv]``, float32).

    ``dq [nq, B, bq, N, H]``, ``dk [nk, B, bk, K, H]``, ``dv [nk, B, bk, K, Hv]`` are tiled tangents and
    ``d_params`` the tangent of ``hooks.params``, each None when zero; ``lse`` is the forward's, as
    :func:`~attnjax.ops.primitives.lse_for_recompute` gives it."""

    def query_tile(i, state):
        mu, a = state
        q_i, pos_i, seg_i, dq_i = q[i], q_pos[i], _tile(q_seg, i), _tile(dq, i)

        def key_tile(j, tile_state):
            scores = (functools.partial(_tile_scores_jvp, cfg, hooks, pos_i, k_pos[j], d_params)
                      if cfg.has_score_mod else None)
            compute = functools.partial(_tangent_tile, cfg, q_i, k[j], v[j], dq_i, _tile(dk, j), _tile(dv, j), lse[i],
                                        scores)
            return _run_tile(cfg, pos_i, k_pos[j], seg_i, _tile(k_seg, j), q_lengths, kv_lengths, hooks, compute,
                             tile_state)

        mu_i, a_i = lax.fori_loop(0, k.shape[0], key_tile, (mu[i], a[i]))
        return mu.at[i].set(mu_i), a.at[i].set(a_i)

    return lax.fori_loop(0, q.shape[0], query_tile, state)
