"""FIRE, functional interpolation for relative positions (Li et al., ICLR 2024), inside the attention kernel.

The paper's bias, added to the logits of query ``i`` and key ``j`` for each head::

    b(i, j) = f_theta( psi(i - j) / psi(max(L, i)) ),    psi(x) = log(c x + 1),
    A = softmax(scale * Q K^T + b) V

``f_theta`` is a small MLP (one input, ``hidden = 32`` ReLU units, one output per head), ``c > 0`` and the
threshold ``L`` are learned. Dividing by ``psi(max(L, i))`` is the *progressive interpolation*: a query
at position ``i`` maps its keys' distances into ``[0, 1]``, so a longer input (a larger ``i``) is an
interpolation of what was trained, not an extrapolation; ``L`` keeps short prefixes from being stretched
to the whole ``[0, 1]`` range; ``psi`` spends more of that range on nearby keys.

The bias is a ``score_mod`` of :func:`attnjax.dot_product_attention`, evaluated per tile by the blockwise
kernel (no ``[N, T, S]`` bias is materialized) or on the dense logits, with gradients to the MLP, ``c``
and ``L`` through ``score_mod_params``.

Choices the paper leaves open, and what this module does (facts from the reference code, mcleish7/arithmetic,
``cramming/architectures/embeddings.py``, class ``FIRE``, used by Zhou et al. 2024 / McLeish et al. 2024):

* **Parametrization of L.** ``L = |lambda| * fire_threshold_base`` with ``fire_threshold_base = 512``
  fixed and the multiplier ``lambda`` learned (initialized to 1), as the reference does, so ``L`` moves at
  the scale of the optimizer's steps on ``lambda``.
* **psi.** ``psi(x) = log(|c x| + 1)`` (the reference's absolute value: a ``c`` that crosses 0 stays valid),
  ``c`` initialized to 0.1, and ``1e-6`` added to the denominator (the reference's ``eps``).
* **The MLP** is shared by the heads, with one output per head, initialized like PyTorch's ``nn.Linear``
  (weights and biases uniform in ``+-1/sqrt(fan_in)``), as the reference's.
* **Signed distance (bidirectional attention).** The reference takes ``psi(|i - j|)``, symmetric, and
  normalizes by ``max(L, i)``. Here the MLP sees ``r = psi(|i - j|) / psi(max(L, i, j))`` and a *second
  feature*, ``a = 1 if j > i else 0`` (the key comes after the query), which enters the hidden layer
  through its own weights ``fire_w_sign`` (initialized to 0)::

      f(r, a) = w_out^T relu(w_in r + w_sign a + b_in) + b_out

  Under causal attention every visible key has ``j <= i``, so ``a = 0`` and ``max(L, i, j) = max(L, i)``:
  exactly the paper's (and the reference's) bias, and ``fire_w_sign`` gets zero gradient. Without a
  causal mask it starts as the reference's symmetric bias and can learn to tell keys before the query
  from keys after it; normalizing by ``max(L, i, j)`` keeps ``r`` in ``[0, 1]`` for later keys too
  (``|i - j| <= max(i, j)``), the bounded input the interpolation is for.
* **Randomized positions** (Ruoss et al. 2023; the reference's ``max_length`` option): ``positions
  [B, T]`` and ``key_positions [B, S]`` integer arrays replace ``i`` and ``j`` everywhere above (the
  distance and the normalizer) and are looked up inside the ``score_mod`` with ``q_idx``/``kv_idx``.
  Causality and windows still follow the sequence order (the indices), which is the positions' order
  when they are sorted, as ``attnjax.ops.randomized_positions`` draws them.
* The bias is added after ``scale * q.k`` and any ``bias`` argument (the ``score_mod`` order), before masks.

The ``[B, N, T, S]`` float32 weights of :func:`fire_weights` are materialized (for diagnostics).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops import checks
from attnjax.ops.dot_product import attention_weights, dot_product_attention
from attnjax.ops.flex_params import check_learned

Array = jnp.ndarray

FIRE_HIDDEN = 32  # the MLP's width (the paper's and the reference's)
FIRE_C = 0.1  # initial c of psi(x) = log(|c x| + 1)
FIRE_THRESHOLD = 512.0  # fire_threshold_base: L = |fire_threshold_scale| * 512 (the reference's init_L)
FIRE_EPS = 1e-6  # added to psi(max(L, i, j))


def fire_init(rng: jax.Array, *, head_dim: int, num_heads: int, hidden: int = FIRE_HIDDEN,
              c: float = FIRE_C) -> dict[str, jax.Array]:
    """FIRE's learned parameters, as keywords of :func:`fire_attention`.

    Args:
        rng: PRNG key.
        head_dim: ``H`` (unused: FIRE's parameters do not depend on it; the registry's convention).
        num_heads: ``N``, the MLP's outputs (one bias per query head).
        hidden: the MLP's width.
        c: initial ``c``.

    Returns:
        ``fire_w_in [hidden]``, ``fire_w_sign [hidden]`` (zeros), ``fire_b_in [hidden]``,
        ``fire_w_out [hidden, N]``, ``fire_b_out [N]``, ``fire_c []`` and ``fire_threshold_scale []`` (1.0),
        float32. The MLP layers are initialized like PyTorch's ``nn.Linear`` (uniform in
        ``+-1/sqrt(fan_in)``, weights and biases): ``+-1`` for the first layer, ``+-1/sqrt(hidden)`` for the
        second.
    """
    hidden = checks.check_positive_int("hidden", hidden)
    num_heads = checks.check_positive_int("num_heads", num_heads)
    k_in, k_b_in, k_out, k_b_out = jax.random.split(rng, 4)
    uniform = lambda k, shape, bound: jax.random.uniform(k, shape, jnp.float32, -bound, bound)  # noqa: E731
    out_bound = 1.0 / np.sqrt(hidden)
    return {"fire_w_in": uniform(k_in, (hidden,), 1.0),
            "fire_w_sign": jnp.zeros((hidden,), jnp.float32),
            "fire_b_in": uniform(k_b_in, (hidden,), 1.0),
            "fire_w_out": uniform(k_out, (hidden, num_heads), out_bound),
            "fire_b_out": uniform(k_b_out, (num_heads,), out_bound),
            "fire_c": jnp.asarray(c, jnp.float32),
            "fire_threshold_scale": jnp.ones((), jnp.float32)}


def fire_bias_entry(i: Array, j: Array, head: Array, params: dict[str, Any]) -> Array:
    """FIRE's bias for one (query position ``i``, key position ``j``, query head) triple (module docstring).

    Args:
        i, j: scalar positions (any numeric dtype).
        head: scalar int, the query head.
        params: ``w_in``, ``w_sign``, ``b_in`` ``[hidden]``, ``w_out [hidden, N]``, ``b_out [N]``, ``c []``
            and ``threshold []`` (``L`` itself, ``|fire_threshold_scale| * fire_threshold_base``).
    """
    i, j = jnp.asarray(i, jnp.float32), jnp.asarray(j, jnp.float32)
    c = params["c"]
    psi = lambda x: jnp.log(jnp.abs(c * x) + 1.0)  # noqa: E731
    r = psi(jnp.abs(i - j)) / (psi(jnp.maximum(jnp.maximum(i, j), params["threshold"])) + FIRE_EPS)
    after = (j > i).astype(r.dtype)
    hidden = jax.nn.relu(params["w_in"] * r + params["w_sign"] * after + params["b_in"])
    return jnp.dot(hidden, params["w_out"][:, head]) + params["b_out"][head]


def fire_score_mod(score, batch, head, q_idx, kv_idx, params):
    """``score + b(i, j)`` with ``i``, ``j`` the indices or, when given, ``params["positions"][batch, q_idx]``
    and ``params["key_positions"][batch, kv_idx]`` (the ``score_mod`` of :func:`fire_attention`)."""
    i = params["positions"][batch, q_idx] if "positions" in params else q_idx
    j = params["key_positions"][batch, kv_idx] if "key_positions" in params else kv_idx
    return score + fire_bias_entry(i, j, head, params).astype(score.dtype)


def _check_positions(name: str, positions: Any, batch: int, length: int) -> Array:
    """``[L]`` or ``[B, L]`` integer positions as int32 ``[B, L]``."""
    shape = tuple(np.shape(positions))
    if shape not in ((length,), (batch, length)):
        raise ValueError(f"{name} must have shape [L] = ({length},) or [B, L] = {(batch, length)}, got {shape}")
    if not jnp.issubdtype(jnp.result_type(positions), jnp.integer):
        raise TypeError(f"{name} must be an integer array (positions are looked up with the indices), got dtype "
                        f"{jnp.result_type(positions)}")
    return jnp.broadcast_to(jnp.asarray(positions, jnp.int32), (batch, length))


def _fire_params(fn_name, query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths, learned,
                 fire_threshold_base, positions, key_positions) -> dict[str, Any]:
    """Checks everything FIRE adds; returns its ``score_mod_params``."""
    B, T, S, N, _, _ = checks.check_inputs(query, key, value, bias=bias, mask=mask,
                                           query_seq_lengths=query_seq_lengths,
                                           key_value_seq_lengths=key_value_seq_lengths)
    hidden = np.shape(learned["fire_w_in"])[0] if learned["fire_w_in"] is not None and np.ndim(
        learned["fire_w_in"]) == 1 else None
    check_learned(fn_name, "fire", learned, {
        "fire_w_in": ((None,), "[hidden]"), "fire_w_sign": ((hidden,), "[hidden]"),
        "fire_b_in": ((hidden,), "[hidden]"), "fire_w_out": ((hidden, N), "[hidden, N]"),
        "fire_b_out": ((N,), "[N]"), "fire_c": ((), "[]"), "fire_threshold_scale": ((), "[]")})
    checks.check_positive("fire_threshold_base", fire_threshold_base)
    params = {name[len("fire_"):]: jnp.asarray(value, jnp.float32) for name, value in learned.items()
              if name != "fire_threshold_scale"}
    params["threshold"] = jnp.abs(jnp.asarray(learned["fire_threshold_scale"], jnp.float32)) * fire_threshold_base
    if positions is None and key_positions is not None:
        raise ValueError("key_positions needs positions (the query positions) too")
    if positions is not None:
        if key_positions is None and S != T:
            raise ValueError(f"key_positions is needed when keys and queries differ in length (self-attention "
                             f"shares positions): query {tuple(np.shape(query))}, key {tuple(np.shape(key))}")
        params["positions"] = _check_positions("positions", positions, B, T)
        params["key_positions"] = (params["positions"] if key_positions is None
                                   else _check_positions("key_positions", key_positions, B, S))
    return params


def fire_attention(query: Array, key: Array, value: Array, bias: Array | None = None, mask: Array | None = None, *,
                   is_causal: bool = False, query_seq_lengths: Array | None = None,
                   key_value_seq_lengths: Array | None = None, fire_w_in: Array | None = None,
                   fire_w_sign: Array | None = None, fire_b_in: Array | None = None,
                   fire_w_out: Array | None = None, fire_b_out: Array | None = None, fire_c: Array | None = None,
                   fire_threshold_scale: Array | None = None, fire_threshold_base: float = FIRE_THRESHOLD,
                   positions: Array | None = None, key_positions: Array | None = None, scale: float | None = None,
                   local_window_size: int | tuple[int, int] | None = None, dropout_rate: float = 0.0,
                   dropout_rng: jax.Array | None = None, implementation: str | None = None,
                   block_sizes: Any = None) -> Array:
    """``softmax(scale * Q K^T + bias + b_FIRE) V`` (module docstring for ``b_FIRE`` and every choice).

    Args:
        query: ``[B, T, N, H]``; key, value: ``[B, S, K, H]`` (same dtype; ``K < N``: grouped-query).
        bias, mask, is_causal, query_seq_lengths, key_value_seq_lengths, scale, local_window_size,
            dropout_rate, dropout_rng, block_sizes: as in :func:`attnjax.dot_product_attention`.
        fire_w_in, fire_w_sign, fire_b_in: ``[hidden]``, the MLP's first layer (the distance feature's
            weights, the key-after-query feature's weights, the biases).
        fire_w_out: ``[hidden, N]`` and fire_b_out: ``[N]``, its second layer (one output per query head).
        fire_c: ``[]``, the ``c`` of ``psi``.
        fire_threshold_scale: ``[]``, the learned multiplier of ``L``.
            All seven are learned, with no default: :func:`fire_init` (or
            ``attnjax.ops.registry.init_attention_params("fire", ...)``) builds them.
        fire_threshold_base: ``L = |fire_threshold_scale| * fire_threshold_base`` (default 512).
        positions: ``[T]`` or ``[B, T]`` integer query positions (randomized positions), default ``0..T-1``.
        key_positions: ``[S]`` or ``[B, S]`` integer key positions, default ``positions`` (self-attention,
            ``S == T``); only with ``positions``.
        implementation: None, ``"dense"``/``"xla"`` or ``"blockwise"`` (the paths that evaluate a
            ``score_mod``); any other raises ValueError.

    Returns:
        ``[B, T, N, H]`` in the query dtype; a query row with no visible key is zeros.

    Raises:
        ValueError: a missing learned parameter (named, with how to build it), wrong parameter or position
            shapes, and everything :func:`attnjax.dot_product_attention` refuses.
        TypeError: non-floating parameters, non-integer positions.
    """
    learned = dict(fire_w_in=fire_w_in, fire_w_sign=fire_w_sign, fire_b_in=fire_b_in, fire_w_out=fire_w_out,
                   fire_b_out=fire_b_out, fire_c=fire_c, fire_threshold_scale=fire_threshold_scale)
    params = _fire_params("fire_attention", query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths,
                          learned, fire_threshold_base, positions, key_positions)
    return dot_product_attention(query, key, value, bias, mask, scale=scale, is_causal=is_causal,
                                 query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                                 local_window_size=local_window_size, dropout_rate=dropout_rate,
                                 dropout_rng=dropout_rng, implementation=implementation, block_sizes=block_sizes,
                                 score_mod=fire_score_mod, score_mod_params=params)


def fire_weights(query: Array, key: Array, bias: Array | None = None, mask: Array | None = None, *,
                 is_causal: bool = False, query_seq_lengths: Array | None = None,
                 key_value_seq_lengths: Array | None = None, fire_w_in: Array | None = None,
                 fire_w_sign: Array | None = None, fire_b_in: Array | None = None, fire_w_out: Array | None = None,
                 fire_b_out: Array | None = None, fire_c: Array | None = None,
                 fire_threshold_scale: Array | None = None, fire_threshold_base: float = FIRE_THRESHOLD,
                 positions: Array | None = None, key_positions: Array | None = None, scale: float | None = None,
                 local_window_size: int | tuple[int, int] | None = None) -> Array:
    """The ``[B, N, T, S]`` float32 attention weights of :func:`fire_attention` (same keywords, no value,
    dropout or implementation); rows with no visible key are zeros."""
    learned = dict(fire_w_in=fire_w_in, fire_w_sign=fire_w_sign, fire_b_in=fire_b_in, fire_w_out=fire_w_out,
                   fire_b_out=fire_b_out, fire_c=fire_c, fire_threshold_scale=fire_threshold_scale)
    params = _fire_params("fire_weights", query, key, key, bias, mask, query_seq_lengths, key_value_seq_lengths,
                          learned, fire_threshold_base, positions, key_positions)
    return attention_weights(query, key, bias, mask, scale=scale, is_causal=is_causal,
                             query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                             local_window_size=local_window_size, score_mod=fire_score_mod, score_mod_params=params)


__all__ = ["FIRE_HIDDEN", "fire_attention", "fire_bias_entry", "fire_init", "fire_score_mod", "fire_weights"]
