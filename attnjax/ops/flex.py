"""FlexAttention-style hooks of :func:`attnjax.dot_product_attention`: ``score_mod`` and ``mask_mod``.

* ``score_mod(score, batch, head, q_idx, kv_idx, params) -> score`` rewrites one logit;
* ``mask_mod(batch, head, q_idx, kv_idx) -> bool`` says whether query ``q_idx`` may see key ``kv_idx``.

Both are written for one scalar entry (PyTorch FlexAttention's convention, plus an explicit ``params``
pytree so that learned parameters get gradients) and vectorized here with nested ``jax.vmap``, so any
scalar JAX code works inside: arithmetic, ``jnp.where``, ``lax.cond``, table lookups, a small MLP. The
indices are int32 scalars: ``batch`` in ``[0, B)``, ``head`` the *query* head in ``[0, N)`` (under
grouped-query attention its key/value head is ``head // (N // K)``), and ``q_idx``/``kv_idx`` absolute
positions in ``[0, T)``/``[0, S)``, so a position array (randomized positions, segment ids) can be
indexed with them. The blocked kernel pads ``T`` and ``S`` to whole tiles; the hooks never see a padded
position (indices are clamped to the last real one, and padded entries are hidden or dropped anyway).

Ready-made hooks return a :class:`ScoreMod` (a ``(score_mod, score_mod_params)`` pair) or a ``mask_mod``,
each next to the materialized form it re-expresses and sharing its formula:
:func:`attnjax.ops.positional.alibi_score_mod`, :func:`attnjax.ops.positional.t5_score_mod`,
:func:`softcap_score_mod` (here), :func:`attnjax.ops.masks.segment_mask_mod`,
:func:`attnjax.ops.masks.window_mask_mod` and :func:`attnjax.ops.masks.causal_mask_mod`.

This module checks the hooks (:func:`check_mods`), evaluates them on a grid of positions
(:class:`Mods`), computes which tiles of the blockwise kernel a ``mask_mod`` hides entirely
(:func:`block_states`) and turns what the hooks close over into explicit arguments of the kernel's
``custom_jvp`` (:func:`with_explicit_closures`). The paths apply them: :mod:`attnjax.ops.dense` on the
full ``[B, N, T, S]`` logits, :mod:`attnjax.ops.blockwise_kernels` per tile, and ring attention
(:mod:`attnjax.parallel.ring_kernels`) per tile at the global positions a device holds at each ring step.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import ClosedJaxpr, Var, jaxpr_as_fun

from attnjax.ops.checks import check_positive
from attnjax.ops.primitives import softcap
from attnjax.ops.vma import cast_varying

SCORE_MOD_SIGNATURE = "score_mod(score, batch, head, q_idx, kv_idx, params) -> score"
MASK_MOD_SIGNATURE = "mask_mod(batch, head, q_idx, kv_idx) -> bool"

# Block states of :func:`block_states`.
EMPTY, PARTIAL, FULL = 0, 1, 2


class ScoreMod(NamedTuple):
    """A ``score_mod`` with the params it reads: ``dot_product_attention(..., **hook.keywords())``, or unpack
    it, ``score_mod, params = hook``.

    Attributes:
        score_mod: ``score_mod(score, batch, head, q_idx, kv_idx, params) -> score``; the ready-made ones are
            frozen dataclasses, equal (and hashed equal) when their options are, so jit caches hold.
        score_mod_params: the pytree passed as ``params`` (None when it reads none); differentiable.
    """

    score_mod: Callable[..., Any]
    score_mod_params: Any = None

    def keywords(self) -> dict[str, Any]:
        """``{"score_mod": ..., "score_mod_params": ...}``, the keywords of :func:`attnjax.dot_product_attention`
        (and of ``ring_attention``)."""
        return {"score_mod": self.score_mod, "score_mod_params": self.score_mod_params}


@dataclasses.dataclass(frozen=True)
class SoftcapScoreMod:
    """``score_mod`` form of ``logit_softcap``: ``cap * tanh(score / cap)``
    (:func:`attnjax.ops.primitives.softcap`)."""

    cap: float

    def __call__(self, score, batch, head, q_idx, kv_idx, params):
        return softcap(score, self.cap)


def softcap_score_mod(cap: float) -> ScoreMod:
    """``logit_softcap=cap`` as a :class:`ScoreMod` (no params).

    Without a ``bias`` it equals ``logit_softcap=cap``. With one they differ: ``logit_softcap`` caps the scaled
    logits *before* ``bias`` is added, this hook caps the biased logits (it runs after ``bias``).

    Raises:
        ValueError: ``cap`` not a finite number > 0.
    """
    check_positive("cap", cap)
    return ScoreMod(SoftcapScoreMod(float(cap)))


@dataclasses.dataclass(frozen=True)
class Mods:
    """Checked hooks (hashable by the functions' identity: a static argument of jitted kernels).

    Attributes:
        score_mod: ``score_mod(score, batch, head, q_idx, kv_idx, params) -> score`` or None.
        mask_mod: ``mask_mod(batch, head, q_idx, kv_idx) -> bool`` or None.
        mask_uses: which of ``(batch, head, q_idx, kv_idx)`` the ``mask_mod`` reads (found from its
            jaxpr), so a mask of ``q_idx`` and ``kv_idx`` only is evaluated on ``[T, S]`` positions and
            broadcast, not on ``[B, N, T, S]``.
    """

    score_mod: Callable[..., Any] | None = None
    mask_mod: Callable[..., Any] | None = None
    mask_uses: tuple[bool, bool, bool, bool] = (True, True, True, True)

    def scores(self, score: jax.Array, params: Any, indices: Sequence[jax.Array]) -> jax.Array:
        """``score_mod`` on every entry of ``score [B, N, Tq, Sk]`` (the dtype is kept).

        Args:
            score: logits, ``[B, N, Tq, Sk]``.
            params: the ``score_mod_params`` pytree (a differentiable argument here, not a closure).
            indices: ``(batch [B], head [N], q_idx [Tq], kv_idx [Sk])`` int32.
        """
        fn = lambda s, b, h, q, kv: jnp.asarray(self.score_mod(s, b, h, q, kv, params))
        for axis in reversed(range(4)):
            fn = jax.vmap(fn, in_axes=(0,) + tuple(0 if a == axis else None for a in range(4)))
        return fn(score, *indices).astype(score.dtype)

    def mask(self, indices: Sequence[jax.Array], consts: Sequence[Any] = ()) -> jax.Array:
        """``mask_mod`` on the grid of ``indices = (batch [B], head [N], q_idx [Tq], kv_idx [Sk])``:
        bool ``[B|1, N|1, Tq|1, Sk|1]``, with 1 along every index the ``mask_mod`` does not read. ``consts``
        are passed after the indices (the closed-over values of a :func:`with_explicit_closures` hook)."""
        fn = lambda b, h, q, kv: jnp.asarray(self.mask_mod(b, h, q, kv, *consts), jnp.bool_)
        args = [ix if used else jnp.zeros((), jnp.int32) for ix, used in zip(indices, self.mask_uses)]
        for axis in reversed(range(4)):
            if self.mask_uses[axis]:
                fn = jax.vmap(fn, in_axes=tuple(0 if a == axis else None for a in range(4)))
        shape = tuple(ix.shape[0] if used else 1 for ix, used in zip(indices, self.mask_uses))
        return jnp.reshape(fn(*args), shape)


class WithMods:
    """Mixin of the kernels' frozen configs that hold ``mods: Mods | None``: which hooks they carry."""

    @property
    def has_score_mod(self) -> bool:
        return self.mods is not None and self.mods.score_mod is not None

    @property
    def has_mask_mod(self) -> bool:
        return self.mods is not None and self.mods.mask_mod is not None


def _check_callable(name: str, fn: Any, signature: str, arity: int) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be a callable {signature}, got {type(fn).__name__}: {fn!r}")
    try:
        parameters = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C callables have no signature: let the trace decide
        return
    try:
        parameters.bind(*range(arity))
    except TypeError:
        hint = (" (PyTorch FlexAttention's score_mod takes 5; wrap it as "
                "lambda score, b, h, q_idx, kv_idx, params: f(score, b, h, q_idx, kv_idx))" if arity == 6 else "")
        raise TypeError(f"{name} must take {arity} positional arguments, {signature}, got a callable with "
                        f"signature {parameters}{hint}") from None


def _used_inputs(closed_jaxpr) -> tuple[bool, ...]:
    """Which inputs of ``closed_jaxpr`` its outputs depend on (equations with side effects count as used;
    an equation that uses any input of a sub-computation is taken to use all of them)."""
    jaxpr = closed_jaxpr.jaxpr
    needed = {v for v in jaxpr.outvars if isinstance(v, Var)}
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in needed for v in eqn.outvars):
            needed.update(v for v in eqn.invars if isinstance(v, Var))
    return tuple(v in needed for v in jaxpr.invars)


