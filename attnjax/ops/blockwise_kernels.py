"""Forward and tangent loops of blockwise attention, wired together with ``jax.custom_jvp``.

Everything here works on the blocked layout built by :mod:`attnjax.ops.blockwise`:

* ``q [nq, B, K, G*bq, H]``: query block ``i`` holds rows ``i*bq .. i*bq+bq-1`` of all ``G`` query
  heads of key/value head ``k`` (folded row index ``r = g*bq + t``);
* ``k [nk, B, K, bk, H]``, ``v [nk, B, K, bk, Hv]``;
* ``bias``/``mask`` ``[B|1, K|1, G|1, Tp|1, Sp|1]`` (``Tp = nq*bq``, ``Sp = nk*bk``);
* ``qlen``/``kvlen`` ``[B]`` int32 or None;
* ``rng``: a PRNG key when ``cfg.dropout_rate > 0``, else None;
* ``segments``: ``(q_seg [nq, B, bq], k_seg [nk, B, bk])`` int32 segment ids, or None;
* ``params``: the ``score_mod_params`` pytree (differentiable), or None;
* ``blocks``: ``[nq, nk]`` int32 tile states of a ``mask_mod`` (:func:`attnjax.ops.flex.block_states`), or None;
* ``mask_consts``: the values the ``mask_mod`` closes over, as arguments
  (:func:`attnjax.ops.flex.with_explicit_closures`).

``score_mod`` and ``mask_mod`` (``cfg.mods``, :mod:`attnjax.ops.flex`) are evaluated per tile on the
tile's positions: ``score_mod`` rewrites the scaled, capped and biased logits before any mask, and its
derivative (in the scores and in ``params``) enters the tangent pass below as ``jax.jvp`` of the tile's
``score_mod``, so reverse mode gets ``params``' gradient by the same transpose. Tiles that ``blocks``
marks empty are skipped exactly like tiles that causality hides.

The forward is flash-attention-2's online softmax: per query block, a loop over the key blocks it
can see (dynamic bounds) with a float32 running max and sum; it keeps the output and the log-sum-exp.

Derivatives come from one rule, a second blockwise pass (:func:`_tangent`) that starts from that
log-sum-exp. Per block it recomputes ``P = exp(S - lse)`` and, for input tangents ``dQ, dK, dV,
dBias``, accumulates ``dS = scale * (dQ K^T + Q dK^T)`` (times ``1 - tanh^2`` under a softcap)
``+ dBias``, ``mu = rowsum(P * dS)`` and ``A = (P * dS) V + P dV``; then ``d out = A - mu * out`` and
``d lse = mu``.

* Forward mode (``jax.jvp``, ``jax.jacfwd``) runs that pass.
* Reverse mode (``jax.grad``, ``jax.vjp``, ``jax.jacrev``) is JAX's transpose of it, a reverse sweep
  over the same blocks: ``dS = P * (dP - rowsum(dO * O) + d lse)``, the flash-attention backward.
  Each block body is a ``jax.checkpoint``, so the sweep recomputes ``P`` from the log-sum-exp and
  never stores a ``[T, S]`` matrix.
* Compositions follow: Hessians (``jacfwd(jacrev(f))``), Hessian-vector products
  (``jvp(grad(f))``), ``jacrev(jacfwd(f))``, ``vmap`` of any of them.

A ``custom_vjp`` would give reverse mode only: JAX cannot push tangents through one. The tangent pass
therefore uses only what JAX can transpose: ``scan`` over every key block (a static trip count) with
``switch`` skipping the blocks that causality, a window or the lengths hide, where the forward uses
dynamic loop bounds.

Dropout multiplies block ``(i, j)`` of ``P`` by ``Z = keep / (1 - rate)`` after the softmax
statistics (which stay those of the undropped ``P``), so ``O = (P * Z) V``. The keep mask is drawn
from ``fold_in(fold_in(rng, i), j)``, so the tangent pass and its transpose redraw exactly the
forward's mask without storing it; ``d out = (P * Z * dS) V + (P * Z) dV - mu * out`` with ``mu``
still ``rowsum(P * dS)``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from attnjax.ops import flex
from attnjax.ops.primitives import MASK_VALUE, lse_for_recompute, prescaled, stat_dtype
from attnjax.ops.visibility import Visibility
from attnjax.ops.vma import cast_varying, varying_axes_of


@dataclasses.dataclass(frozen=True)
class Config(flex.WithMods):
    """Static description of one blockwise call (hashable; a ``custom_jvp`` non-differentiable arg).

    Attributes:
        T, S: true (unpadded) query and key lengths.
        G: query heads per key/value head.
        bq, bk: block sizes; ``Tp = nq*bq >= T`` and ``Sp = nk*bk >= S``.
        scale: logit multiplier.
        visibility: causality and local window (:class:`~attnjax.ops.visibility.Visibility`).
        logit_softcap: ``cap`` or None.
        dropout_rate: probability of dropping an attention weight (0: no dropout).
        mods: ``score_mod``/``mask_mod`` (:class:`attnjax.ops.flex.Mods`) or None.
    """

    T: int
    S: int
    G: int
    bq: int
    bk: int
    scale: float
    visibility: Visibility
    logit_softcap: float | None
    dropout_rate: float = 0.0
    mods: flex.Mods | None = None

    @property
    def nq(self) -> int:
        return -(-self.T // self.bq)

    @property
    def nk(self) -> int:
        return -(-self.S // self.bk)

    def key_lengths(self, kvlen):
        """The key lengths the visibility rule applies: ``kvlen``, or ``S`` when padding keys need hiding."""
        if kvlen is None and self.nk * self.bk != self.S:
            return self.S
        return kvlen


def varying_axes(*xs) -> tuple[str, ...]:
    """The mesh axes any of ``xs`` (arrays or None) varies over, sorted (empty outside ``shard_map``)."""
    axes = set()
    for x in xs:
        if x is not None:
            axes |= varying_axes_of(x)
    return tuple(sorted(axes, key=str))


def _to_blocks(lo, hi, size):
    """Positions ``[lo, hi)`` -> the blocks of ``size`` that hold them (an empty range stays empty)."""
    first = lo // size
    return first, jnp.where(hi > lo, (hi + size - 1) // size, first)


def key_block_range(cfg: Config, i, kvlen):
    """``[lo, hi)`` of key blocks with at least one key visible to some row of query block ``i``."""
    lo, hi = cfg.visibility.key_range(i * cfg.bq, i * cfg.bq + cfg.bq - 1, cfg.S, key_value_seq_lengths=kvlen)
    return _to_blocks(lo, hi, cfg.bk)


def _key_blocks(cfg: Config, i, kvlen, blocks):
    """:func:`key_block_range` narrowed to the key blocks that a ``mask_mod`` does not hide entirely."""
    lo, hi = key_block_range(cfg, i, kvlen)
    if blocks is None:
        return lo, hi
    lo_m, hi_m = flex.block_range(blocks, i)
    lo = jnp.maximum(lo, lo_m)
    return lo, jnp.maximum(jnp.minimum(hi, hi_m), lo)


def query_block_range(cfg: Config, j, qlen, kvlen):
    """``[lo, hi)`` of query blocks with at least one row that sees a key of key block ``j``."""
    lo, hi = cfg.visibility.query_range(j * cfg.bk, j * cfg.bk + cfg.bk - 1, cfg.T, query_seq_lengths=qlen,
                                        key_value_seq_lengths=kvlen)
    return _to_blocks(lo, hi, cfg.bq)


def _block_starts(x, i, j, cfg: Config) -> tuple:
    """Start indices of block ``(i, j)`` in a ``[.., Tp|1, Sp|1]`` array (broadcast axes start at 0), all
    int32: under ``jax.enable_x64`` Python zeros would become int64 next to the int32 loop indices, which
    ``dynamic_slice`` rejects."""
    t_start = i * cfg.bq if x.shape[3] > 1 else 0
    s_start = j * cfg.bk if x.shape[4] > 1 else 0
    return tuple(jnp.asarray(v, jnp.int32) for v in (0, 0, 0, t_start, s_start))


def _slice_block(x, i, j, cfg: Config):
    """Block ``(i, j)`` of a ``[.., Tp|1, Sp|1]`` bias or mask (broadcast axes are not sliced)."""
    sizes = x.shape[:3] + (cfg.bq if x.shape[3] > 1 else 1, cfg.bk if x.shape[4] > 1 else 1)
    return lax.dynamic_slice(x, _block_starts(x, i, j, cfg), sizes)


def _tile_indices(cfg: Config, i, j, B: int, K: int) -> tuple:
    """``(batch [B], head [N], q_idx [bq], kv_idx [bk])`` int32 of block ``(i, j)`` for the hooks: query heads
    in order ``n = k*G + g`` and positions clamped to the last real one in padded tiles."""
    return (jnp.arange(B, dtype=jnp.int32), jnp.arange(K * cfg.G, dtype=jnp.int32),
            flex.tile_indices(i * cfg.bq, cfg.bq, cfg.T), flex.tile_indices(j * cfg.bk, cfg.bk, cfg.S))


def _block_mask(cfg: Config, i, j, mask, qlen, kvlen, segments, mask_consts, B: int, K: int):
    """Boolean visibility of block ``(i, j)``, broadcastable to ``[B, K, G, bq, bk]``, or None."""
    visible = cfg.visibility.mask(i * cfg.bq + jnp.arange(cfg.bq), j * cfg.bk + jnp.arange(cfg.bk),
                                  query_seq_lengths=qlen, key_value_seq_lengths=cfg.key_lengths(kvlen))
    parts = [] if visible is None else [visible[:, None, None]]
    if mask is not None:
        parts.append(_slice_block(mask, i, j, cfg))
    if segments is not None:
        q_seg, k_seg = segments
        parts.append((q_seg[i][:, :, None] == k_seg[j][:, None, :])[:, None, None])
    if cfg.has_mask_mod:
        hooked = cfg.mods.mask(_tile_indices(cfg, i, j, B, K), mask_consts)  # [B|1, N|1, bq|1, bk|1]
        b, n, t, s = hooked.shape
        parts.append(hooked.reshape(b, K, cfg.G, t, s) if n > 1 else hooked.reshape(b, 1, 1, t, s))
    return functools.reduce(jnp.logical_and, parts) if parts else None


def _block_fully_visible(cfg: Config, i, j, mask, qlen, kvlen, segments):
    """Whether every (query, key) pair of block ``(i, j)`` is visible, so its mask can be skipped.

    Returns a traced bool; ``False`` (static) when a user mask is given (it is never checked
    for being all-True); ``None`` when nothing is masked at all.
    """
    if mask is not None:
        return False
    conds = [cfg.visibility.all_visible(i * cfg.bq, i * cfg.bq + cfg.bq - 1, j * cfg.bk, j * cfg.bk + cfg.bk - 1,
                                        query_seq_lengths=qlen, key_value_seq_lengths=cfg.key_lengths(kvlen))]
    if segments is not None:  # every row of the block and every key in one and the same segment
        q_seg, k_seg = segments
        first = q_seg[i][:, :1]
        conds.append(jnp.all(q_seg[i] == first) & jnp.all(k_seg[j] == first))
    conds = [c for c in conds if c is not None]
    return functools.reduce(jnp.logical_and, conds) if conds else None


# How a block is computed (the branches of the loops).
SKIP, MASKED, UNMASKED = 0, 1, 2


def _block_kind(cfg: Config, i, j, mask, qlen, kvlen, segments, blocks):
    """How block ``(i, j)`` is computed: :data:`SKIP`, :data:`MASKED` or :data:`UNMASKED`; a Python int when
    it is known at trace time, else a traced int32.

    A block is skipped when a ``mask_mod`` hides it entirely (``blocks``); it is computed without a mask
    when both the visibility rule (:func:`_block_fully_visible`) and the ``mask_mod`` show all of it. Under
    causality or a window most blocks are interior; building and applying their mask costs about as much as
    the softmax itself on CPU, so those blocks take the unmasked branch.
    """
    fully_visible = _block_fully_visible(cfg, i, j, mask, qlen, kvlen, segments)
    if blocks is None:
        if fully_visible is None or fully_visible is False:
            return MASKED
        return jnp.where(fully_visible, UNMASKED, MASKED)
    if fully_visible is False:
        full = False
    else:
        full = blocks[i, j] == flex.FULL
        full = full if fully_visible is None else full & fully_visible
    return jnp.where(blocks[i, j] == flex.EMPTY, SKIP, jnp.where(full, UNMASKED, MASKED))


def dropout_multiplier(rate: float, rng, i, j, shape, dtype=jnp.float32) -> jnp.ndarray | None:
    """``keep / (1 - rate)`` (``dtype``, ``shape``) for block ``(i, j)``, or None when ``rate == 0``.

    The mask depends on the block sizes (it is drawn per block), not only on ``rng``.
    """
    if not rate:
        return None
    keep = jax.random.bernoulli(jax.random.fold_in(jax.random.fold_in(rng, i), j), 1.0 - rate, shape)
    return jnp.where(keep, jnp.asarray(1.0 / (1.0 - rate), dtype), jnp.asarray(0.0, dtype))


def _block_scores(cfg: Config, q_i, k_j, i, j, bias):
    """Scaled, capped and biased logits ``[B, K, G*bq, bk]`` (``stat_dtype``) of block ``(i, j)``, before
    ``score_mod`` and masks, and the softcap's ``tanh`` (or None).

    ``q_i`` is already multiplied by the scale when :func:`~attnjax.ops.primitives.prescaled`.
    """
    acc = stat_dtype(q_i.dtype)
    s = jnp.einsum("bkqh,bksh->bkqs", q_i, k_j, preferred_element_type=acc)
    if not prescaled(q_i):
        s = s * jnp.asarray(cfg.scale, acc)
    t = None
    if cfg.logit_softcap is not None:
        t = jnp.tanh(s / cfg.logit_softcap)
        s = cfg.logit_softcap * t
    if bias is not None:
        B, K = s.shape[:2]
        s5 = s.reshape(B, K, cfg.G, cfg.bq, cfg.bk) + _slice_block(bias, i, j, cfg).astype(acc)
        s = s5.reshape(s.shape)
    return s, t


def _score_mod(cfg: Config, s, params, i, j):
    """``score_mod`` on every entry of block ``(i, j)``'s logits ``s [B, K, G*bq, bk]`` (rows ``g*bq + t``
    are query head ``k*G + g``, so the tile is ``[B, N, bq, bk]`` as it is)."""
    B, K = s.shape[:2]
    tile = s.reshape(B, K * cfg.G, cfg.bq, cfg.bk)
    return cfg.mods.scores(tile, params, _tile_indices(cfg, i, j, B, K)).reshape(s.shape)


def _score_mod_jvp(cfg: Config, s, ds, params, dparams, i, j):
    """``(score_mod(s), its tangent)`` for the tangents ``ds`` of the logits and ``dparams`` of the params
    (either may be None, a zero tangent)."""
    if ds is None and dparams is None:
        return _score_mod(cfg, s, params, i, j), None
    if dparams is None:
        return jax.jvp(lambda s: _score_mod(cfg, s, params, i, j), (s,), (ds,))
    if ds is None:
        return jax.jvp(lambda p: _score_mod(cfg, s, p, i, j), (params,), (dparams,))
    return jax.jvp(lambda s, p: _score_mod(cfg, s, p, i, j), (s, params), (ds, dparams))


def _mask_logits(cfg: Config, s, i, j, mask, qlen, kvlen, segments, mask_consts):
    """``(s with hidden entries at MASK_VALUE, visibility or None)`` for block ``(i, j)``."""
    B, K = s.shape[:2]
    visible = _block_mask(cfg, i, j, mask, qlen, kvlen, segments, mask_consts, B, K)
    if visible is None:
        return s, None
    s5 = jnp.where(visible, s.reshape(B, K, cfg.G, cfg.bq, cfg.bk), MASK_VALUE)
    return s5.reshape(s.shape), visible


def _block_logits(cfg: Config, q_i, k_j, i, j, bias, mask, qlen, kvlen, segments, params, mask_consts,
                  masked: bool = True):
    """Masked logits ``[B, K, G*bq, bk]`` (``stat_dtype``) of block ``(i, j)`` and the softcap's ``tanh``:
    :func:`_block_scores`, then ``score_mod``, then (``masked``) the masks.

    Returns:
        ``(logits, tanh_or_None)``; masked entries are exactly ``MASK_VALUE``.
    """
    s, t = _block_scores(cfg, q_i, k_j, i, j, bias)
    if cfg.has_score_mod:
        s = _score_mod(cfg, s, params, i, j)
    if masked:
        s, _ = _mask_logits(cfg, s, i, j, mask, qlen, kvlen, segments, mask_consts)
    return s, t


def _forward(cfg: Config, q, k, v, bias, mask, qlen, kvlen, rng, segments, params, blocks, mask_consts):
    """Returns ``out [nq, B, K, G*bq, Hv]`` (query dtype) and ``lse [nq, B, K, G*bq]`` (``stat_dtype``;
    ``-inf`` on rows with no visible key)."""
    acc_dtype = stat_dtype(q.dtype)

    def one_query_block(args):
        q_i, i = args
        rows = q_i.shape[:3]

        def body(j, carry):
            kind = _block_kind(cfg, i, j, mask, qlen, kvlen, segments, blocks)
            if isinstance(kind, int):
                return step(True, j, carry)
            if blocks is None:  # never skipped here: the loop bounds already leave out the hidden blocks
                return lax.cond(kind == UNMASKED, functools.partial(step, False), functools.partial(step, True), j,
                                carry)
            skip = lambda j, carry: carry
            return lax.switch(kind, (skip, functools.partial(step, True), functools.partial(step, False)), j, carry)

        def step(masked, j, carry):
            m, l, acc = carry
            s, _ = _block_logits(cfg, q_i, k[j], i, j, bias, mask, qlen, kvlen, segments, params, mask_consts,
                                 masked)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1))
            # While a row has seen only masked keys, m == MASK_VALUE and those keys get weight 1;
            # the first visible key makes alpha = exp(MASK_VALUE - m) = 0, which erases them.
            alpha = jnp.exp(m - m_new)
            p = jnp.exp(s - m_new[..., None])
            l = l * alpha + jnp.sum(p, axis=-1)
            z = dropout_multiplier(cfg.dropout_rate, rng, i, j, p.shape, acc_dtype)
            if z is not None:
                p = p * z
            pv = jnp.einsum("bkqs,bksh->bkqh", p.astype(v.dtype), v[j], preferred_element_type=acc_dtype)
            return m_new, l, acc * alpha[..., None] + pv

        init = (jnp.full(rows, MASK_VALUE, acc_dtype), jnp.zeros(rows, acc_dtype),
                jnp.zeros(rows + (v.shape[-1],), acc_dtype))
        init = tuple(cast_varying(x, axes) for x in init)
        lo, hi = _key_blocks(cfg, i, kvlen, blocks)
        m, l, acc = lax.fori_loop(lo, hi, body, init)
        has_key = m > MASK_VALUE
        safe_l = jnp.where(has_key, l, 1.0)
        out = jnp.where(has_key[..., None], acc / safe_l[..., None], 0.0)
        lse = jnp.where(has_key, m + jnp.log(safe_l), -jnp.inf)  # log of an empty sum
        return out.astype(q.dtype), lse

    axes = varying_axes(q, k, v, bias, mask, qlen, kvlen, rng, *(segments or ()), *jax.tree.leaves(params), blocks,
                         *mask_consts)
    q_in = q * jnp.asarray(cfg.scale, acc_dtype) if prescaled(q) else q
    return lax.map(one_query_block, (q_in, jnp.arange(cfg.nq, dtype=jnp.int32)))


def _blocked(x, cfg: Config):
    """A bias-shaped ``[B|1, K|1, G|1, Tp|1, Sp|1]`` array as ``[nq|1, nk|1, B|1, K|1, G|1, bq|1, bk|1]``:
    block ``(i, j)`` is ``[i, j]`` (``[0, ..]`` along a broadcast axis), so the loops take blocks as scan
    inputs and the transpose writes each block's cotangent once, instead of adding a full-size array."""
    b, k, g, t, s = x.shape
    nq, bq = (cfg.nq, cfg.bq) if t > 1 else (1, 1)
    nk, bk = (cfg.nk, cfg.bk) if s > 1 else (1, 1)
    return x.reshape(b, k, g, nq, bq, nk, bk).transpose(3, 5, 0, 1, 2, 4, 6)


