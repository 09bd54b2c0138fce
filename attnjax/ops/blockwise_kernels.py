"""Forward and backward loops of blockwise attention, wired together with ``jax.custom_vjp``.

Everything here works on the blocked layout built by :mod:`attnjax.ops.blockwise`:

* ``q [nq, B, K, G*bq, H]``: query block ``i`` holds rows ``i*bq .. i*bq+bq-1`` of all ``G`` query
  heads of key/value head ``k`` (folded row index ``r = g*bq + t``);
* ``k [nk, B, K, bk, H]``, ``v [nk, B, K, bk, Hv]``;
* ``bias``/``mask`` ``[B|1, K|1, G|1, Tp|1, Sp|1]`` (``Tp = nq*bq``, ``Sp = nk*bk``);
* ``qlen``/``kvlen`` ``[B]`` int32 or None;
* ``rng``: a PRNG key when ``cfg.dropout_rate > 0``, else None;
* ``segments``: ``(q_seg [nq, B, bq], k_seg [nk, B, bk])`` int32 segment ids, or None.

The backward is flash-attention-2: one sweep over key blocks (``scan``, producing ``dK``/``dV`` per
block) with an inner loop over the query blocks that see it, accumulating ``dQ`` (and the bias
gradient) in place. Per block it recomputes ``P = exp(S - lse)`` and uses
``dS = P * (dP - rowsum(dO * O))``. No loop is differentiated by JAX, which is what allows
dynamic (data-dependent) loop bounds.

Dropout multiplies block ``(i, j)`` of ``P`` by ``Z = keep / (1 - rate)`` after the softmax
statistics (which stay those of the undropped ``P``), so ``O = (P * Z) V``. The keep mask is drawn
from ``fold_in(fold_in(rng, i), j)``, so the backward redraws exactly the forward's mask without
storing it; there ``dV = (P * Z)^T dO``, ``dP = Z * (dO V^T)`` and ``rowsum(dO * O)`` is still
``rowsum(P * dP)``, so ``dS`` keeps its form.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from attnjax.ops.primitives import MASK_VALUE, lse_for_recompute, prescaled, stat_dtype
from attnjax.ops.visibility import Visibility
from attnjax.ops.vma import cast_varying, varying_axes_of


@dataclasses.dataclass(frozen=True)
class Config:
    """Static description of one blockwise call (hashable; a ``custom_vjp`` non-differentiable arg).

    Attributes:
        T, S: true (unpadded) query and key lengths.
        G: query heads per key/value head.
        bq, bk: block sizes; ``Tp = nq*bq >= T`` and ``Sp = nk*bk >= S``.
        scale: logit multiplier.
        visibility: causality and local window (:class:`~attnjax.ops.visibility.Visibility`).
        logit_softcap: ``cap`` or None.
        dropout_rate: probability of dropping an attention weight (0: no dropout).
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


def _varying_axes(*xs) -> tuple[str, ...]:
    axes = set()
    for x in xs:
        if x is not None:
            axes |= varying_axes_of(x)
    return tuple(sorted(axes, key=str))


def _match_vma(grad, primal):
    """A cotangent with its primal's shard_map type: summed over the mesh axes along which the primal
    is replicated but its per-device gradient is not (a shared input's gradient is the sum)."""
    if grad is None:
        return None
    extra = tuple(sorted(varying_axes_of(grad) - varying_axes_of(primal)))
    if extra:
        grad = lax.psum(grad, extra)
    return cast_varying(grad, tuple(sorted(varying_axes_of(primal))))


