"""The attention conformance kit: property checks for *any* attention function.

Run it on your own function inside your own pytest suite (no fixtures, no plugins)::

    import attnjax.testing

    def my_attention(query, key, value, mask=None, is_causal=False):
        ...  # [B, T, N, H], [B, S, K, H], [B, S, K, H] -> [B, T, N, H]

    def test_my_attention_conforms():
        attnjax.testing.check_attention(my_attention, mask_kind="full", supports_causal=True)

The function is called as ``fn(query, key, value)`` with ``mask=`` (a boolean array broadcastable to
``[B, N, T, S]``, ``True`` = attend) only if ``mask_kind`` is set and ``is_causal=True`` only if
``supports_causal``; bind any other argument (parameters, an rng) with ``functools.partial``.
Shapes are drawn by hypothesis (small, a bounded number of examples, deterministic) and fixed
extreme cases are added. A violated property raises ``AssertionError`` whose message starts with
``[property name]`` and shows the counterexample (shapes, arguments, where and by how much).

Properties (each only where the options say it applies):

* ``shape/dtype``: output ``[B, T, N, H]`` in the input dtype;
* ``jit``: ``jax.jit(fn)`` agrees with ``fn``;
* ``batch independence``: each batch element's output does not change when the other elements
  change, and has zero gradient with respect to their inputs;
* ``head independence``: output head ``n`` has zero gradient with respect to every query head
  but ``n`` and every key/value head but ``n // (N // K)``;
* ``key permutation`` (``position_free``): permuting keys and values together leaves the output
  unchanged;
* ``masked keys`` (``mask_kind``): masked keys/values have no influence on the output (they are
  replaced by large random values) and zero gradient;
* ``mask ranks`` (``mask_kind``, ``mask_ranks``): a mask of rank 1, 2 or 3 (``[S]``, ``[T, S]``,
  ``[N, T, S]``; for ``mask_kind="keys"``: ``[S]``, ``[1, S]``, ``[1, 1, S]``) is accepted and gives
  the output of the same mask reshaped to rank 4 with leading 1s, as ``jax.nn`` broadcasts it; an
  exception raised by ``fn`` for such a mask is a violation;
* ``causality`` (``supports_causal``): with ``is_causal=True`` output ``t`` has zero gradient with
  respect to query/key/value positions ``> t`` and does not change when they change;
* ``extreme logits``: outputs and gradients are finite when ``|q.k| / sqrt(H)`` reaches ``1e4``;
* ``fully masked rows`` (``mask_kind``): a query row that sees no key has finite outputs and
  gradients, and outputs (per row, within ``10 * (atol + rtol * |expected|)``) zeros (attnjax's
  convention) or, unless ``masked_rows="zeros"``, the mean of its head's values over all ``S`` keys
  (``jax.nn.dot_product_attention``'s convention: every logit of the row is the same large negative
  number, so the softmax is uniform); anything else (NaN, inf, another value) fails;
* ``low precision``: for each of ``dtypes``, output in that dtype, finite outputs and gradients,
  within ``8 * eps(dtype) * max|v|`` of the float32 output. A dtype the *backend* cannot compute
  (XLA's ``UNIMPLEMENTED``, or an error saying it is not supported on the running platform, such
  as float16 dot products with float32 accumulation on CPU) is skipped with a
  :class:`SkippedCheckWarning` naming the dtype and the backend's error; the verdict covers every
  other check. Any other exception propagates;
* ``exact softmax`` (``exact_softmax``): equal to :func:`attnjax.dot_product_attention`, values
  and gradients;
* ``approximation`` (``approx_tol``): root-mean-square error to exact softmax attention (over
  all output entries) ``<= approx_tol`` on queries/keys ``~ N(0, 0.5^2)``, values ``~ N(0, 1)``,
  ``B = 2``, ``T = S = 16``, ``N = K = 2``, ``H = 8``, causal and not (the exact outputs there have
  RMS 0.28 and 0.50). RMS rather than max error because a random-feature estimate's worst entry
  is dominated by its tail.

Requires ``hypothesis`` (in attnjax's ``dev`` extra).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import numpy as np

try:
    import hypothesis
    from hypothesis import strategies as st
except ImportError as e:  # pragma: no cover - exercised only without the dev extra
    raise ImportError("attnjax.testing needs hypothesis: pip install 'attnjax[dev]' (or hypothesis)") from e

from attnjax._conformance import (APPROX_QK_STD, EXTREME_LOGIT, Case, Options, SkippedCheckWarning, _DTYPES,
                                  _MASK_KINDS, _MASK_RANKS, _MASKED_ROWS, _Runner,
                                  _approx_case, _check_jit, _example, _extreme_case, _fixed_case,
                                  _low_precision_case, _mask_ranks_case, _masked_rows_case, approximation_inputs)

Array = jax.Array

# --------------------------------------------------------------------------- entry point

def _cases(opts: Options, max_B=2, max_len=4):
    groups = st.sampled_from([1, 2]) if opts.gqa else st.just(1)

    @st.composite
    def draw(drawer):
        K = drawer(st.sampled_from([1, 2]))
        G = drawer(groups)
        return Case(B=drawer(st.integers(1, max_B)), T=drawer(st.integers(1, max_len)),
                    S=drawer(st.integers(1, max_len)), N=K * G, K=K, H=drawer(st.sampled_from([2, 4])),
                    seed=drawer(st.integers(0, 2 ** 16)))

    return draw()


def check_attention(fn: Callable[..., Array], *, exact_softmax: bool = False, mask_kind: str | None = "full",
                    supports_causal: bool = True, position_free: bool = True, approx_tol: float | None = None,
                    masked_rows: str = "zeros_or_mean", gqa: bool = True,
                    dtypes: Sequence[Any] = ("bfloat16", "float16"), mask_ranks: Sequence[int] = _MASK_RANKS,
                    max_examples: int = 3, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """Runs every applicable property check on ``fn``; raises AssertionError on the first violation.

    Args:
        fn: ``fn(query [B, T, N, H], key [B, S, K, H], value [B, S, K, H], mask=..., is_causal=...)
            -> [B, T, N, H]``, traceable by ``jax.jit``.
        exact_softmax: ``fn`` claims to equal :func:`attnjax.dot_product_attention` (checked on values
            and jacobians, with masks and causality where supported).
        mask_kind: ``"full"`` (``fn`` accepts any mask broadcastable to ``[B, N, T, S]``), ``"keys"``
            (only key masks ``[B, 1, 1, S]``), or None (no ``mask`` argument).
        supports_causal: ``fn`` accepts ``is_causal=True``.
        position_free: the output does not depend on key order (no positional information).
        approx_tol: ``fn`` approximates softmax attention within this RMS error (see module doc).
        masked_rows: what a query with no visible key may output: ``"zeros_or_mean"`` (default) zeros
            (attnjax's convention) or the mean of the values over all keys (jax.nn's), per row;
            ``"zeros"``: zeros only. Either way finite, with finite gradients.
        gqa: ``fn`` supports ``K < N`` key/value heads (otherwise ``K == N`` is always used).
        dtypes: low-precision dtypes to check (names or dtypes); empty to skip. One the backend cannot
            compute is skipped with a :class:`SkippedCheckWarning` (module doc).
        mask_ranks: mask ranks below 4 (among 1, 2, 3) that ``fn`` must accept (with ``mask_kind``);
            empty to opt out.
        max_examples: hypothesis examples for the shape-driven properties (each compiles ``fn``).
        atol, rtol: float32 tolerances for checks that should hold to rounding error.

    Raises:
        AssertionError: ``[property] violated: ...`` with the counterexample.
        ValueError/TypeError: inconsistent options or a non-callable ``fn``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if mask_kind not in _MASK_KINDS:
        raise ValueError(f"mask_kind must be one of {_MASK_KINDS}, got {mask_kind!r}")
    if masked_rows not in _MASKED_ROWS:
        raise ValueError(f"masked_rows must be one of {_MASKED_ROWS}, got {masked_rows!r}")
    if approx_tol is not None and not (np.isfinite(approx_tol) and approx_tol > 0):
        raise ValueError(f"approx_tol must be a finite number > 0 or None, got {approx_tol!r}")
    if not isinstance(max_examples, int) or isinstance(max_examples, bool) or max_examples < 1:
        raise ValueError(f"max_examples must be a positive int, got {max_examples!r}")
    for dtype in dtypes:
        if isinstance(dtype, str) and dtype not in _DTYPES:
            raise ValueError(f"dtypes entries must be one of {sorted(_DTYPES)} or dtypes, got {dtype!r}")
    if not isinstance(mask_ranks, (tuple, list, set, frozenset)) or not all(
            isinstance(r, int) and not isinstance(r, bool) and r in _MASK_RANKS for r in mask_ranks):
        raise ValueError(f"mask_ranks must be a sequence of ranks among {_MASK_RANKS} (empty to opt out), "
                         f"got {mask_ranks!r}")
    opts = Options(exact_softmax=exact_softmax, mask_kind=mask_kind, supports_causal=supports_causal,
                   position_free=position_free, approx_tol=approx_tol, masked_rows=masked_rows, gqa=gqa,
                   dtypes=tuple(dtypes), mask_ranks=tuple(sorted(set(mask_ranks))), atol=atol, rtol=rtol)
    run = _Runner(fn, supports_causal)

    # Fixed cases first: they share one shape (so few compilations) and always include a
    # non-trivial problem (hypothesis may start from the smallest shapes, e.g. T = 1).
    _example(run, opts, _fixed_case(opts, 29))
    _check_jit(run, opts)
    _extreme_case(run, opts)
    if opts.mask_kind is not None:
        _masked_rows_case(run, opts)
        if opts.mask_ranks:
            _mask_ranks_case(run, opts)
    if opts.dtypes:
        _low_precision_case(run, opts)
    if opts.approx_tol is not None:
        _approx_case(run, opts)

    @hypothesis.settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck), print_blob=False)
    @hypothesis.given(_cases(opts))
    def shape_properties(case: Case):
        _example(run, opts, case)

    shape_properties()