def check_mods(score_mod: Any, mask_mod: Any, score_mod_params: Any, *, score_dtype: Any) -> Mods | None:
    """Checks the hooks once, by tracing them on scalars; returns :class:`Mods`, or None without hooks.

    Args:
        score_mod: None or a callable ``score_mod(score, batch, head, q_idx, kv_idx, params) -> score``.
        mask_mod: None or a callable ``mask_mod(batch, head, q_idx, kv_idx) -> bool``.
        score_mod_params: None or a pytree of arrays, passed to ``score_mod`` as ``params``.
        score_dtype: the dtype of the logits ``score_mod`` receives (float32, or float64 in x64 mode).

    Raises:
        TypeError: a hook that is not callable, takes the wrong number of arguments, or returns the wrong
            dtype (a non-floating score, a non-boolean mask); params leaves that are not arrays.
        ValueError: ``score_mod_params`` without ``score_mod``, or a hook that does not return a scalar.
    """
    if score_mod_params is not None and score_mod is None:
        raise ValueError(f"score_mod_params is passed to score_mod, but score_mod is None (got score_mod_params "
                         f"of type {type(score_mod_params).__name__}); pass score_mod={SCORE_MOD_SIGNATURE}")
    if score_mod is None and mask_mod is None:
        return None
    index = jax.ShapeDtypeStruct((), jnp.int32)
    if score_mod is not None:
        _check_callable("score_mod", score_mod, SCORE_MOD_SIGNATURE, 6)
        for path, leaf in jax.tree_util.tree_leaves_with_path(score_mod_params):
            if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float)) or isinstance(leaf, bool):
                raise TypeError(f"score_mod_params leaves must be arrays or numbers, got "
                                f"{type(leaf).__name__} at score_mod_params{jax.tree_util.keystr(path)}")
        out = jax.eval_shape(score_mod, jax.ShapeDtypeStruct((), score_dtype), index, index, index, index,
                             score_mod_params)
        if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
            shape = getattr(out, "shape", type(out).__name__)
            raise ValueError(f"score_mod must return one scalar score (it is called per entry, {SCORE_MOD_SIGNATURE}, "
                             f"and vectorized with jax.vmap), got {shape}")
        if not jnp.issubdtype(out.dtype, jnp.floating):
            raise TypeError(f"score_mod must return a floating score, got dtype {out.dtype}")
    uses = (True, True, True, True)
    if mask_mod is not None:
        _check_callable("mask_mod", mask_mod, MASK_MOD_SIGNATURE, 4)
        traced = jax.make_jaxpr(mask_mod)(index, index, index, index)
        avals = traced.out_avals
        if len(avals) != 1 or avals[0].shape != ():
            raise ValueError(f"mask_mod must return one scalar bool (it is called per entry, {MASK_MOD_SIGNATURE}, "
                             f"and vectorized with jax.vmap), got {[a.shape for a in avals]}")
        if avals[0].dtype != jnp.bool_:
            raise TypeError(f"mask_mod must return a bool (True = attend), got dtype {avals[0].dtype}")
        uses = _used_inputs(traced)
    return Mods(score_mod, mask_mod, uses)


