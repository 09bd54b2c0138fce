"""``attnjax.dot_product_attention``: the public entry point, a drop-in for ``jax.nn.dot_product_attention``.

It checks the arguments once, picks a path from the one table :data:`IMPLEMENTATIONS` and calls it.
The numerics every path shares are in :mod:`attnjax.ops.primitives`, the rule of which keys a query
sees in :mod:`attnjax.ops.visibility`, the paths in :mod:`attnjax.ops.dense`,
:mod:`attnjax.ops.blockwise` and :mod:`attnjax.ops.backends`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops import backends, checks, flex
from attnjax.ops.blockwise import as_block_sizes, blockwise_attention
from attnjax.ops.dense import dense_attention, dense_logits
from attnjax.ops.masks import combine_masks, segment_mask
from attnjax.ops.primitives import masked_softmax, stat_dtype


@dataclasses.dataclass(frozen=True)
class Path:
    """One implementation and what it can take beyond the common arguments.

    Attributes:
        fn: ``fn(query, key, value, bias, mask, *, scale, is_causal, query_seq_lengths,
            key_value_seq_lengths, window, logit_softcap, dropout_rate, dropout_rng, ...)`` on checked
            arguments (rank-4 mask and bias, batched inputs).
        block_sizes: takes ``block_sizes``.
        segment_ids: takes ``query_segment_ids``/``key_segment_ids`` itself (otherwise they become a mask).
        residual: takes ``return_residual`` and can return the log-sum-exp.
        flex: takes ``mods`` and ``score_mod_params`` (``score_mod``/``mask_mod``, :mod:`attnjax.ops.flex`).
    """

    fn: Callable[..., Any]
    block_sizes: bool = False
    segment_ids: bool = False
    residual: bool = False
    flex: bool = False


IMPLEMENTATIONS: dict[str, Path] = {
    "dense": Path(dense_attention, residual=True, flex=True),
    "blockwise": Path(blockwise_attention, block_sizes=True, segment_ids=True, residual=True, flex=True),
    "cudnn": Path(backends.cudnn_attention),
    "pallas": Path(backends.pallas_attention, block_sizes=True),
    "pallas_interpret": Path(backends.pallas_interpret_attention, block_sizes=True),
}

# jax.nn.dot_product_attention's name for its plain XLA path, accepted so calls written for jax.nn run.
IMPLEMENTATION_ALIASES = {"xla": "dense"}

# The paths that take ``block_sizes`` (for configs that validate it before any call).
TAKES_BLOCK_SIZES = frozenset(name for name, path in IMPLEMENTATIONS.items() if path.block_sizes)
# The paths that evaluate ``score_mod``/``mask_mod``.
TAKES_MODS = frozenset(name for name, path in IMPLEMENTATIONS.items() if path.flex)


def _check_arguments(query, key, value, bias, mask, *, scale, query_seq_lengths, key_value_seq_lengths,
                     local_window_size, logit_softcap, query_segment_ids=None, key_segment_ids=None):
    """Checks everything; returns ``(bias, mask, window)`` with bias and mask padded to rank 4."""
    checks.check_inputs(query, key, value, bias=bias, mask=mask, query_seq_lengths=query_seq_lengths,
                        key_value_seq_lengths=key_value_seq_lengths)
    checks.check_segment_ids(query_segment_ids, key_segment_ids, query, key)
    checks.check_positive("scale", scale)
    checks.check_positive("logit_softcap", logit_softcap)
    return checks.pad_to_rank4(bias), checks.pad_to_rank4(mask), checks.normalize_window(local_window_size)


def _with_segment_mask(mask, query_segment_ids, key_segment_ids):
    """``mask`` and-ed with the ``[B, 1, T, S]`` mask of equal segment ids (None ids: ``mask`` as is)."""
    if query_segment_ids is None:
        return mask
    key_ids = None if key_segment_ids is None else jnp.asarray(key_segment_ids)
    return combine_masks(mask, segment_mask(jnp.asarray(query_segment_ids), key_ids))


def _path_name(implementation: str | None) -> str | None:
    """The table name of ``implementation`` (aliases resolved); None stays None (chosen after the checks)."""
    if implementation is None:
        return None
    name = IMPLEMENTATION_ALIASES.get(implementation, implementation)
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {sorted({*IMPLEMENTATIONS, *IMPLEMENTATION_ALIASES})} "
                         f"or None, got {implementation!r}")
    return name


def _add_batch(x):
    return None if x is None else jnp.asarray(x)[None]


def _as_passed(error: Exception, arrays: dict[str, Any], unbatched: bool) -> Exception:
    """``error`` of a check, restated in the shapes the caller passed, with how a rank-3 input was read.

    Unbatched ``[T, N, H]`` inputs are checked with a batch of 1 added; the message then shows the
    caller's shapes instead of those, and says that rank 3 was read as unbatched, since a ``[B, T, D]``
    input (heads not split yet) is the usual cause.
    """
    message = str(error)
    shapes = {name: tuple(np.shape(x)) for name, x in arrays.items()}
    listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
    ranks = {len(shape) for shape in shapes.values()}
    if unbatched:
        for name, shape in shapes.items():
            message = message.replace(f"{name} {(1,) + shape}", f"{name} {shape}")
        message += (f" (as passed: {listed}; all of rank 3, so read as unbatched query [T, N, H] and key/value "
                    f"[S, K, H], as jax.nn does; a batched input has rank 4 [B, T, N, H], its features split into "
                    f"N heads of size H)")
    elif 3 in ranks and len(ranks) > 1:
        message += f" (as passed: {listed}; rank 3 means unbatched [T, N, H] only when all of them have rank 3)"
    else:
        return error
    return type(error)(message)


def _check_as_passed(passed: dict, unbatched: bool, *args, **kwargs):
    """:func:`_check_arguments`, its errors restated with the shapes the caller ``passed``."""
    try:
        return _check_arguments(*args, **kwargs)
    except (ValueError, TypeError) as error:
        restated = _as_passed(error, passed, unbatched)
        if restated is error:
            raise
        raise restated from None


def dot_product_attention(
    query: jnp.ndarray,
    key: jnp.ndarray,
    value: jnp.ndarray,
    bias: jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jnp.ndarray | None = None,
    key_value_seq_lengths: jnp.ndarray | None = None,
    query_segment_ids: jnp.ndarray | None = None,
    key_segment_ids: jnp.ndarray | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    logit_softcap: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    implementation: str | None = None,
    block_sizes: Any = None,
    return_residual: bool = False,
    score_mod: Callable[..., Any] | None = None,
    mask_mod: Callable[..., Any] | None = None,
    score_mod_params: Any = None,
) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
    """Scaled dot-product attention, ``softmax(scale * Q K^T + bias) V``, per head.

    Same layout and keywords as ``jax.nn.dot_product_attention``; ``K < N`` key/value heads give
    grouped-query attention (``K == 1``: multi-query). ``score_mod`` and ``mask_mod`` are PyTorch
    FlexAttention's hooks, computed inside the blockwise kernel (see below).

    Args:
        query: ``[B, T, N, H]`` (or ``[T, N, H]``), floating.
        key: ``[B, S, K, H]`` (or ``[S, K, H]``), same dtype as ``query``, ``N % K == 0``.
        value: ``[B, S, K, H]``, same shape and dtype as ``key``.
        bias: added to the logits, broadcastable to ``[B, N, T, S]``; lower ranks are left-padded
            (an ``[N, T, S]`` bias), as in ``jax.nn``.
        mask: boolean, ``True`` = attend, broadcastable to ``[B, N, T, S]``, left-padded like ``bias``.
        scale: logit multiplier, default ``1 / sqrt(H)``.
        is_causal: query ``i`` sees keys ``j <= i`` (top-left aligned, as ``jax.nn``).
        query_seq_lengths: ``[B]`` int; queries past the length output zeros.
        key_value_seq_lengths: ``[B]`` int; keys past the length are ignored.
        query_segment_ids: ``[B, T]`` int segment ids (packed sequences): a query sees only keys of
            its own segment, like ``mask=attnjax.ops.segment_mask(...)``. ``"blockwise"`` compares
            them per block and never builds the ``[B, 1, T, S]`` mask; the other paths build it.
        key_segment_ids: ``[B, S]`` int; default ``query_segment_ids`` (self-attention).
        local_window_size: ``w`` or ``(left, right)``: query ``i`` sees keys ``i-left..i+right``.
        logit_softcap: if set, logits are squashed to ``cap * tanh(logits / cap)`` before bias and masks.
        dropout_rate: dropout on the attention weights (inverted scaling); needs ``dropout_rng``.
        dropout_rng: PRNG key for dropout.
        implementation: ``None`` (best for the platform and shapes, see
            ``attnjax.ops.backends.select_implementation``), one of ``IMPLEMENTATIONS``, or ``"xla"``
            (``jax.nn``'s name for ``"dense"``). Every implementation takes forward mode (``jax.jvp``,
            ``jax.jacfwd``, ``jax.linearize``) and reverse mode (``jax.grad``, ``jax.vjp``, ``jax.jacrev``)
            at every length, and ``vmap`` of them. ``"dense"`` and ``"blockwise"``, the paths it picks off
            GPU/TPU, also take their compositions (``jax.hessian``, ``jax.jvp`` of ``jax.grad``). The
            ``"cudnn"`` and ``"pallas"`` kernels differentiate in reverse mode by their own backward and in
            forward mode by the blockwise kernel's tangent pass (``attnjax.ops.backends``); a derivative of a
            derivative through them raises ``NotImplementedError``.
        block_sizes: the tiles of the blocked paths (``"blockwise"``, ``"pallas"``): an
            ``attnjax.ops.BlockSizes`` or a ``(block_q, block_k)`` pair of ints. It is checked on every
            path and used only by those; the others (``"dense"``/``"xla"``, ``"cudnn"``, and
            ``implementation=None`` when it picks one of them) have no tiles and ignore it, so one
            ``functools.partial(dot_product_attention, block_sizes=...)`` can be swept over every
            implementation.
        return_residual: also return the per-row log-sum-exp of the (scaled, capped, biased, score-modded,
            masked) logits, as ``jax.nn`` does: ``[B, T, N]`` (``[T, N]`` unbatched) in the input dtype, like
            ``jax.nn`` (computed in float32, or float64 for float64 inputs, and rounded once); ``-inf`` on a
            row with no visible key. It is differentiable and takes cotangents of its own dtype. Only the
            ``"dense"`` and ``"blockwise"`` paths compute it.
        score_mod: ``score_mod(score, batch, head, q_idx, kv_idx, params) -> score``, written for one
            scalar logit and vectorized with ``jax.vmap`` (any scalar JAX code works inside). The order is
            ``scale * q.k``, ``logit_softcap``, ``+ bias``, ``score_mod``, then every mask, softmax and
            dropout: ``score`` is scaled, as in FlexAttention (a softcap wanted after the hook goes inside
            it), and in float32 (float64 for float64 inputs). The indices are int32 scalars: ``batch``
            (0 for unbatched inputs), ``head`` the *query* head in ``[0, N)``
            (its key/value head is ``head // (N // K)``), ``q_idx`` and ``kv_idx`` absolute positions, so
            position arrays can be indexed with them. It is evaluated on every entry, masked ones included
            (it must be finite there; hide keys with ``mask_mod``, not ``-inf``), before all masks.
        mask_mod: ``mask_mod(batch, head, q_idx, kv_idx) -> bool``, ``True`` = attend, and-ed with
            ``mask``, ``is_causal``, the window, the lengths and the segment ids. ``"blockwise"`` skips the
            tiles it hides entirely (block sparsity, like splash attention: a document mask runs only its
            diagonal tiles, ``q_idx >= kv_idx`` skips what ``is_causal=True`` skips); see
            ``attnjax.ops.flex.block_states`` for how the tiles are classified.
        score_mod_params: a pytree of arrays passed to ``score_mod`` as ``params`` (None otherwise), for
            what it learns (a slope per head, a bucket table, an MLP): gradients reach it on both paths.
            The hooks may also close over arrays, traced or not (segment ids, positions, even learned
            values): ``"blockwise"`` hoists them into explicit kernel arguments, so they work under
            ``jit`` and are differentiated like ``params``.

    The hooks run on ``"dense"`` (the reference: it materializes the modified ``[B, N, T, S]`` logits)
    and ``"blockwise"`` (per tile, never ``[N, T, S]``), forward and reverse mode; ``jax.jvp`` works on
    both. ``implementation=None`` picks one of these two; the others reject the hooks. Sequence-parallel
    ``attnjax.parallel.ring_attention`` takes them too (at global positions). They are Python
    callables, static to the kernel: pass the same function objects from call to call (not a new
    ``lambda`` each time) or an eager call recompiles; the ready-made ones (``attnjax.ops.alibi_score_mod``,
    ``t5_score_mod``, ``softcap_score_mod``, ``causal_mask_mod``, ``window_mask_mod``, ``segment_mask_mod``)
    re-express ``bias``, ``logit_softcap``, ``is_causal``, ``local_window_size`` and the segment ids.

    Returns:
        ``[B, T, N, H]`` in the query dtype (a query row with no visible key is zeros), or
        ``(output, residual)`` with ``return_residual``.

    A masked-out key's weight is an exact 0, but ``0 * NaN`` is NaN: **a NaN (or inf) in the value of a
    masked-out key still makes the output NaN**, on every path, as in ``jax.nn.dot_product_attention``. (A
    NaN in a masked-out *key* does not reach the output: its logit is replaced.) Zero padded values, e.g.
    ``jnp.where(valid[..., None, None], value, 0)``, if they may hold NaN.

    Raises:
        ValueError: malformed shapes, window, scale, softcap, dropout, block sizes or implementation name,
            ``return_residual``, ``score_mod`` or ``mask_mod`` on a path that does not compute it,
            ``score_mod_params`` without ``score_mod``, or a hook that does not return a scalar. Shapes are
            reported as passed; for rank-3 inputs the message says they were read as unbatched ``[T, N, H]``.
        TypeError: non-floating inputs, mismatched dtypes, non-boolean mask, non-integer lengths or
            segment ids, a hook that is not callable or has the wrong arity or return dtype.
        NotImplementedError: a second-order derivative through ``"cudnn"`` or ``"pallas"``.
    """
    name = _path_name(implementation)
    block_sizes = as_block_sizes(block_sizes)
    passed = {"query": query, "key": key, "value": value}
    # Like jax.nn, [T, N, H] inputs (all three unbatched) are accepted and returned unbatched.
    unbatched = all(np.ndim(x) == 3 for x in (query, key, value))
    if unbatched:
        query, key, value = (_add_batch(x) for x in (query, key, value))
        query_segment_ids, key_segment_ids = (ids if ids is None or np.ndim(ids) != 1 else _add_batch(ids)
                                              for ids in (query_segment_ids, key_segment_ids))
    query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)
    bias, mask, window = _check_as_passed(
        passed, unbatched, query, key, value, bias, mask, scale=scale, query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size,
        logit_softcap=logit_softcap, query_segment_ids=query_segment_ids, key_segment_ids=key_segment_ids)
    checks.check_dropout(dropout_rate, dropout_rng)
    mods = flex.check_mods(score_mod, mask_mod, score_mod_params, score_dtype=stat_dtype(query.dtype))
    if name is None:
        # Segment ids count as a mask: every path but "blockwise" receives them as one.
        name = backends.select_implementation(
            jax.default_backend(), query.shape, key.shape, value.shape, query.dtype, has_bias=bias is not None,
            has_mask=mask is not None or query_segment_ids is not None,
            has_seq_lengths=query_seq_lengths is not None or key_value_seq_lengths is not None,
            is_causal=is_causal, window=window, logit_softcap=logit_softcap, dropout_rate=float(dropout_rate),
            return_residual=return_residual, has_score_mod=score_mod is not None, has_mask_mod=mask_mod is not None)
    path = IMPLEMENTATIONS[name]
    extra = {}
    if mods is not None:
        if not path.flex:
            given = " and ".join(n for n, f in (("score_mod", score_mod), ("mask_mod", mask_mod)) if f is not None)
            raise ValueError(f"{given} needs implementation {' or '.join(map(repr, sorted(TAKES_MODS)))} (or None), "
                             f"the paths that evaluate it, got implementation={implementation!r}")
        extra.update(mods=mods, score_mod_params=score_mod_params)
    if path.segment_ids:
        extra.update(query_segment_ids=query_segment_ids, key_segment_ids=key_segment_ids)
    else:
        mask = _with_segment_mask(mask, query_segment_ids, key_segment_ids)
    if block_sizes is not None and path.block_sizes:
        extra["block_sizes"] = block_sizes
    if return_residual:
        if not path.residual:
            raise ValueError(f"return_residual=True needs implementation 'dense' or 'blockwise' (the paths that "
                             f"compute the log-sum-exp), got {name!r}")
        extra["return_residual"] = True
    out = path.fn(query, key, value, bias, mask, scale=scale, is_causal=is_causal,
                  query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                  window=window, logit_softcap=logit_softcap, dropout_rate=float(dropout_rate),
                  dropout_rng=dropout_rng, **extra)
    if return_residual:  # jax.nn returns it in the input dtype; the paths compute it in stat_dtype
        out = (out[0], out[1].astype(query.dtype))
    if unbatched:
        out = tuple(x[0] for x in out) if return_residual else out[0]
    return out


def attention_weights(
    query: jnp.ndarray,
    key: jnp.ndarray,
    bias: jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jnp.ndarray | None = None,
    key_value_seq_lengths: jnp.ndarray | None = None,
    query_segment_ids: jnp.ndarray | None = None,
    key_segment_ids: jnp.ndarray | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    logit_softcap: float | None = None,
    score_mod: Callable[..., Any] | None = None,
    mask_mod: Callable[..., Any] | None = None,
    score_mod_params: Any = None,
) -> jnp.ndarray:
    """The ``[B, N, T, S]`` attention probabilities of :func:`dot_product_attention`.

    Takes the same arguments (no value, dropout or implementation; ``score_mod``/``mask_mod`` included).
    Float32 (float64 for float64 inputs). Rows sum to 1, except rows with no visible key, which are all
    zeros. Unbatched ``[T, N, H]``/``[S, K, H]`` inputs give ``[N, T, S]``.
    """
    passed = {"query": query, "key": key}
    unbatched = np.ndim(query) == 3 and np.ndim(key) == 3
    query, key = (_add_batch(x) if unbatched else jnp.asarray(x) for x in (query, key))
    bias, mask, window = _check_as_passed(
        passed, unbatched, query, key, key, bias, mask, scale=scale, query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size,
        logit_softcap=logit_softcap, query_segment_ids=query_segment_ids, key_segment_ids=key_segment_ids)
    mods = flex.check_mods(score_mod, mask_mod, score_mod_params, score_dtype=stat_dtype(query.dtype))
    mask = _with_segment_mask(mask, query_segment_ids, key_segment_ids)
    logits, visible = dense_logits(query, key, bias, mask, scale=scale, is_causal=is_causal,
                                   query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                                   window=window, logit_softcap=logit_softcap, mods=mods,
                                   score_mod_params=score_mod_params)
    probs = masked_softmax(logits, visible)
    return probs[0] if unbatched else probs
