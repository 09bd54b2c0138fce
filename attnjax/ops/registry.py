"""One lookup dict from attention name to function, with what callers need to know about each.

Every registered function has the call signature of :func:`attnjax.dot_product_attention`::

    fn(query [B, T, N, H], key [B, S, K, H], value [B, S, K, H], bias=None, mask=None, *,
       is_causal=False, query_seq_lengths=None, key_value_seq_lengths=None, **params) -> [B, T, N, H]

``params`` are the variant's own keywords (a temperature, projection matrices, random features).
``mask`` and ``bias`` of rank < 4 count as leading 1s, as in ``jax.nn`` (a ``[S]`` key mask works
everywhere).

Which variants need params: exactly those with ``spec.init_params`` (``spec.needs_params``):
``additive`` (``w_query``, ``w_key``, ``v_score``), ``multiplicative`` (``weight``),
``performer`` (``projection``, or an ``rng`` to draw one), ``cope`` (``position_embeddings``), ``fire`` (its
MLP, ``fire_c``, ``fire_threshold_scale``) and ``ssmax`` (``ssmax_scale``). A pure function does not invent
learned weights, so these have no defaults and ``fn(q, k, v)`` raises ValueError naming what is missing; build the
params with :func:`init_attention_params` (a dict to store as parameters when
``spec.trainable_params``, or as constants otherwise; a Flax module does this once) and pass them
back as ``fn(q, k, v, ..., **params)``. Every other variant runs as ``fn(q, k, v)``.

``implementation=`` is taken where ``spec.implementations`` is not empty: every name of
:data:`attnjax.ops.dot_product.IMPLEMENTATIONS` (and ``"xla"``) for ``dot_product``, ``"dense"``/
``"xla"`` for the score-function variants (their only path), ``"dense"``/``"xla"``/``"blockwise"`` for the
variants built on the ``score_mod`` hook (``fire``, ``ssmax``, ``forgetting``: :data:`FLEX_IMPLEMENTATIONS`)
and for ``stick_breaking`` and ``cope`` (query tiles, :mod:`attnjax.ops.query_tiles`), and a ValueError for
any other value. ``stick_breaking`` is causal only (``spec.causal_only``): ``is_causal`` defaults to True
and ``is_causal=False`` raises ValueError.

``forgetting`` is data-dependent: its forget gates come from the layer's input, so its spec has
``input_params`` (:class:`InputParams`), which a layer applies to its input; ``fn(q, k, v)`` without
``log_forget`` runs with every gate 1 (plain softmax attention).

Example::

    spec = get_spec("cosine")
    out = spec.fn(q, k, v, is_causal=True)
    params = init_attention_params("additive", jax.random.key(0), head_dim=q.shape[-1], num_heads=q.shape[2])
    out = get_attention("additive")(q, k, v, **params)
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops.blockwise import BlockSizes
from attnjax.ops.dot_product import IMPLEMENTATION_ALIASES, IMPLEMENTATIONS, attention_weights, dot_product_attention
from attnjax.ops.linear import linear_attention, linear_weights, orthogonal_random_features, performer_attention, \
    performer_weights
from attnjax.ops.cope import cope_attention, cope_weights, init_cope_params
from attnjax.ops.fire import fire_attention, fire_init, fire_weights
from attnjax.ops.flex_params import FLEX_IMPLEMENTATIONS
from attnjax.ops.forgetting import forget_gate_init, forgetting_attention, forgetting_input_keywords, \
    forgetting_weights
from attnjax.ops.local import local_attention, local_weights
from attnjax.ops.normalizers import (sigmoid_attention, sigmoid_weights, softmax_temperature_attention,
                                     softmax_temperature_weights)
from attnjax.ops.query_tiles import TILED_IMPLEMENTATIONS
from attnjax.ops.scalable_softmax import ssmax_attention, ssmax_init, ssmax_weights
from attnjax.ops.similarity import (VARIANT_IMPLEMENTATIONS, additive_attention, additive_weights, cosine_attention,
                                    cosine_weights, l2_attention, l2_weights, multiplicative_attention,
                                    multiplicative_weights)
from attnjax.ops.stick_breaking import stick_breaking_attention, stick_breaking_weights

ParamsInit = Callable[..., dict[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class InputParams:
    """Learned parameters that turn the attention layer's input into keywords of a variant's ``fn``, for
    data-dependent variants (FoX's forget gates are a function of ``x_t``). A layer builds the parameters
    once and calls ``keywords`` on its input at every call.

    Attributes:
        init: ``(rng, *, input_dim, num_heads) -> dict`` of parameters (``input_dim``: the input's ``D``).
        keywords: ``(params, x [B, T, D]) -> dict`` of keywords for ``fn`` (``x``: the layer's query input).
    """

    init: Callable[..., dict[str, jax.Array]]
    keywords: Callable[[dict[str, jax.Array], jax.Array], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    """What a caller (a Flax layer, the conformance kit, diagnostics) needs to know about a variant.

    Attributes:
        name: registry key.
        fn: the attention function (signature in the module docstring).
        weights_fn: ``(query, key, bias=None, mask=None, *, is_causal, ..., **params) -> [B, N, T, S]``
            float32 weights (materialized; for diagnostics), or None.
        exact_softmax: with the default (or no) params, ``fn`` equals ``dot_product_attention``.
        approx_tol: root-mean-square error to exact softmax attention that the variant stays within
            on the conformance kit's approximation inputs (:func:`attnjax.testing.approximation_inputs`),
            or None.
        mask_kind: ``"full"`` (any ``[B, N, T, S]`` mask and bias) or ``"keys"`` (key masks
            ``[B, N, 1, S]`` only, no bias: linear-time variants form no logits).
        position_free: permuting keys and values together leaves the output unchanged.
        causal_only: ``fn`` computes causal attention only: its default is ``is_causal=True`` (so
            ``fn(q, k, v)`` and the conformance kit's plain calls run causal) and ``is_causal=False``
            raises ValueError naming it.
        init_params: ``(rng, *, head_dim, num_heads, **options) -> dict`` of keyword params, or None if the
            variant needs none (then ``fn(q, k, v)`` runs; otherwise it raises ValueError naming the
            missing params, see :attr:`needs_params`).
        trainable_params: whether those params are meant to be learned (vs fixed random features).
        input_params: :class:`InputParams` of a variant whose keywords are computed from the layer's input
            (``forgetting``), or None.
        description: one line for tables and error messages.
        kit_options: ``(keyword, value)`` pairs the conformance kit passes at its tiny shapes, where a
            default (a window of 64 keys) would cover every key and hide what the variant does.
        implementations: the ``implementation=`` values ``fn`` accepts besides None; empty if it takes
            no ``implementation`` keyword.
    """

    name: str
    fn: Callable[..., jax.Array]
    weights_fn: Callable[..., jax.Array] | None
    exact_softmax: bool = False
    approx_tol: float | None = None
    mask_kind: str = "full"
    position_free: bool = True
    causal_only: bool = False
    init_params: ParamsInit | None = None
    trainable_params: bool = True
    input_params: InputParams | None = None
    description: str = ""
    kit_options: tuple[tuple[str, Any], ...] = ()
    implementations: tuple[str, ...] = ()

    @property
    def supports_bias(self) -> bool:
        return self.mask_kind == "full"

    @property
    def needs_params(self) -> bool:
        """``fn`` needs the keywords of :attr:`init_params` (``fn(q, k, v)`` alone raises ValueError)."""
        return self.init_params is not None


def _init_additive(rng, *, head_dim: int, num_heads: int) -> dict[str, jax.Array]:
    k1, k2, k3 = jax.random.split(rng, 3)
    std = 1.0 / np.sqrt(head_dim)
    return {"w_query": std * jax.random.normal(k1, (head_dim, head_dim)),
            "w_key": std * jax.random.normal(k2, (head_dim, head_dim)),
            "v_score": std * jax.random.normal(k3, (head_dim,))}


def _init_multiplicative(rng, *, head_dim: int, num_heads: int) -> dict[str, jax.Array]:
    # Identity plus noise: starts close to dot-product attention, which trains stably.
    return {"weight": jnp.eye(head_dim) + 0.1 / np.sqrt(head_dim) * jax.random.normal(rng, (head_dim, head_dim))}


_DOT_PRODUCT_IMPLEMENTATIONS = tuple(sorted({*IMPLEMENTATIONS, *IMPLEMENTATION_ALIASES}))

PERFORMER_FEATURES = 256
# RMS error on the kit's approximation inputs with 256 features, over 40 draws (20 seeds, causal and
# not): mean 0.038, max 0.089 (the exact outputs have RMS 0.28 / 0.50); it halves per 4x features.
PERFORMER_TOL = 0.12


def _init_performer(rng, *, head_dim: int, num_heads: int) -> dict[str, jax.Array]:
    return {"projection": orthogonal_random_features(rng, PERFORMER_FEATURES, head_dim)}


ATTENTION: dict[str, AttentionSpec] = {spec.name: spec for spec in (
    AttentionSpec("dot_product", dot_product_attention, attention_weights, exact_softmax=True,
                  description="softmax(Q K^T / sqrt(H)) V", implementations=_DOT_PRODUCT_IMPLEMENTATIONS),
    AttentionSpec("softmax_temperature", softmax_temperature_attention, softmax_temperature_weights,
                  exact_softmax=True, description="softmax(Q K^T / (sqrt(H) tau)) V, tau=1 by default",
                  implementations=VARIANT_IMPLEMENTATIONS),
    AttentionSpec("cosine", cosine_attention, cosine_weights,
                  description="softmax(cos(q, k) / tau) V (QK-normalized)", implementations=VARIANT_IMPLEMENTATIONS),
    AttentionSpec("l2", l2_attention, l2_weights,
                  description="softmax(-||q - k||^2 / sqrt(H)) V (Kim et al. 2021)",
                  implementations=VARIANT_IMPLEMENTATIONS),
    AttentionSpec("additive", additive_attention, additive_weights, init_params=_init_additive,
                  description="softmax(v^T tanh(W_q q + W_k k)) V (Bahdanau)", implementations=VARIANT_IMPLEMENTATIONS),
    AttentionSpec("multiplicative", multiplicative_attention, multiplicative_weights,
                  init_params=_init_multiplicative, description="softmax(q W k^T / sqrt(H)) V (Luong general)",
                  implementations=VARIANT_IMPLEMENTATIONS),
    AttentionSpec("sigmoid", sigmoid_attention, sigmoid_weights,
                  description="sigmoid(Q K^T / sqrt(H) - log S) V (Ramapuram et al. 2024)",
                  implementations=VARIANT_IMPLEMENTATIONS),
    AttentionSpec("linear", linear_attention, linear_weights, mask_kind="keys",
                  description="elu+1 linear attention, O(T) memory (Katharopoulos et al. 2020)"),
    AttentionSpec("performer", performer_attention, performer_weights, mask_kind="keys", approx_tol=PERFORMER_TOL,
                  init_params=_init_performer, trainable_params=False,
                  description=f"Performer FAVOR+ with {PERFORMER_FEATURES} orthogonal random features"),
    AttentionSpec("local", local_attention, local_weights, position_free=False,
                  description="sliding-window softmax attention, O(T * window) memory",
                  kit_options=(("local_window_size", (1, 2)), ("block_sizes", BlockSizes(2, 2)))),
    AttentionSpec("stick_breaking", stick_breaking_attention, stick_breaking_weights, position_free=False,
                  causal_only=True, implementations=TILED_IMPLEMENTATIONS,
                  description="sigmoid(z_ij) prod_{j<k<i} (1 - sigmoid(z_ik)), causal (Tan et al. 2025)"),
    AttentionSpec("cope", cope_attention, cope_weights, position_free=False, init_params=init_cope_params,
                  implementations=TILED_IMPLEMENTATIONS,
                  description="softmax(q.k + q.e[p_ij]), p_ij = gated counts (CoPE, Golovneva et al. 2024)"),
    AttentionSpec("fire", fire_attention, fire_weights, position_free=False, init_params=fire_init,
                  implementations=FLEX_IMPLEMENTATIONS,
                  description="softmax(q.k + MLP(psi(i-j) / psi(max(L, i)))), psi = log(c x + 1) "
                              "(FIRE, Li et al. 2024)"),
    AttentionSpec("ssmax", ssmax_attention, ssmax_weights, init_params=ssmax_init, implementations=FLEX_IMPLEMENTATIONS,
                  description="softmax(s log(n_i) q.k), n_i = keys query i sees (SSMax, Nakanishi 2025)"),
    AttentionSpec("forgetting", forgetting_attention, forgetting_weights, position_free=False,
                  input_params=InputParams(forget_gate_init, forgetting_input_keywords),
                  implementations=FLEX_IMPLEMENTATIONS,
                  description="softmax(q.k + sum_{j<l<=i} log f_l), f = sigmoid(w.x + b) (FoX, Lin et al. 2025)"),
)}


def get_spec(name: str) -> AttentionSpec:
    """The :class:`AttentionSpec` registered under ``name``.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
        TypeError: ``name`` is not a string.
    """
    if not isinstance(name, str):
        raise TypeError(f"attention name must be a str, got {type(name).__name__}: {name!r}")
    if name not in ATTENTION:
        raise ValueError(f"unknown attention {name!r}; valid names: {', '.join(sorted(ATTENTION))}")
    return ATTENTION[name]


def get_attention(name: str) -> Callable[..., jax.Array]:
    """The attention function registered under ``name`` (see :func:`get_spec` for errors).

    ``get_attention(name)(q, k, v)`` runs for every name whose spec has no ``init_params``; ``additive``,
    ``multiplicative`` and ``performer`` also need the params of :func:`init_attention_params` (module
    docstring).
    """
    return get_spec(name).fn


def init_attention_params(name: str, rng: jax.Array, *, head_dim: int, num_heads: int, **options: Any
                          ) -> dict[str, Any]:
    """Keyword params for variant ``name`` (empty dict if it needs none); ``options`` are the init's own
    (``npos_max`` and ``per_head`` of ``cope``), see :func:`init_option_names`."""
    spec = get_spec(name)
    if spec.init_params is None:
        return {}
    return spec.init_params(rng, head_dim=head_dim, num_heads=num_heads, **options)


def init_option_names(spec: AttentionSpec) -> tuple[str, ...]:
    """The options of ``spec.init_params`` beyond ``rng``, ``head_dim`` and ``num_heads`` (``cope``'s
    ``npos_max`` sizes its table; an :class:`~attnjax.ops.AttentionConfig` passes them to the init)."""
    if spec.init_params is None:
        return ()
    params = inspect.signature(spec.init_params).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY
                 and p.name not in ("head_dim", "num_heads"))