def _to_blocks(lo, hi, size):
    """Positions ``[lo, hi)`` -> the blocks of ``size`` that hold them (an empty range stays empty)."""
    first = lo // size
    return first, jnp.where(hi > lo, (hi + size - 1) // size, first)


def key_block_range(cfg: Config, i, kvlen):
    """``[lo, hi)`` of key blocks with at least one key visible to some row of query block ``i``."""
    lo, hi = cfg.visibility.key_range(i * cfg.bq, i * cfg.bq + cfg.bq - 1, cfg.S, key_value_seq_lengths=kvlen)
    return _to_blocks(lo, hi, cfg.bk)


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


def _block_mask(cfg: Config, i, j, mask, qlen, kvlen, segments):
    """Boolean visibility of block ``(i, j)``, broadcastable to ``[B, K, G, bq, bk]``, or None."""
    visible = cfg.visibility.mask(i * cfg.bq + jnp.arange(cfg.bq), j * cfg.bk + jnp.arange(cfg.bk),
                                  query_seq_lengths=qlen, key_value_seq_lengths=cfg.key_lengths(kvlen))
    parts = [] if visible is None else [visible[:, None, None]]
    if mask is not None:
        parts.append(_slice_block(mask, i, j, cfg))
    if segments is not None:
        q_seg, k_seg = segments
        parts.append((q_seg[i][:, :, None] == k_seg[j][:, None, :])[:, None, None])
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


def _with_or_without_mask(fully_visible, fn, *args):
    """``fn(masked, *args)``, skipping the mask on fully visible blocks.

    Under causality or a window most blocks are interior; building and applying their mask costs
    about as much as the softmax itself on CPU, so those blocks take the unmasked branch.
    """
    if fully_visible is None or fully_visible is False:
        return fn(True, *args)
    return lax.cond(fully_visible, functools.partial(fn, False), functools.partial(fn, True), *args)


def dropout_multiplier(rate: float, rng, i, j, shape, dtype=jnp.float32) -> jnp.ndarray | None:
    """``keep / (1 - rate)`` (``dtype``, ``shape``) for block ``(i, j)``, or None when ``rate == 0``.

    The mask depends on the block sizes (it is drawn per block), not only on ``rng``.
    """
    if not rate:
        return None
    keep = jax.random.bernoulli(jax.random.fold_in(jax.random.fold_in(rng, i), j), 1.0 - rate, shape)
    return jnp.where(keep, jnp.asarray(1.0 / (1.0 - rate), dtype), jnp.asarray(0.0, dtype))


def _block_logits(cfg: Config, q_i, k_j, i, j, bias, mask, qlen, kvlen, segments, masked: bool = True):
    """Masked logits ``[B, K, G*bq, bk]`` (``stat_dtype``) of block ``(i, j)`` and the softcap's ``tanh``.

    ``q_i`` is already multiplied by the scale when :func:`~attnjax.ops.primitives.prescaled`.

    Returns:
        ``(logits, tanh_or_None)``; masked entries are exactly ``MASK_VALUE``.
    """
    acc = stat_dtype(q_i.dtype)
    s = jnp.einsum("bkqh,bksh->bkqs", q_i, k_j, preferred_element_type=acc)
    if not prescaled(q_i):
        s = s * jnp.asarray(cfg.scale, acc)
    t = None
    if cfg.logit_softcap is not None:
        t = jnp.tanh(s / cfg.logit_softcap)
        s = cfg.logit_softcap * t
    visible = _block_mask(cfg, i, j, mask, qlen, kvlen, segments) if masked else None
    if bias is None and visible is None:
        return s, t
    B, K = s.shape[:2]
    s5 = s.reshape(B, K, cfg.G, cfg.bq, cfg.bk)
    if bias is not None:
        s5 = s5 + _slice_block(bias, i, j, cfg).astype(acc)
    if visible is not None:
        s5 = jnp.where(visible, s5, MASK_VALUE)
    return s5.reshape(s.shape), t


def _forward(cfg: Config, q, k, v, bias, mask, qlen, kvlen, rng, segments):
    """Returns ``out [nq, B, K, G*bq, Hv]`` (query dtype) and ``lse [nq, B, K, G*bq]`` (``stat_dtype``;
    ``-inf`` on rows with no visible key)."""
    acc_dtype = stat_dtype(q.dtype)

    def one_query_block(args):
        q_i, i = args
        rows = q_i.shape[:3]

        def body(j, carry):
            return _with_or_without_mask(_block_fully_visible(cfg, i, j, mask, qlen, kvlen, segments), step, j,
                                         carry)

        def step(masked, j, carry):
            m, l, acc = carry
            s, _ = _block_logits(cfg, q_i, k[j], i, j, bias, mask, qlen, kvlen, segments, masked)
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
        lo, hi = key_block_range(cfg, i, kvlen)
        m, l, acc = lax.fori_loop(lo, hi, body, init)
        has_key = m > MASK_VALUE
        safe_l = jnp.where(has_key, l, 1.0)
        out = jnp.where(has_key[..., None], acc / safe_l[..., None], 0.0)
        lse = jnp.where(has_key, m + jnp.log(safe_l), -jnp.inf)  # log of an empty sum
        return out.astype(q.dtype), lse

    axes = _varying_axes(q, k, v, bias, mask, qlen, kvlen, rng, *(segments or ()))
    q_in = q * jnp.asarray(cfg.scale, acc_dtype) if prescaled(q) else q
    return lax.map(one_query_block, (q_in, jnp.arange(cfg.nq, dtype=jnp.int32)))


def _backward(cfg: Config, q, k, v, bias, mask, qlen, kvlen, rng, segments, out, lse, dout, dlse):
    """Gradients wrt ``q, k, v`` (input dtypes) and ``bias`` (``stat_dtype`` in bias's blocked shape, or None).

    ``dlse`` is the cotangent of the returned log-sum-exp: ``d lse / d s = P``, so it enters as
    ``dS = P * (dP - (rowsum(dO * O) - dlse))``.
    """
    acc = stat_dtype(q.dtype)
    delta = jnp.sum(dout.astype(acc) * out.astype(acc), axis=-1) - dlse.astype(acc)
    lse = lse_for_recompute(lse)
    axes = _varying_axes(q, k, v, bias, mask, qlen, kvlen, rng, *(segments or ()), out, lse, dout)
    B, K = q.shape[1:3]
    # dK and dV contract over query rows. CPU matmul kernels are ~3x slower when the left operand
    # contracts its row axis, so keep Q^T and dO^T ([.., H, G*bq]) and accumulate dK^T, dV^T instead.
    # The logit scale is applied once to the summed dQ and dK, not per block.
    q_dtype = q.dtype
    dk_scale = jnp.asarray(1.0 if prescaled(q) else cfg.scale, acc)
    q = q * jnp.asarray(cfg.scale, acc) if prescaled(q) else q
    q_t, dout_t = jnp.swapaxes(q, -1, -2), jnp.swapaxes(dout, -1, -2)

    def one_key_block(carry, j):
        dq, dbias = carry
        k_j, v_j = k[j], v[j]

        def block_grads(masked, i):
            """Contributions of block (i, j): dQ_i, dK_j^T, dV_j^T and the bias-gradient block."""
            q_i, do_i = q[i], dout[i]
            s, t = _block_logits(cfg, q_i, k_j, i, j, bias, mask, qlen, kvlen, segments, masked)
            p = jnp.exp(s - lse[i][..., None])
            z = dropout_multiplier(cfg.dropout_rate, rng, i, j, p.shape, acc)
            p_kept = p if z is None else p * z
            dv_c = jnp.einsum("bkhq,bkqs->bkhs", dout_t[i], p_kept.astype(do_i.dtype), preferred_element_type=acc)
            dp = jnp.einsum("bkqh,bksh->bkqs", do_i, v_j, preferred_element_type=acc)
            if z is not None:
                dp = dp * z
            ds = p * (dp - delta[i][..., None])  # gradient wrt the (capped, biased) logits
            db = None
            if bias is not None:
                ds5 = ds.reshape(B, K, cfg.G, cfg.bq, cfg.bk)
                sum_axes = tuple(a for a in range(5) if bias.shape[a] == 1 and ds5.shape[a] > 1)
                db = jnp.sum(ds5, axis=sum_axes, keepdims=True)
            if t is not None:
                ds = ds * (1.0 - t * t)
            dq_c = jnp.einsum("bkqs,bksh->bkqh", ds.astype(k_j.dtype), k_j, preferred_element_type=acc)
            dk_c = jnp.einsum("bkhq,bkqs->bkhs", q_t[i], ds.astype(q_i.dtype), preferred_element_type=acc)
            return dq_c, dk_c, dv_c, db

        def body(i, inner):
            dq, dbias, dk_j, dv_j = inner
            dq_c, dk_c, dv_c, db = _with_or_without_mask(
                _block_fully_visible(cfg, i, j, mask, qlen, kvlen, segments), block_grads, i)
            dq = lax.dynamic_update_index_in_dim(dq, dq[i] + dq_c, i, 0)
            if db is not None:
                starts = _block_starts(dbias, i, j, cfg)
                dbias = lax.dynamic_update_slice(dbias, lax.dynamic_slice(dbias, starts, db.shape) + db, starts)
            return dq, dbias, dk_j + dk_c, dv_j + dv_c

        t_shape = lambda x: x.shape[:2] + (x.shape[3], x.shape[2])
        init = (dq, dbias, cast_varying(jnp.zeros(t_shape(k_j), acc), axes),
                cast_varying(jnp.zeros(t_shape(v_j), acc), axes))
        lo, hi = query_block_range(cfg, j, qlen, kvlen)
        dq, dbias, dk_t_j, dv_t_j = lax.fori_loop(lo, hi, body, init)
        return (dq, dbias), (jnp.swapaxes(dk_t_j * dk_scale, -1, -2).astype(k.dtype),
                             jnp.swapaxes(dv_t_j, -1, -2).astype(v.dtype))

    dbias0 = None if bias is None else cast_varying(jnp.zeros(bias.shape, acc), axes)
    dq0 = cast_varying(jnp.zeros(q.shape, acc), axes)
    (dq, dbias), (dk, dv) = lax.scan(one_key_block, (dq0, dbias0),
                                     jnp.arange(cfg.nk, dtype=jnp.int32))
    return (dq * jnp.asarray(cfg.scale, acc)).astype(q_dtype), dk, dv, dbias


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def flash_attention(cfg: Config, q, k, v, bias, mask, qlen, kvlen, rng, segments):
    """Blockwise attention on the blocked layout: ``(out [nq, B, K, G*bq, Hv], lse [nq, B, K, G*bq])``.

    Both outputs are differentiable (the log-sum-exp is ``jax.nn``'s residual)."""
    return _forward(cfg, q, k, v, bias, mask, qlen, kvlen, rng, segments)


def _flash_fwd(cfg, q, k, v, bias, mask, qlen, kvlen, rng, segments):
    out, lse = _forward(cfg, q, k, v, bias, mask, qlen, kvlen, rng, segments)
    return (out, lse), (q, k, v, bias, mask, qlen, kvlen, rng, segments, out, lse)


def _flash_bwd(cfg, residuals, cotangents):
    q, k, v, bias, mask, qlen, kvlen, rng, segments, out, lse = residuals
    dout, dlse = cotangents
    dq, dk, dv, dbias = _backward(cfg, q, k, v, bias, mask, qlen, kvlen, rng, segments, out, lse, dout, dlse)
    if dbias is not None:
        dbias = dbias.astype(bias.dtype)
    dq, dk, dv, dbias = (_match_vma(g, x) for g, x in ((dq, q), (dk, k), (dv, v), (dbias, bias)))
    # Masks, lengths, the key and segment ids are not floating: None is their (symbolic zero) cotangent.
    return dq, dk, dv, dbias, None, None, None, None, None


flash_attention.defvjp(_flash_fwd, _flash_bwd)
