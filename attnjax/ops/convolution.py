"""Causal depthwise convolutions over the sequence axis: a direct one and an FFT one, equal in exact arithmetic.

They are the token mixers of the attention-free models (:mod:`attnjax.nn.mixers`): each of the ``D`` channels
of ``u [B, L, D]`` is convolved with its own filter ``kernel [K, D]``, where ``kernel[s, d]`` weighs the input
``s`` positions back (lag ``s``)::

    y[b, t, d] = sum_{s = 0}^{min(t, K - 1)} kernel[s, d] * u[b, t - s, d]

so output ``t`` depends on inputs ``0..t`` only. :func:`causal_conv` computes the sum directly (the short filters
of BaseConv and Hyena, and the exact reference for long ones); :func:`fft_causal_conv` in ``O(D L log L)``
(the long filters, ``K`` up to ``L``). :data:`CONV_METHODS` names both for configs.

Causality is exact on the direct path: a later input gets exactly zero weight and gradient. The FFT path mixes
every position inside the transform, so a later input reaches an earlier output at float32 rounding level
(about ``1e-7`` of the real taps' weight), never more; pick ``"direct"`` where exact zeros matter.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops import checks

Array = jnp.ndarray


def _check(u: Any, kernel: Any) -> tuple[int, int, int, int]:
    """Checks ``u [B, L, D]`` and ``kernel [K, D]``; returns ``(B, L, D, K)``."""
    if np.ndim(u) != 3:
        raise ValueError(f"u must have rank 3 [B, L, D], got shape {tuple(np.shape(u))}")
    if np.ndim(kernel) != 2:
        raise ValueError(f"kernel must have rank 2 [K, D] (taps, channels), got shape {tuple(np.shape(kernel))}")
    checks.check_floating("u", u)
    checks.check_floating("kernel", kernel)
    B, L, D = np.shape(u)
    K, Dk = np.shape(kernel)
    if Dk != D:
        raise ValueError(f"kernel [K, D] must have D = {D} channels like u {tuple(np.shape(u))}, "
                         f"got kernel shape {tuple(np.shape(kernel))}")
    if K < 1 or L < 1:
        raise ValueError(f"u and kernel need at least one position and one tap, got u {tuple(np.shape(u))}, "
                         f"kernel {tuple(np.shape(kernel))}")
    return B, L, D, K


# Up to this many taps, K shifted multiply-adds are cheapest; beyond it one [L, L, D] Toeplitz product is
# (XLA's grouped lax.conv, the obvious primitive, is an order of magnitude slower than either on CPU).
_MAX_SHIFTED_TAPS = 16


def causal_conv(u: Array, kernel: Array) -> Array:
    """Direct causal depthwise convolution: ``y[t] = sum_s kernel[s] * u[t - s]``, ``s = 0..K-1``.

    Short filters (``K <= 16``) run as ``K`` shifted multiply-adds; longer ones as one product with the
    ``[L, L, D]`` Toeplitz matrix of the filter (``O(L^2 D)`` work and memory: the exact reference for
    :func:`fft_causal_conv`, not its replacement at long lengths). A later input has exactly zero weight,
    hence exactly zero gradient.

    Args:
        u: ``[B, L, D]`` floating.
        kernel: ``[K, D]``; ``kernel[s, d]`` is channel ``d``'s weight at lag ``s`` (any ``K >= 1``; taps at lags
            ``>= L`` reach no output inside the sequence and are dropped).

    Returns:
        ``[B, L, D]`` in ``u``'s dtype (computed in float32).

    Raises:
        ValueError: wrong ranks, channel counts that differ, an empty axis.
        TypeError: non-floating dtypes.
    """
    B, L, D, K = _check(u, kernel)
    x = jnp.asarray(u, jnp.float32)
    k = jnp.asarray(kernel, jnp.float32)[:L]
    K = k.shape[0]
    if K <= _MAX_SHIFTED_TAPS:
        padded = jnp.pad(x, ((0, 0), (K - 1, 0), (0, 0)))  # K - 1 zeros before the sequence, none after
        y = sum(k[s] * padded[:, K - 1 - s:K - 1 - s + L] for s in range(K))
    else:
        lag = np.arange(L)[:, None] - np.arange(L)[None, :]  # [T, S]: output t, input s
        # The where (not only the gathered taps) puts exact zeros above the diagonal.
        toeplitz = jnp.where(((lag >= 0) & (lag < K))[..., None], k[np.clip(lag, 0, K - 1)], 0.0)  # [T, S, D]
        y = jnp.einsum("TSD,BSD->BTD", toeplitz, x, precision=jax.lax.Precision.HIGHEST)
    return y.astype(jnp.result_type(u))


def fft_causal_conv(u: Array, kernel: Array) -> Array:
    """:func:`causal_conv` through the FFT, in ``O(L log L)`` per channel: the long-filter path.

    The transforms have size ``2 L``: a linear convolution of ``L`` inputs with at most ``L`` taps has
    ``2 L - 1`` outputs, so at size ``2 L`` no output wraps around onto an earlier position (a size-``L``
    FFT would make the convolution circular, letting the last inputs leak into the first outputs).

    Args:
        u: ``[B, L, D]`` floating.
        kernel: ``[K, D]`` at lags ``0..K-1``; taps at lags ``>= L`` are dropped first (they reach no output
            inside the sequence, and left in the transform they would wrap around onto earlier outputs).

    Returns:
        ``[B, L, D]`` in ``u``'s dtype (computed in float32); equal to :func:`causal_conv` up to float32
        rounding.

    Raises:
        ValueError, TypeError: as :func:`causal_conv`.
    """
    B, L, D, K = _check(u, kernel)
    n = 2 * L
    k = jnp.asarray(kernel, jnp.float32)[:L]
    u_f = jnp.fft.rfft(jnp.asarray(u, jnp.float32), n=n, axis=1)  # [B, L + 1, D]
    k_f = jnp.fft.rfft(k, n=n, axis=0)  # [L + 1, D]
    y = jnp.fft.irfft(u_f * k_f[None], n=n, axis=1)[:, :L]
    return y.astype(jnp.result_type(u))


# method name -> ``(u [B, L, D], kernel [K, D]) -> [B, L, D]``; the long filters of the mixer models pick one by name.
CONV_METHODS = {"fft": fft_causal_conv, "direct": causal_conv}


def get_conv(method: str):
    """The convolution of :data:`CONV_METHODS` named ``method``.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    if not isinstance(method, str) or method not in CONV_METHODS:
        raise ValueError(f"conv method must be one of {sorted(CONV_METHODS)}, got {method!r}")
    return CONV_METHODS[method]


__all__ = ["CONV_METHODS", "causal_conv", "fft_causal_conv", "get_conv"]