def check_registered(name: str, *, max_examples: int = 2, **overrides: Any) -> None:
    """Runs :func:`check_attention` on the registered variant ``name`` with the options its
    :class:`~attnjax.ops.registry.AttentionSpec` states, and params from ``spec.init_params`` sized
    to each drawn head dimension.

    Args:
        name: a key of :data:`attnjax.ops.registry.ATTENTION`.
        max_examples: hypothesis examples.
        **overrides: replace any :func:`check_attention` option.
    """
    from attnjax.ops.registry import get_spec

    spec = get_spec(name)
    extra = dict(spec.kit_options)

    @functools.lru_cache(maxsize=None)
    def params_for(head_dim: int, num_heads: int):
        if spec.init_params is None:
            return {}
        # Concrete constants, computed once per size, not re-staged into every compiled program.
        with jax.ensure_compile_time_eval():
            return spec.init_params(jax.random.key(0), head_dim=head_dim, num_heads=num_heads)

    def fn(q, k, v, **kwargs):
        return spec.fn(q, k, v, **params_for(q.shape[-1], q.shape[2]), **extra, **kwargs)

    options = dict(exact_softmax=spec.exact_softmax, mask_kind=spec.mask_kind, position_free=spec.position_free,
                   approx_tol=spec.approx_tol, max_examples=max_examples)
    options.update(overrides)
    check_attention(fn, **options)


__all__ = ["APPROX_QK_STD", "EXTREME_LOGIT", "SkippedCheckWarning", "approximation_inputs", "check_attention",
           "check_registered"]