def with_explicit_closures(mods: Mods, params: Any, *, score_dtype: Any, axes: Iterable = ()
                           ) -> tuple[Mods, Any, tuple]:
    """The hooks with every value they close over made an explicit argument, for a ``custom_jvp`` kernel.

    A hook may close over arrays: segment ids, a position array, even a learned value. Inside ``jax.jit``
    those are tracers, and a ``custom_jvp`` rule cannot see (or differentiate) values hidden in a closure.
    Each hook is traced once to a jaxpr on scalar arguments and its constants are returned as arguments,
    like ``jax.closure_convert`` but hoisting integer constants too (a closed-over integer tracer would
    otherwise leak into the derivative's jaxpr).

    Under ``jax.shard_map`` a jaxpr replays the varying-axes casts recorded when it was traced, so its
    inputs must vary over the same mesh axes then and when it runs: the hooks are traced with their
    arguments (score, indices, params) varying over ``axes`` and cast to ``axes`` on every call.

    Args:
        mods: checked hooks.
        params: the ``score_mod_params`` pytree.
        score_dtype: dtype of the logits.
        axes: mesh axes that any value of the kernel varies over (none outside ``shard_map``).

    Returns:
        ``(mods, score_params, mask_consts)``: hooks ``score_mod(s, b, h, q, kv, score_params)`` with
        ``score_params = (params, score consts)`` (so the score's constants are differentiated with the
        params) and ``mask_mod(b, h, q, kv, *mask_consts)``.
    """
    vary = lambda tree: jax.tree.map(lambda x: cast_varying(x, axes), tree)
    index = vary(jnp.zeros((), jnp.int32))
    converted = Mods(None, None, mods.mask_uses)
    score_params, mask_consts = None, ()
    if mods.score_mod is not None:
        traced = jax.make_jaxpr(mods.score_mod)(vary(jnp.zeros((), score_dtype)), index, index, index, index,
                                                vary(params))

        def score_mod(s, b, h, q, kv, params_and_consts):
            p, consts = params_and_consts
            args = vary((s, b, h, q, kv, *jax.tree.leaves(p)))
            return jaxpr_as_fun(ClosedJaxpr(traced.jaxpr, list(consts)))(*args)[0]

        converted = dataclasses.replace(converted, score_mod=score_mod)
        score_params = (params, tuple(traced.consts))
    if mods.mask_mod is not None:
        traced_mask = jax.make_jaxpr(mods.mask_mod)(index, index, index, index)

        def mask_mod(b, h, q, kv, *consts):
            return jaxpr_as_fun(ClosedJaxpr(traced_mask.jaxpr, list(consts)))(*vary((b, h, q, kv)))[0]

        converted = dataclasses.replace(converted, mask_mod=mask_mod)
        mask_consts = tuple(traced_mask.consts)
    return converted, score_params, mask_consts


