"""Memory-efficient (flash-attention-2 style) attention: ``implementation="blockwise"``.

Neither pass ever holds a ``[T, S]`` matrix. The forward loops over query blocks and, inside, over
key blocks with an online softmax (float32 running max ``m`` and sum ``l``); it saves only the
output and the float32 log-sum-exp per query row. Derivatives (:mod:`attnjax.ops.blockwise_kernels`,
a ``jax.custom_jvp``) come from a blockwise tangent pass that recomputes each block's probabilities
from that log-sum-exp instead of storing them; reverse mode is its transpose, the flash-attention
backward. Key blocks that causality, a local window, ``key_value_seq_lengths`` or a ``mask_mod`` mask
entirely are skipped (the forward never visits them; the derivative passes branch past them), so causal
attention does about half the work, and a document mask given as ``mask_mod`` does only the diagonal
blocks (:func:`attnjax.ops.flex.block_states` says how the ``mask_mod`` tiles are classified).

``score_mod`` and ``mask_mod`` (:mod:`attnjax.ops.flex`) are evaluated per tile on its positions, so a
positional bias (ALiBi, T5 buckets, FIRE) or a document mask never becomes a ``[B, N, T, S]`` array;
gradients reach the ``score_mod_params`` through the same blockwise derivative passes.

Layout inside the kernels: query heads are grouped under their key/value head and the group is
folded into the row axis of each matmul, ``q [nq, B, K, G*bq, H]`` against ``k [nk, B, K, bk, H]``,
so grouped-query attention never repeats keys or values in memory and every block is one batched
matmul over all heads at once. ``T`` and ``S`` are padded up to block multiples; padded keys are
masked and padded query rows dropped.

Numerics match :func:`attnjax.ops.dense.dense_attention` (see :mod:`attnjax.ops.primitives`): float32
statistics (float64 for float64 inputs), masked logits at the finite ``MASK_VALUE``, a query row with
no visible key returns zeros with zero gradients and a ``-inf`` log-sum-exp.

Forward and reverse mode both work at every length, and so do their compositions: ``jax.grad``,
``jax.jvp``, ``jax.jacfwd``, ``jax.jacrev``, ``jax.hessian`` and Hessian-vector products
``jax.jvp(jax.grad(f))``. Attention dropout draws its keep mask per block, so for one ``dropout_rng``
it differs from the dense path's mask (and changes with the block sizes); it is redrawn, not stored,
by the derivative passes. Works under ``jit``, ``vmap`` and ``jax.shard_map`` (with the VMA check on).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from attnjax.ops import blockwise_kernels as kernels
from attnjax.ops import checks, flex
from attnjax.ops.primitives import stat_dtype
from attnjax.ops.visibility import Visibility


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes of the blockwise path (hashable: usable as a ``jax.jit`` static argument).

    A block never exceeds the sequence: ``min(block_q, T)`` and ``min(block_k, S)`` are used, and
    the sequence is padded up to a multiple of that. The defaults were measured on a 2-core AVX2
    CPU (float32, H=64, N=8, T=S=1024..4096, forward+backward): 512x256 gave T=4096 non-causal
    986 ms vs 1062 ms for 256x512 (causal 652 vs 807 ms); the timings are not monotone in either size
    (256x256: 1644 ms, 1024x128: 1026 ms), so re-measure on other hardware. A
    ``[K, G*block_q, block_k]`` float32 score tile (4 MiB here) should stay within cache. On GPU/TPU
    prefer the ``"cudnn"``/``"pallas"`` kernels (see TPU_NOTES.md).

    Attributes:
        block_q: query rows per block (all heads of a block are processed together).
        block_k: keys per block.
    """

    block_q: int = 512
    block_k: int = 256

    def __post_init__(self):
        for name in ("block_q", "block_k"):
            checks.check_positive_int(f"BlockSizes.{name}", getattr(self, name))


