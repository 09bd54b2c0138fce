"""The attention conformance kit: property checks for *any* attention function.

Run it on your own function inside your own pytest suite (no fixtures, no plugins)::

    import attnjax.testing

    def my_attention(query, key, value, mask=None, is_causal=False):
        ...  # [B, T, N, H], [B, S, K, H], [B, S, K, H] -> [B, T, N, H]

    def test_my_attention_conforms():
        attnjax.testing.check_attention(my_attention, mask_kind="full", supports_causal=True)

By default the function is taken to be softmax attention, ``softmax(q k^T / sqrt(H)) v``, and is
compared with :func:`attnjax.dot_product_attention` on values and gradients: a missing ``1/sqrt(H)``
or a mask applied after the softmax fails. Pass the ``scale`` you expect if it is not
``1/sqrt(H)``, ``approx_tol`` if the function approximates softmax attention, and ``reference=None``
if it is not softmax attention at all (sigmoid or linear attention, cosine similarity, positional
biases, a local window): then only the properties that hold for every attention function are checked.

The function is called as ``fn(query, key, value)`` with ``mask=`` (a boolean array broadcastable to
``[B, N, T, S]``, ``True`` = attend) only if ``mask_kind`` is set and ``is_causal=True`` only if
``supports_causal``; bind any other argument (parameters, an rng) with ``functools.partial``.
Shapes are drawn by hypothesis (small, a bounded number of examples, deterministic) and fixed
extreme cases are added. Every property is checked in one run, and one ``AssertionError`` lists each
violated property, starting ``[property name] violated``, with its first counterexample (shapes,
arguments, where and by how much; a mask by its shape and the offending row, never the whole array).

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
* ``exact softmax`` (``reference="softmax"``, the default, and no ``approx_tol``): equal to
  :func:`attnjax.dot_product_attention` with ``scale`` (default ``1/sqrt(H)``), values and
  jacobians, with masks and causality where supported, to ``atol``/``rtol``. When the output instead
  equals softmax attention with scale 1, the message says the ``1/sqrt(H)`` factor looks missing;
* ``approximation`` (``approx_tol``): root-mean-square error to that softmax attention (over
  all output entries) ``<= approx_tol`` on queries/keys ``~ N(0, 0.5^2)``, values ``~ N(0, 1)``,
  ``B = 2``, ``T = S = 16``, ``N = K = 2``, ``H = 8``, causal and not (the exact outputs there have
  RMS 0.28 and 0.50 at the default scale). RMS rather than max error because a random-feature
  estimate's worst entry is dominated by its tail.

Requires ``hypothesis`` (in attnjax's ``dev`` extra).
"""
from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, Sequence

import jax
import numpy as np

try:
    import hypothesis
    from hypothesis import strategies as st
except ImportError as e:  # pragma: no cover - exercised only without the dev extra
    raise ImportError("attnjax.testing needs hypothesis: pip install 'attnjax[dev]' (or hypothesis)") from e

from attnjax._conformance.common import (APPROX_QK_STD, DTYPES, EXTREME_LOGIT, MASK_KINDS, MASK_RANKS, MASKED_ROWS,
                                         REFERENCES, Case, Options, Report, SkippedCheckWarning, Violation, fixed_case)
from attnjax._conformance.drawn import example
from attnjax._conformance.fixed import (approx_case, approximation_inputs, check_jit, extreme_case,
                                        low_precision_case, mask_ranks_case, masked_rows_case)
from attnjax._conformance.runner import Runner

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


def _resolve_reference(reference, scale, approx_tol, exact_softmax) -> str | None:
    """The reference after the older ``exact_softmax`` spelling, with every contradiction refused."""
    if not isinstance(reference, (str, type(None))) or reference not in REFERENCES:
        raise ValueError(f"reference must be 'softmax' (fn is softmax attention, compared with it) or None (fn is "
                         f"not softmax attention: no comparison), got {reference!r}")
    if exact_softmax is not None:
        if not isinstance(exact_softmax, bool):
            raise ValueError(f"exact_softmax must be True, False or None, got {exact_softmax!r}")
        if exact_softmax and reference is None:
            raise ValueError("exact_softmax=True contradicts reference=None; pass only reference='softmax'")
        if exact_softmax and approx_tol is not None:
            raise ValueError(f"exact_softmax=True contradicts approx_tol={approx_tol!r} (fn approximates softmax "
                             f"attention); pass one of them")
        if not exact_softmax and approx_tol is None:
            reference = None  # the older spelling of "fn is not softmax attention"
    if approx_tol is not None:
        if reference is None:
            raise ValueError(f"approx_tol={approx_tol!r} measures the error to softmax attention, so it needs "
                             f"reference='softmax', got reference=None")
        if not (isinstance(approx_tol, numbers.Real) and np.isfinite(approx_tol) and approx_tol > 0):
            raise ValueError(f"approx_tol must be a finite number > 0 or None, got {approx_tol!r}")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0 or None (1/sqrt(H)), got {scale!r}")
        if reference is None:
            raise ValueError(f"scale={scale!r} is the scale fn's softmax attention is expected to use; with "
                             f"reference=None nothing is compared, so pass no scale")
    return reference