def tile_indices(first: Any, size: int, length: int) -> jax.Array:
    """int32 positions ``first .. first + size - 1``, clamped to ``length - 1`` (a tile's padded tail)."""
    return jnp.minimum(jnp.asarray(first, jnp.int32) + jnp.arange(size, dtype=jnp.int32), length - 1)


def block_states(mods: Mods, *, B: int, N: int, T: int, S: int, bq: int, bk: int, consts: Sequence[Any] = ()
                 ) -> jax.Array:
    """int32 ``[nq, nk]``: for each ``bq x bk`` tile, whether ``mask_mod`` hides all of it (:data:`EMPTY`),
    part of it (:data:`PARTIAL`) or none of it (:data:`FULL`), over every batch row and head.

    The kernel skips EMPTY tiles (never computes their logits) and skips applying the mask on FULL ones,
    like splash attention's block-sparse masks; causality, windows and lengths are handled by their own
    rule and combined with this one. Because ``mask_mod`` is an arbitrary function of traced data (segment
    ids), the states are computed exactly, by evaluating it on every tile of the grid (a ``lax.map`` over
    the ``nq * nk`` tiles): ``T * S`` boolean evaluations, times ``B`` and ``N`` only if the mask reads
    ``batch``/``head`` (:attr:`Mods.mask_uses`). That is about ``1 / (4 H)`` of the attention matmuls'
    work, holds one tile of booleans at a time, and is done once per call: the forward and both
    derivative passes reuse the ``[nq, nk]`` result.
    """
    nq, nk = -(-T // bq), -(-S // bk)
    batch, head = jnp.arange(B, dtype=jnp.int32), jnp.arange(N, dtype=jnp.int32)

    def one_tile(ij):
        i, j = ij // nk, ij % nk
        visible = mods.mask((batch, head, tile_indices(i * bq, bq, T), tile_indices(j * bk, bk, S)), consts)
        return jnp.where(jnp.all(visible), FULL, jnp.where(jnp.any(visible), PARTIAL, EMPTY)).astype(jnp.int32)

    return lax.map(one_tile, jnp.arange(nq * nk, dtype=jnp.int32)).reshape(nq, nk)


def block_range(states: jax.Array, i: Any) -> tuple[jax.Array, jax.Array]:
    """``[lo, hi)``: the key blocks from the first to the last one that is not EMPTY in row ``i`` of
    ``states`` (``(0, 0)`` when all are)."""
    row = states[i] != EMPTY
    nk = row.shape[0]
    lo = jnp.argmax(row).astype(jnp.int32)
    hi = (nk - jnp.argmax(row[::-1])).astype(jnp.int32)
    has = jnp.any(row)
    return jnp.where(has, lo, 0), jnp.where(has, hi, 0)


def params_tangent(params: Any, tangents: Any) -> Any:
    """The tangent pytree of ``params`` in a ``custom_jvp`` rule with symbolic zeros: None when every leaf's
    tangent is a symbolic zero, else the tangents with the symbolic zeros made arrays (float0 for integer
    leaves), as ``jax.jvp`` of the ``score_mod`` wants them."""
    is_zero = lambda t: isinstance(t, SymbolicZero)
    if all(is_zero(t) for t in jax.tree.leaves(tangents, is_leaf=is_zero)):
        return None

    def instantiated(tangent):
        if not is_zero(tangent):
            return tangent
        if tangent.aval.dtype == jax.dtypes.float0:
            return np.zeros(tangent.aval.shape, jax.dtypes.float0)
        return jnp.zeros(tangent.aval.shape, tangent.aval.dtype)

    return jax.tree.map(instantiated, tangents, is_leaf=is_zero)