def as_block_sizes(block_sizes: Any) -> BlockSizes | None:
    """``block_sizes`` as a :class:`BlockSizes`: one as is, a ``(block_q, block_k)`` pair of ints >= 1 as
    ``BlockSizes(block_q, block_k)``, None as None.

    Raises:
        ValueError: anything else, naming ``block_sizes`` and the value.
    """
    if block_sizes is None or isinstance(block_sizes, BlockSizes):
        return block_sizes
    if isinstance(block_sizes, (tuple, list)) and len(block_sizes) == 2:
        try:
            return BlockSizes(*block_sizes)
        except ValueError:
            pass
    raise ValueError(f"block_sizes must be an attnjax.ops.BlockSizes or a (block_q, block_k) pair of ints >= 1, "
                     f"got {block_sizes!r}")


def _split_heads(x: jnp.ndarray | None, K: int, G: int, pad: tuple[int, int], fill: Any) -> jnp.ndarray | None:
    """``[B|1, N|1, T|1, S|1]`` -> ``[B|1, K|1, G|1, Tp|1, Sp|1]``, padding only the axes that are not 1."""
    if x is None:
        return None
    x = jnp.asarray(x)
    b, n, t, s = x.shape
    x = x.reshape(b, K, G, t, s) if n > 1 else x.reshape(b, 1, 1, t, s)
    pad_t = pad[0] if t > 1 else 0
    pad_s = pad[1] if s > 1 else 0
    if pad_t or pad_s:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, pad_t), (0, pad_s)), constant_values=fill)
    return x


@functools.partial(jax.jit, static_argnames=("scale", "visibility", "logit_softcap", "dropout_rate", "block_sizes",
                                             "mods"))