def check_attention(fn: Callable[..., Array], *, reference: str | None = "softmax", scale: float | None = None,
                    approx_tol: float | None = None, mask_kind: str | None = "full", supports_causal: bool = True,
                    position_free: bool = True, masked_rows: str = "zeros_or_mean", gqa: bool = True,
                    dtypes: Sequence[Any] = ("bfloat16", "float16"), mask_ranks: Sequence[int] = MASK_RANKS,
                    max_examples: int = 3, atol: float = 1e-5, rtol: float = 1e-5,
                    exact_softmax: bool | None = None) -> None:
    """Runs every applicable property check on ``fn``; raises one AssertionError listing every violation.

    Args:
        fn: ``fn(query [B, T, N, H], key [B, S, K, H], value [B, S, K, H], mask=..., is_causal=...)
            -> [B, T, N, H]``, traceable by ``jax.jit``.
        reference: ``"softmax"`` (default): ``fn`` is softmax attention, ``softmax(scale * q k^T) v``,
            and is compared with :func:`attnjax.dot_product_attention` (values and jacobians, or the
            RMS error with ``approx_tol``). None: ``fn`` is not softmax attention; nothing is compared.
        scale: the logit scale ``fn`` is expected to use, default ``1 / sqrt(H)``; needs
            ``reference="softmax"``.
        approx_tol: ``fn`` approximates softmax attention within this RMS error (see module doc)
            instead of equalling it.
        mask_kind: ``"full"`` (``fn`` accepts any mask broadcastable to ``[B, N, T, S]``), ``"keys"``
            (only key masks ``[B, 1, 1, S]``), or None (no ``mask`` argument).
        supports_causal: ``fn`` accepts ``is_causal=True``.
        position_free: the output does not depend on key order (no positional information).
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
        exact_softmax: the older spelling, kept working: True is ``reference="softmax"``; False is
            ``reference=None`` (or, with ``approx_tol``, an approximation of softmax attention).

    Raises:
        AssertionError: ``check_attention: n properties violated: ...``, then for each violated
            property ``[property] violated: ...`` with its first counterexample.
        ValueError/TypeError: inconsistent options or a non-callable ``fn``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    reference = _resolve_reference(reference, scale, approx_tol, exact_softmax)
    if mask_kind not in MASK_KINDS:
        raise ValueError(f"mask_kind must be one of {MASK_KINDS}, got {mask_kind!r}")
    if masked_rows not in MASKED_ROWS:
        raise ValueError(f"masked_rows must be one of {MASKED_ROWS}, got {masked_rows!r}")
    if not isinstance(max_examples, int) or isinstance(max_examples, bool) or max_examples < 1:
        raise ValueError(f"max_examples must be a positive int, got {max_examples!r}")
    for dtype in dtypes:
        if isinstance(dtype, str) and dtype not in DTYPES:
            raise ValueError(f"dtypes entries must be one of {sorted(DTYPES)} or dtypes, got {dtype!r}")
    if not isinstance(mask_ranks, (tuple, list, set, frozenset)) or not all(
            isinstance(r, int) and not isinstance(r, bool) and r in MASK_RANKS for r in mask_ranks):
        raise ValueError(f"mask_ranks must be a sequence of ranks among {MASK_RANKS} (empty to opt out), "
                         f"got {mask_ranks!r}")
    opts = Options(reference=reference, scale=None if scale is None else float(scale), approx_tol=approx_tol,
                   mask_kind=mask_kind, supports_causal=supports_causal, position_free=position_free,
                   masked_rows=masked_rows, gqa=gqa, dtypes=tuple(dtypes),
                   mask_ranks=tuple(sorted(set(mask_ranks))), atol=atol, rtol=rtol)
    run = Runner(fn, supports_causal)
    report = Report()

    @hypothesis.settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck), print_blob=False)
    @hypothesis.given(_cases(opts))
    def shape_properties(case: Case):
        # Violations are collected, not raised: hypothesis would shrink them, compiling fn each time.
        example(run, opts, case, report)

    try:
        # Fixed cases first: they share one shape (so few compilations) and always include a
        # non-trivial problem (hypothesis may start from the smallest shapes, e.g. T = 1).
        example(run, opts, fixed_case(opts, 29), report)
        check_jit(run, opts, report)
        extreme_case(run, opts, report)
        if opts.mask_kind is not None:
            masked_rows_case(run, opts, report)
            if opts.mask_ranks:
                mask_ranks_case(run, opts, report)
        if opts.dtypes:
            low_precision_case(run, opts, report)
        if opts.approx_tol is not None:
            approx_case(run, opts, report)
        shape_properties()
    except Violation as violation:  # pragma: no cover - every check records its own; a safety net
        report.record(violation)
    except Exception as err:
        if report.violated:
            err.add_note("attnjax.testing.check_attention had already found these violations:\n" + report.summary())
        raise
    report.raise_if_any()


def check_registered(name: str, *, max_examples: int = 2, **overrides: Any) -> None:
    """Runs :func:`check_attention` on the registered variant ``name`` with the options its
    :class:`~attnjax.ops.registry.AttentionSpec` states, and params from ``spec.init_params`` sized
    to each drawn head dimension.

    A variant is compared with softmax attention when its spec says it equals it
    (``spec.exact_softmax``) or approximates it (``spec.approx_tol``); every other variant opts out
    explicitly (``reference=None``).

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

    softmax = spec.exact_softmax or spec.approx_tol is not None
    options = dict(reference="softmax" if softmax else None, mask_kind=spec.mask_kind,
                   position_free=spec.position_free, approx_tol=spec.approx_tol, max_examples=max_examples)
    if "exact_softmax" in overrides and "reference" not in overrides:
        del options["reference"]  # the caller's older spelling decides
    options.update(overrides)
    check_attention(fn, **options)


__all__ = ["APPROX_QK_STD", "EXTREME_LOGIT", "SkippedCheckWarning", "approximation_inputs", "check_attention",
           "check_registered"]
