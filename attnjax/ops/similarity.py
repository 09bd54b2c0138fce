"""Softmax attention with other score functions: cosine, negative squared L2, additive, multiplicative.

Every variant here is ``softmax(score(Q, K) + bias) V`` and differs from
:func:`attnjax.dot_product_attention` only in ``score``. They share its layout (queries
``[B, T, N, H]``, keys/values ``[B, S, K, H]``, ``N % K == 0`` for grouped-query attention), its
mask/causal/padding/window keywords and its numerics (float32 softmax, finite mask value, fully
masked rows return zeros with zero gradient). Parameters (temperatures, projection matrices) are
passed in explicitly: ops hold no state, a Flax module owns them.

Each variant is defined by its score function alone: :func:`make_variant` builds its
``*_attention`` function and the ``*_weights`` twin returning the ``[B, N, T, S]`` float32
probabilities, for diagnostics.

Args common to every variant ("see the module docstring" below):
    query: ``[B, T, N, H]`` floating; key: ``[B, S, K, H]``; value: ``[B, S, K, H]``, same dtype.
    bias: added to the scores, broadcastable to ``[B, N, T, S]``.
    mask: boolean, ``True`` = attend, broadcastable to ``[B, N, T, S]``.
    is_causal, query_seq_lengths, key_value_seq_lengths, local_window_size: as in
        :func:`attnjax.dot_product_attention`.
    implementation: ``None``, ``"dense"`` or ``"xla"`` (jax.nn's name for it): the scores are
        materialized as ``[B, N, T, S]``, so the dense path is the only one; it is accepted so that a
        call written for ``attnjax.dot_product_attention``/``jax.nn`` runs, and any other value
        raises ValueError (never a silent fallback).

Learned parameters (additive's ``w_query``/``w_key``/``v_score``, multiplicative's ``weight``) have
no defaults: a pure function does not invent weights. Leaving one out raises ValueError naming it;
``attnjax.ops.registry.init_attention_params(name, rng, head_dim=H, num_heads=N)`` builds them.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops import checks
from attnjax.ops.primitives import masked_softmax, repeat_kv_heads, scaled_logits, weighted_values
from attnjax.ops.masks import attention_mask

Array = jnp.ndarray


# --------------------------------------------------------------------------- shared machinery

def is_traced(x: Any) -> bool:
    """True for values only known at run time (inside jit/grad), whose contents cannot be checked."""
    return isinstance(x, jax.core.Tracer)


def check_per_head_scalar(name: str, x: Any, num_heads: int, *, positive: bool = True) -> None:
    """Checks a scalar or ``[N]`` floating parameter (a temperature or scale that may be learned).

    Concrete values must be finite (and ``> 0`` with ``positive``); traced values are only
    shape-checked because their contents are unknown until run time.
    """
    if x is None:
        raise ValueError(f"{name} must be a number or an array of shape () or [N] = ({num_heads},), got None")
    shape = tuple(np.shape(x))
    if shape not in ((), (num_heads,)):
        raise ValueError(f"{name} must have shape () or [N] = ({num_heads},), got shape {shape}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating) and not jnp.issubdtype(
            jnp.result_type(x), jnp.integer):
        raise TypeError(f"{name} must be a real number or floating array, got dtype {jnp.result_type(x)}")
    if is_traced(x):
        return
    values = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(values)) or (positive and np.any(values <= 0)):
        raise ValueError(f"{name} must be finite{' and > 0' if positive else ''}, got {x!r}")


def per_head(x: Any, num_heads: int) -> Array:
    """A scalar or ``[N]`` value as float32 broadcastable to ``[B, N, T, S]``."""
    x = jnp.asarray(x, jnp.float32)
    return x if x.ndim == 0 else x.reshape(1, num_heads, 1, 1)


def run_attention(logits_fn: Callable[..., Array], query, key, value, bias, mask, *, is_causal,
                  query_seq_lengths, key_value_seq_lengths, local_window_size, weights_only: bool,
                  normalize: Callable[[Array, Array | None], Array] = masked_softmax):
    """The pipeline every score function here shares: check, score, bias, mask, normalize, weight values.

    Args:
        logits_fn: ``(query, key, (B, T, S, N, K, H)) -> [B, N, T, S]`` float32 scores; it may check
            its own parameters (it sees the checked dimensions).
        value: ``[B, S, K, Hv]``; pass ``key`` again when ``weights_only``.
        normalize: ``(logits, mask_or_None) -> weights``; masked entries must come out exactly 0.
        other arguments: as in :func:`attnjax.dot_product_attention`.

    Returns:
        ``[B, N, T, S]`` float32 weights if ``weights_only``, else ``[B, T, N, Hv]`` in the query dtype.
    """
    query, key, value, bias, mask = (None if x is None else jnp.asarray(x) for x in (query, key, value, bias, mask))
    dims = checks.check_inputs(query, key, value, bias=bias, mask=mask, query_seq_lengths=query_seq_lengths,
                               key_value_seq_lengths=key_value_seq_lengths)
    window = checks.normalize_window(local_window_size)
    logits = logits_fn(query, key, dims)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    full_mask = attention_mask(dims[1], dims[2], mask=mask, is_causal=is_causal,
                               query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                               window=window)
    weights = normalize(logits, full_mask)
    if weights_only:
        return weights
    return weighted_values(weights, value).astype(query.dtype)


# --------------------------------------------------------------------------- score functions

def cosine_logits(query: Array, key: Array, temperature: Any = 0.1, *, eps: float = 1e-6) -> Array:
    """``cos(q_i, k_j) / temperature``, ``[B, N, T, S]`` float32.

    Args:
        query: ``[B, T, N, H]``.
        key: ``[B, S, K, H]``.
        temperature: scalar or ``[N]``; may be a learned (traced) array.
        eps: added to the norms so that an all-zero vector has cosine 0, not NaN.
    """
    N = query.shape[2]
    qn = query.astype(jnp.float32)
    kn = key.astype(jnp.float32)
    # sqrt(sum x^2 + eps^2) instead of ||x|| + eps keeps the gradient finite at x = 0.
    qn = qn / jnp.sqrt(jnp.sum(qn * qn, axis=-1, keepdims=True) + eps * eps)
    kn = kn / jnp.sqrt(jnp.sum(kn * kn, axis=-1, keepdims=True) + eps * eps)
    return scaled_logits(qn, kn, scale=1.0) / per_head(temperature, N)


def l2_logits(query: Array, key: Array, scale: float | None = None) -> Array:
    """``-scale * ||q_i - k_j||^2``, ``[B, N, T, S]`` float32 (default ``scale = 1 / sqrt(H)``).

    Expanded as ``2 q.k - |q|^2 - |k|^2`` so that no ``[B, N, T, S, H]`` difference tensor is built;
    the result is clamped at distance ``>= 0`` against rounding.
    """
    B, T, N, H = query.shape
    scale = checks.default_scale(scale, H)
    q32, k32 = query.astype(jnp.float32), key.astype(jnp.float32)
    qk = scaled_logits(q32, k32, scale=1.0)
    q_sq = jnp.einsum("BTNH,BTNH->BNT", q32, q32)[..., None]
    k_sq = repeat_kv_heads(jnp.einsum("BSKH,BSKH->BKS", k32, k32), N, axis=1)[:, :, None, :]
    sq_dist = jnp.maximum(q_sq + k_sq - 2.0 * qk, 0.0)
    return -jnp.float32(scale) * sq_dist


def additive_logits(query: Array, key: Array, w_query: Array, w_key: Array, v_score: Array) -> Array:
    """Bahdanau scores ``v^T tanh(W_q q_i + W_k k_j)``, ``[B, N, T, S]`` float32.

    Builds a ``[B, T, S, N, A]`` tensor: additive attention costs ``A`` times the memory of the
    dot-product logits, which is inherent to the formula.

    Args:
        query: ``[B, T, N, H]``; key: ``[B, S, K, H]``.
        w_query: ``[H, A]``, w_key: ``[H, A]``, v_score: ``[A]`` (shared by all heads).
    """
    B, T, N, H = query.shape
    S, K = key.shape[1], key.shape[2]
    qa = jnp.einsum("BTNH,HA->BTNA", query.astype(jnp.float32), jnp.asarray(w_query, jnp.float32))
    ka = jnp.einsum("BSKH,HA->BSKA", key.astype(jnp.float32), jnp.asarray(w_key, jnp.float32))
    qa = qa.reshape(B, T, K, N // K, -1)
    hidden = jnp.tanh(qa[:, :, None] + ka[:, None, :, :, None, :])  # [B, T, S, K, G, A]
    scores = jnp.einsum("BTSKGA,A->BKGTS", hidden, jnp.asarray(v_score, jnp.float32))
    return scores.reshape(B, N, T, S)


def multiplicative_logits(query: Array, key: Array, weight: Array, scale: float | None = None) -> Array:
    """Luong "general" scores ``scale * q_i W k_j^T``, ``[B, N, T, S]`` float32.

    Args:
        query: ``[B, T, N, H]``; key: ``[B, S, K, H]``.
        weight: ``[H, H]`` shared by all heads.
        scale: default ``1 / sqrt(H)``; Luong et al. use ``1.0``.
    """
    qw = jnp.einsum("BTNH,HI->BTNI", query.astype(jnp.float32), jnp.asarray(weight, jnp.float32))
    return scaled_logits(qw, key.astype(jnp.float32), scale=scale)


# --------------------------------------------------------------------------- parameter checks

def _check_matrix(name: str, x: Any, shape: tuple[int | None, ...], letters: str) -> tuple[int, ...]:
    if x is None:
        raise ValueError(f"{name} is required, expected an array of shape [{letters}]")
    actual = tuple(np.shape(x))
    if len(actual) != len(shape) or any(s is not None and s != a for s, a in zip(shape, actual)):
        want = tuple("?" if s is None else s for s in shape)
        raise ValueError(f"{name} must have shape [{letters}] = {want}, got {actual}")
    checks.check_floating(name, x)
    return actual


# --------------------------------------------------------------------------- the variant factory

# The ``implementation=`` values a score-function variant accepts besides None: it always
# materializes ``[B, N, T, S]`` scores, i.e. the dense path ("xla" is jax.nn's name for it).
VARIANT_IMPLEMENTATIONS = ("dense", "xla")


class Required:
    """Marks a variant parameter that has no default (a learned weight), with its shape for messages."""

    def __init__(self, shape: str):
        self.shape = shape

    def __repr__(self) -> str:
        return f"Required({self.shape!r})"


def _check_implementation(fn_name: str, implementation: Any) -> None:
    if implementation is not None and implementation not in VARIANT_IMPLEMENTATIONS:
        raise ValueError(
            f"implementation must be None or one of {VARIANT_IMPLEMENTATIONS} for {fn_name}, got "
            f"{implementation!r}: it materializes [B, N, T, S] scores, so the dense path is its only one")


def make_variant(name: str, scores: Callable[..., Array], params: dict[str, Any], *, doc: str,
                 weights_doc: str | None = None, check: Callable[..., None] | None = None,
                 normalize: Callable[[Array, Array | None], Array] = masked_softmax,
                 ) -> tuple[Callable[..., Array], Callable[..., Array]]:
    """The ``({name}_attention, {name}_weights)`` pair of a variant defined by its score function.

    The functions have the registry's call signature, with the variant's ``params`` as keywords::

        {name}_attention(query, key, value, bias=None, mask=None, *, **params, is_causal=False,
                         query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None,
                         implementation=None)
        {name}_weights(query, key, bias=None, mask=None, *, ...the same keywords but implementation)

    and run :func:`run_attention` (``[B, T, N, H]`` output, or ``[B, N, T, S]`` float32 weights).
    ``inspect.signature`` lists every keyword (callers read it to see what a variant takes); an
    unknown keyword raises TypeError as for any Python function.

    Args:
        name: the variant's name, the prefix of the two functions' names.
        scores: ``(query, key, dims, **params) -> [B, N, T, S]`` float32 scores, where ``dims`` is
            ``(B, T, S, N, K, H)`` of the checked inputs; it checks the parameters whose valid shape
            depends on them (a per-head temperature). The functions' ``__module__`` is its module.
        params: the variant's keywords with their defaults, in signature order; a :class:`Required`
            default marks a parameter the caller must pass (it shows without a default in the
            signature, and leaving it out raises ValueError naming it and how to build it).
        doc: the attention function's docstring.
        weights_doc: the weights function's docstring; default: "probabilities of the attention function".
        check: ``(query, **params) -> None``, run first, before the inputs are checked.
        normalize: ``(logits, mask_or_None) -> weights`` (see :func:`run_attention`).
    """
    attention_name, weights_name = f"{name}_attention", f"{name}_weights"

    def own_params(fn_name: str, given: dict[str, Any]) -> dict[str, Any]:
        unknown = [k for k in given if k not in params]
        if unknown:
            raise TypeError(f"{fn_name}() got an unexpected keyword argument {unknown[0]!r}")
        missing = [k for k, v in params.items() if isinstance(v, Required) and k not in given]
        if missing:
            shapes = ", ".join(f"{k} {params[k].shape}" for k in missing)
            raise ValueError(
                f"{fn_name}() is missing its learned parameter{'s' if len(missing) > 1 else ''} {shapes} "
                f"(no defaults); build {'them' if len(missing) > 1 else 'it'} with "
                f"attnjax.ops.registry.init_attention_params({name!r}, rng, head_dim=H, num_heads=N) and pass "
                f"{'them' if len(missing) > 1 else 'it'} as keyword{'s' if len(missing) > 1 else ''}")
        return {**params, **given}

    def run(query, key, value, bias, mask, own, masking, weights_only):
        if check is not None:
            check(query, **own)
        return run_attention(lambda q, k, dims: scores(q, k, dims, **own), query, key, value, bias, mask,
                             weights_only=weights_only, normalize=normalize, **masking)

    def attention(query, key, value, bias=None, mask=None, *, is_causal=False, query_seq_lengths=None,
                  key_value_seq_lengths=None, local_window_size=None, implementation=None, **variant_params):
        _check_implementation(attention_name, implementation)
        return run(query, key, value, bias, mask, own_params(attention_name, variant_params),
                   dict(is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                        key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size),
                   weights_only=False)

    def weights(query, key, bias=None, mask=None, *, is_causal=False, query_seq_lengths=None,
                key_value_seq_lengths=None, local_window_size=None, **variant_params):
        return run(query, key, key, bias, mask, own_params(weights_name, variant_params),
                   dict(is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                        key_value_seq_lengths=key_value_seq_lengths, local_window_size=local_window_size),
                   weights_only=True)

    own = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY,
                             default=inspect.Parameter.empty if isinstance(v, Required) else v)
           for k, v in params.items()]
    docs = (doc, weights_doc or f"``[B, N, T, S]`` float32 probabilities of :func:`{attention_name}` "
                                f"(same arguments, no value).")
    for fn, fn_name, fn_doc in ((attention, attention_name, docs[0]), (weights, weights_name, docs[1])):
        sig = inspect.signature(fn).parameters.values()
        positional = [p for p in sig if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        masking = [p for p in sig if p.kind is inspect.Parameter.KEYWORD_ONLY]
        fn.__signature__ = inspect.Signature(positional + own + masking)
        fn.__name__ = fn.__qualname__ = fn_name
        fn.__module__ = scores.__module__
        fn.__doc__ = fn_doc
    return attention, weights


# --------------------------------------------------------------------------- public variants

def _cosine_scores(query, key, dims, *, temperature, eps):
    # Checked here, once the number of query heads N = dims[3] is known to be valid.
    check_per_head_scalar("temperature", temperature, dims[3])
    return cosine_logits(query, key, temperature, eps=eps)


cosine_attention, cosine_weights = make_variant(
    "cosine", _cosine_scores, {"temperature": 0.1, "eps": 1e-6},
    check=lambda query, *, eps, **_: checks.check_positive("eps", eps),
    doc="""Cosine-similarity attention: ``softmax(cos(q_i, k_j) / temperature + bias) V``.

    Scores are bounded in ``[-1/temperature, 1/temperature]``, so no logit can blow up (the point of
    QK-normalization). A fixed temperature is a Python float; a learned one is a scalar or ``[N]``
    array owned by the caller (keep it positive, e.g. ``exp`` of a free parameter).

    Args: see the module docstring; ``temperature`` scalar or ``[N]`` > 0; ``eps`` norm floor.

    Returns:
        ``[B, T, N, H]`` in the query dtype; rows with no visible key are zeros.

    Raises:
        ValueError/TypeError: malformed shapes, dtypes or temperature.
    """)


def _check_scale(query, *, scale, **_):
    checks.check_positive("scale", scale)


l2_attention, l2_weights = make_variant(
    "l2", lambda query, key, dims, *, scale: l2_logits(query, key, scale), {"scale": None}, check=_check_scale,
    doc="""L2 attention (Kim et al. 2021): ``softmax(-scale * ||q_i - k_j||^2 + bias) V``.

    Kim et al. show that with tied query/key projections this map is Lipschitz while dot-product
    attention is not; tying is the calling module's choice (pass the same projection for both).

    Args: see the module docstring; ``scale`` > 0, default ``1 / sqrt(H)``.

    Returns:
        ``[B, T, N, H]`` in the query dtype; rows with no visible key are zeros.
    """)


def _check_additive(query, *, w_query, w_key, v_score):
    H = np.shape(query)[-1]
    _, A = _check_matrix("w_query", w_query, (H, None), "H, A")
    _check_matrix("w_key", w_key, (H, A), "H, A")
    _check_matrix("v_score", v_score, (A,), "A")


additive_attention, additive_weights = make_variant(
    "additive", lambda query, key, dims, **p: additive_logits(query, key, **p),
    {"w_query": Required("[H, A]"), "w_key": Required("[H, A]"), "v_score": Required("[A]")},
    check=_check_additive,
    doc="""Additive (Bahdanau) attention: ``softmax(v^T tanh(W_q q_i + W_k k_j) + bias) V``.

    Args: see the module docstring, plus the parameters (required keywords, shared by all heads;
        ``init_attention_params("additive", rng, head_dim=H, num_heads=N)`` builds them):
        w_query: ``[H, A]``; w_key: ``[H, A]``; v_score: ``[A]``.

    Raises:
        ValueError: a parameter left out (named in the message), or of the wrong shape.

    Returns:
        ``[B, T, N, H]`` in the query dtype; rows with no visible key are zeros.
    """)


def _check_multiplicative(query, *, weight, scale):
    H = np.shape(query)[-1]
    _check_matrix("weight", weight, (H, H), "H, H")
    checks.check_positive("scale", scale)


multiplicative_attention, multiplicative_weights = make_variant(
    "multiplicative", lambda query, key, dims, **p: multiplicative_logits(query, key, **p),
    {"weight": Required("[H, H]"), "scale": None}, check=_check_multiplicative,
    doc="""Multiplicative ("general", Luong et al. 2015) attention: ``softmax(scale * q_i W k_j^T + bias) V``.

    Args: see the module docstring, plus
        weight: ``[H, H]`` (required keyword), shared by all heads;
            ``init_attention_params("multiplicative", rng, head_dim=H, num_heads=N)`` builds one.
        scale: > 0, default ``1 / sqrt(H)``; ``1.0`` is Luong's original form.

    Raises:
        ValueError: ``weight`` left out (named in the message), or of the wrong shape.

    Returns:
        ``[B, T, N, H]`` in the query dtype; rows with no visible key are zeros.
    """)