def _blockwise(query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths, dropout_rng,
               query_segment_ids, key_segment_ids, score_mod_params, *, scale, visibility, logit_softcap, dropout_rate,
               block_sizes, mods):
    """``(out [B, T, N, Hv], lse [B, T, N])``."""
    B, T, N, H = query.shape
    S, K, Hv = key.shape[1], key.shape[2], value.shape[3]
    G = N // K
    bq, bk = min(block_sizes.block_q, T), min(block_sizes.block_k, S)
    nq, nk = -(-T // bq), -(-S // bk)
    pad_t, pad_s = nq * bq - T, nk * bk - S

    q = jnp.pad(query, ((0, 0), (0, pad_t), (0, 0), (0, 0)))
    q = q.reshape(B, nq, bq, K, G, H).transpose(1, 0, 3, 4, 2, 5).reshape(nq, B, K, G * bq, H)
    k = jnp.pad(key, ((0, 0), (0, pad_s), (0, 0), (0, 0))).reshape(B, nk, bk, K, H).transpose(1, 0, 3, 2, 4)
    v = jnp.pad(value, ((0, 0), (0, pad_s), (0, 0), (0, 0))).reshape(B, nk, bk, K, Hv).transpose(1, 0, 3, 2, 4)
    bias5 = _split_heads(bias, K, G, (pad_t, pad_s), 0.0)
    mask5 = _split_heads(mask, K, G, (pad_t, pad_s), False)
    qlen = None if query_seq_lengths is None else jnp.asarray(query_seq_lengths, jnp.int32)
    # Clamped once here so the block loops can compare positions against it directly.
    kvlen = None if key_value_seq_lengths is None else jnp.minimum(jnp.asarray(key_value_seq_lengths, jnp.int32), S)

    acc = stat_dtype(query.dtype)
    config = kernels.Config(T=T, S=S, G=G, bq=bq, bk=bk, scale=float(checks.default_scale(scale, H)),
                            visibility=visibility, logit_softcap=logit_softcap,
                            dropout_rate=dropout_rate)
    rng = dropout_rng if dropout_rate else None
    segments = None
    if query_segment_ids is not None:
        # [B, T] -> [nq, B, bq]; padded positions get ids of their own (they are masked or dropped anyway).
        blocked = lambda ids, pad, n, size, fill: jnp.pad(jnp.asarray(ids, jnp.int32), ((0, 0), (0, pad)),
                                                          constant_values=fill).reshape(B, n, size).transpose(1, 0, 2)
        key_ids = query_segment_ids if key_segment_ids is None else key_segment_ids
        segments = (blocked(query_segment_ids, pad_t, nq, bq, -1), blocked(key_ids, pad_s, nk, bk, -2))
    blocks, params, mask_consts = None, None, ()
    if mods is not None:
        # Values the hooks close over (segment ids, positions: tracers under jit) cross the custom_jvp
        # boundary as arguments.
        axes = kernels.varying_axes(query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths, rng,
                                    query_segment_ids, key_segment_ids, *jax.tree.leaves(score_mod_params))
        mods, params, mask_consts = flex.with_explicit_closures(mods, score_mod_params, score_dtype=acc, axes=axes)
        config = dataclasses.replace(config, mods=mods)
        if mods.mask_mod is not None:
            blocks = flex.block_states(mods, B=B, N=N, T=T, S=S, bq=bq, bk=bk, consts=mask_consts)
    # out [nq, B, K, G*bq, Hv] and lse [nq, B, K, G*bq] back to [B, T, N, Hv] and [B, T, N].
    out, lse = kernels.flash_attention(config, q, k, v, bias5, mask5, qlen, kvlen, rng, segments, params, blocks,
                                       mask_consts)
    out = out.reshape(nq, B, K, G, bq, Hv).transpose(1, 0, 4, 2, 3, 5).reshape(B, nq * bq, N, Hv)
    lse = lse.reshape(nq, B, K, G, bq).transpose(1, 0, 4, 2, 3).reshape(B, nq * bq, N)
    return out[:, :T], lse[:, :T]


def blockwise_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                        query_seq_lengths=None, key_value_seq_lengths=None, window=None, logit_softcap=None,
                        dropout_rate=0.0, dropout_rng=None, block_sizes: BlockSizes | None = None,
                        query_segment_ids=None, key_segment_ids=None, return_residual: bool = False,
                        mods: flex.Mods | None = None, score_mod_params: Any = None):
    """Blockwise attention on already-checked arguments (the ``"blockwise"`` implementation).

    Args:
        query: ``[B, T, N, H]``.
        key: ``[B, S, K, H]``, ``N % K == 0``.
        value: ``[B, S, K, Hv]``.
        bias: floating, broadcastable to ``[B, N, T, S]``; differentiable (its gradient has its own,
            possibly broadcast, shape).
        mask: boolean, broadcastable to ``[B, N, T, S]``, ``True`` = attend.
        scale: logit multiplier, default ``1 / sqrt(H)``.
        is_causal: query ``i`` sees keys ``j <= i``; fully masked key blocks are skipped.
        query_seq_lengths: ``[B]`` int; rows past the length are zeros.
        key_value_seq_lengths: ``[B]`` int; keys past the length are ignored (and blocks past the
            longest length skipped).
        window: ``(left, right)`` local window or None; blocks outside it are skipped.
        logit_softcap: ``cap * tanh(logits / cap)`` before bias and masks.
        dropout_rate: probability of dropping each attention weight (inverted scaling).
        dropout_rng: PRNG key, needed when ``dropout_rate > 0``.
        block_sizes: :class:`BlockSizes` or a ``(block_q, block_k)`` pair, default ``BlockSizes()``.
        query_segment_ids: ``[B, T]`` int; a query sees only keys of its own segment (packed
            sequences), compared per block, so no ``[T, S]`` mask is built.
        key_segment_ids: ``[B, S]`` int; default ``query_segment_ids``.
        return_residual: also return the ``[B, T, N]`` log-sum-exp (``-inf`` on rows with no visible key),
            float32 (float64 for float64 inputs).
        mods: checked ``score_mod``/``mask_mod`` (:func:`attnjax.ops.flex.check_mods`), applied per tile;
            tiles the ``mask_mod`` hides entirely are skipped.
        score_mod_params: the pytree passed to ``score_mod`` as ``params``; differentiable.

    Returns:
        ``[B, T, N, Hv]`` in the query dtype, or ``(output, residual)``.

    Raises:
        ValueError: ``block_sizes`` neither a :class:`BlockSizes` nor a pair of ints >= 1.
    """
    block_sizes = BlockSizes() if block_sizes is None else as_block_sizes(block_sizes)
    out, lse = _blockwise(query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths,
                          dropout_rng if dropout_rate else None, query_segment_ids, key_segment_ids,
                          score_mod_params if mods is not None else None,
                          scale=None if scale is None else float(scale),
                          visibility=Visibility(bool(is_causal), None if window is None else tuple(window)),
                          logit_softcap=None if logit_softcap is None else float(logit_softcap),
                          dropout_rate=float(dropout_rate), block_sizes=block_sizes, mods=mods)
    return (out, lse) if return_residual else out