def _tangent(cfg: Config, q, k, v, bias, mask, qlen, kvlen, rng, segments, params, blocks, mask_consts, out, lse,
             dq, dk, dv, dbias, dparams):
    """Tangents ``(d out [nq, B, K, G*bq, Hv], d lse [nq, B, K, G*bq])`` for input tangents ``dq, dk, dv``
    (blocked like ``q, k, v``), ``dbias`` (bias's shape) and ``dparams`` (``params``' structure); each may be
    None (a zero tangent).

    Linear in the tangents, and built only from operations JAX can transpose (``scan`` with a static
    trip count, ``switch``), so reverse mode is its transpose; every block body is a ``jax.checkpoint``,
    so that transpose recomputes ``P`` per block rather than storing it.
    """
    acc = stat_dtype(q.dtype)
    pre = prescaled(q)
    scale = jnp.asarray(cfg.scale, acc)
    q_in = q * scale if pre else q
    dq_in = dq * scale if pre and dq is not None else dq
    lse = lse_for_recompute(lse)
    axes = varying_axes(q, k, v, bias, mask, qlen, kvlen, rng, *(segments or ()), *jax.tree.leaves(params), blocks,
                         *mask_consts, out, dq, dk, dv, dbias, *jax.tree.leaves(dparams))
    db = None if dbias is None else _blocked(dbias, cfg)
    db_per_q = db is not None and db.shape[0] > 1
    db_per_k = db is not None and db.shape[1] > 1
    B, K = q.shape[1:3]
    tile = (B, K, cfg.G, cfg.bq, cfg.bk)

    def one_query_block(args):
        q_i, dq_i, lse_i, out_i, db_i, i = args
        if db is not None and not db_per_q:
            db_i = db[0]
        lo, hi = _key_blocks(cfg, i, kvlen, blocks)

        def block(masked, xs, carry):
            k_j, v_j, dk_j, dv_j, db_ij, j = xs
            mu, a = carry
            s, t = _block_scores(cfg, q_i, k_j, i, j, bias)
            # ds: tangent of the (capped, biased, score-modded) logits; masked entries have p == 0.
            parts = []
            if dq_i is not None:
                parts.append(jnp.einsum("bkqh,bksh->bkqs", dq_i, k_j, preferred_element_type=acc))
            if dk_j is not None:
                parts.append(jnp.einsum("bkqh,bksh->bkqs", q_i, dk_j, preferred_element_type=acc))
            ds = functools.reduce(jnp.add, parts) if parts else None
            if ds is not None and not pre:
                ds = ds * scale
            if ds is not None and t is not None:
                ds = ds * (1.0 - t * t)
            if db_ij is not None:
                ds5 = db_ij.astype(acc) if ds is None else ds.reshape(tile) + db_ij.astype(acc)
                ds = jnp.broadcast_to(ds5, tile).reshape(s.shape)
            if cfg.has_score_mod:
                s, ds = _score_mod_jvp(cfg, s, ds, params, dparams, i, j)
            if masked:
                s, visible = _mask_logits(cfg, s, i, j, mask, qlen, kvlen, segments, mask_consts)
                if visible is not None and ds is not None and cfg.has_score_mod:
                    # p == 0 there, but a score_mod's tangent need not be finite where the forward hides it.
                    ds = jnp.where(visible, ds.reshape(tile), 0.0).reshape(s.shape)
            p = jnp.exp(s - lse_i[..., None])
            z = dropout_multiplier(cfg.dropout_rate, rng, i, j, p.shape, acc)
            p_kept = p if z is None else p * z
            if ds is not None:
                mu = mu + jnp.sum(p * ds, axis=-1)
                a = a + jnp.einsum("bkqs,bksh->bkqh", (p_kept * ds).astype(v_j.dtype), v_j, preferred_element_type=acc)
            if dv_j is not None:
                a = a + jnp.einsum("bkqs,bksh->bkqh", p_kept.astype(v_j.dtype), dv_j, preferred_element_type=acc)
            return mu, a

        def body(carry, xs):
            j = xs[-1]
            if db_i is not None and not db_per_k:
                xs = xs[:4] + (db_i[0],) + xs[5:]
            # The forward's dynamic loop bounds cannot be transposed: visit every key block and skip
            # the hidden ones by branch.
            inside = (j >= lo) & (j < hi)
            kind = _block_kind(cfg, i, j, mask, qlen, kvlen, segments, blocks)
            skip = lambda xs, carry: carry
            if isinstance(kind, int):
                branches, index = (skip, functools.partial(block, True)), inside.astype(jnp.int32)
            else:
                branches = (skip, functools.partial(block, True), functools.partial(block, False))
                index = jnp.where(inside, kind, SKIP)
            return lax.switch(index, branches, xs, carry), None

        rows = q_i.shape[:3]
        init = tuple(cast_varying(x, axes) for x in (jnp.zeros(rows, acc), jnp.zeros(rows + (v.shape[-1],), acc)))
        xs = (k, v, dk, dv, db_i if db_per_k else None, jnp.arange(cfg.nk, dtype=jnp.int32))
        (mu, a), _ = lax.scan(jax.checkpoint(body, prevent_cse=False), init, xs)
        dout = a - mu[..., None] * out_i.astype(acc)
        return dout.astype(out_i.dtype), mu

    return lax.map(one_query_block, (q_in, dq_in, lse, out, db if db_per_q else None,
                                     jnp.arange(cfg.nq, dtype=jnp.int32)))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def flash_attention(cfg: Config, q, k, v, bias, mask, qlen, kvlen, rng, segments, params=None, blocks=None,
                    mask_consts=()):
    """Blockwise attention on the blocked layout: ``(out [nq, B, K, G*bq, Hv], lse [nq, B, K, G*bq])``.

    Both outputs are differentiable (the log-sum-exp is ``jax.nn``'s residual), in forward and reverse
    mode (module docstring), with respect to ``q``, ``k``, ``v``, ``bias`` and the ``score_mod`` ``params``."""
    return _forward(cfg, q, k, v, bias, mask, qlen, kvlen, rng, segments, params, blocks, mask_consts)


def _flash_jvp(cfg, primals, tangents):
    q, k, v, bias, mask, qlen, kvlen, rng, segments, params, blocks, mask_consts = primals
    # The primal through this function again, so that a transformation outside this one (jacfwd of
    # a jvp, the Hessian's jacfwd of jacrev) differentiates it by this rule too.
    out, lse = flash_attention(cfg, *primals)
    # Masks, lengths, the key and segment ids are not floating; zero tangents arrive symbolic.
    dq, dk, dv, dbias = (None if isinstance(t, SymbolicZero) else t for t in tangents[:4])
    dparams = flex.params_tangent(params, tangents[9]) if cfg.has_score_mod else None
    dout, dlse = _tangent(cfg, q, k, v, bias, mask, qlen, kvlen, rng, segments, params, blocks, mask_consts, out,
                          lse, dq, dk, dv, None if bias is None else dbias, dparams)
    return (out, lse), (dout, dlse)


flash_attention.defjvp(_flash_jvp, symbolic_zeros=True)
