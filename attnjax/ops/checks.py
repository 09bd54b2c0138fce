"""Up-front argument checks shared by every attention function.

Each check raises ``ValueError``/``TypeError`` naming the argument, the expected and the actual
shape or value, so a malformed call never reaches XLA (where it would be an opaque trace) and never
silently broadcasts into a wrong result.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

Window = tuple[int, int]


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def check_floating(name: str, x: Any) -> None:
    """Raises TypeError unless ``x`` has a floating dtype."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype (float32, bfloat16, float16), got {dtype}")


def check_qkv(query: Any, key: Any, value: Any, *, same_dtype: bool = True) -> tuple[int, int, int, int, int, int]:
    """Checks ``query [B, T, N, H]``, ``key [B, S, K, H]``, ``value [B, S, K, Hv]``.

    Returns:
        ``(B, T, S, N, K, H)``.

    Raises:
        ValueError: wrong rank, batch/length/head mismatch, or ``N`` not divisible by ``K``.
        TypeError: non-floating dtypes, or (with ``same_dtype``) differing dtypes.
    """
    for name, x in (("query", query), ("key", key), ("value", value)):
        if np.ndim(x) != 4:
            raise ValueError(f"{name} must have rank 4 [B, T|S, N|K, H], got shape {_shape(x)}")
        check_floating(name, x)
    B, T, N, H = _shape(query)
    Bk, S, K, Hk = _shape(key)
    Bv, Sv, Kv, _ = _shape(value)
    if Bk != B or Bv != B:
        raise ValueError(
            f"batch sizes differ: query {_shape(query)}, key {_shape(key)}, value {_shape(value)} (axis 0)")
    if Hk != H:
        raise ValueError(f"key head dim must equal query head dim {H}: query {_shape(query)}, key {_shape(key)}")
    if (Sv, Kv) != (S, K):
        raise ValueError(f"value must match key on [S, K]: key {_shape(key)}, value {_shape(value)}")
    if K == 0 or N % K != 0:
        raise ValueError(
            f"query heads N={N} must be a multiple of key/value heads K={K}: "
            f"query {_shape(query)}, key {_shape(key)}")
    if same_dtype:
        dtypes = {jnp.result_type(x) for x in (query, key, value)}
        if len(dtypes) != 1:
            raise TypeError(
                f"query, key and value must share one dtype, got {jnp.result_type(query)}, "
                f"{jnp.result_type(key)}, {jnp.result_type(value)}")
    return B, T, S, N, K, H


def check_inputs(query: Any, key: Any, value: Any, *, bias: Any = None, mask: Any = None, query_seq_lengths: Any = None,
                 key_value_seq_lengths: Any = None) -> tuple[int, int, int, int, int, int]:
    """:func:`check_qkv`, then ``bias``/``mask`` against ``[B, N, T, S]`` and both ``[B]`` length arrays.

    Returns:
        ``(B, T, S, N, K, H)``.
    """
    B, T, S, N, K, H = check_qkv(query, key, value)
    check_mask_and_bias(mask, bias, (B, N, T, S))
    check_seq_lengths("query_seq_lengths", query_seq_lengths, B)
    check_seq_lengths("key_value_seq_lengths", key_value_seq_lengths, B)
    return B, T, S, N, K, H


def check_broadcastable(name: str, x: Any, target: tuple[int, ...], *, left_pad: bool = False) -> None:
    """Raises ValueError unless ``x`` has ``len(target)`` dims, each 1 or equal to the target's.

    With ``left_pad``, fewer dims are accepted and count as leading 1s (NumPy and ``jax.nn`` broadcasting).
    """
    shape = _shape(x)
    letters = "BNTS" if len(target) == 4 else ""
    padded = (1,) * (len(target) - len(shape)) + shape if left_pad else shape
    if len(padded) != len(target) or any(d not in (1, t) for d, t in zip(padded, target)):
        ranks = f"rank <= {len(target)}, left-padded with 1s" if left_pad else f"rank {len(target)}"
        raise ValueError(
            f"{name} must be broadcastable to {letters} {target} ({ranks}; each dim 1 or equal), got shape {shape}")


def check_mask_and_bias(mask: Any, bias: Any, target: tuple[int, int, int, int]) -> None:
    """Checks a boolean ``mask`` and a floating ``bias``, both broadcastable to ``[B, N, T, S]``.

    Like ``jax.nn``, ranks below 4 are left-padded (a ``[S]`` mask or an ``[N, T, S]`` bias); see
    :func:`pad_to_rank4`.
    """
    if mask is not None:
        check_broadcastable("mask", mask, target, left_pad=True)
        if jnp.result_type(mask) != jnp.bool_:
            raise TypeError(
                f"mask must be boolean (True = attend), got dtype {jnp.result_type(mask)}; "
                "pass an additive mask as bias")
    if bias is not None:
        check_broadcastable("bias", bias, target, left_pad=True)
        check_floating("bias", bias)


def pad_to_rank4(x: Any) -> Any:
    """A checked ``mask``/``bias`` of rank <= 4 reshaped to rank 4 with leading 1s (None stays None)."""
    if x is None:
        return None
    x = jnp.asarray(x)
    return x.reshape((1,) * (4 - x.ndim) + x.shape)


def check_seq_lengths(name: str, lengths: Any, batch: int) -> None:
    """Checks an integer ``[B]`` array of sequence lengths."""
    if lengths is None:
        return
    if _shape(lengths) != (batch,):
        raise ValueError(f"{name} must have shape [B] = ({batch},), got {_shape(lengths)}")
    if not jnp.issubdtype(jnp.result_type(lengths), jnp.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {jnp.result_type(lengths)}")


def check_segment_ids(query_segment_ids: Any, key_segment_ids: Any, query: Any, key: Any) -> None:
    """Checks integer segment ids ``[B, T]`` (queries) and ``[B, S]`` (keys; may be left out for
    self-attention, ``S == T``, when they equal the query ids)."""
    if query_segment_ids is None:
        if key_segment_ids is not None:
            raise ValueError("key_segment_ids needs query_segment_ids too (only the key ids may be left out, "
                             "for self-attention)")
        return
    (B, T), S = _shape(query)[:2], _shape(key)[1]
    if key_segment_ids is None and S != T:
        raise ValueError(f"key_segment_ids is needed when keys and queries differ in length: query "
                         f"{_shape(query)}, key {_shape(key)}")
    for name, ids, length in (("query_segment_ids", query_segment_ids, T), ("key_segment_ids", key_segment_ids, S)):
        if ids is None:
            continue
        if _shape(ids) != (B, length):
            raise ValueError(f"{name} must have shape [B, L] = {(B, length)}, got {_shape(ids)}")
        if not jnp.issubdtype(jnp.result_type(ids), jnp.integer):
            raise TypeError(f"{name} must be an integer array, got dtype {jnp.result_type(ids)}")


def normalize_window(local_window_size: int | tuple[int, int] | None, *,
                     name: str = "local_window_size") -> Window | None:
    """Turns ``w`` into ``(w, w)`` and checks both sides are non-negative ints."""
    if local_window_size is None:
        return None
    window = local_window_size
    if isinstance(window, (int, np.integer)) and not isinstance(window, bool):
        window = (int(window), int(window))
    if (not isinstance(window, (tuple, list)) or len(window) != 2
            or not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool) for w in window)):
        raise ValueError(
            f"{name} must be an int or a (left, right) pair of ints, got {local_window_size!r}")
    left, right = int(window[0]), int(window[1])
    if left < 0 or right < 0:
        raise ValueError(f"{name} sides must be >= 0, got (left, right) = {(left, right)}")
    return left, right


def check_positive(name: str, value: float | None) -> None:
    """Raises ValueError unless ``value`` is None or a finite number > 0."""
    if value is None:
        return
    if not np.isscalar(value) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as a Python int; raises ValueError unless it is an int or NumPy integer (not a bool)
    ``>= minimum``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    """:func:`check_int` with ``minimum=1``."""
    return check_int(name, value, 1)


def default_scale(scale: Any, head_dim: int) -> Any:
    """The logit multiplier: ``scale`` as given (it may be traced), or ``1 / sqrt(head_dim)`` when None."""
    return 1.0 / np.sqrt(head_dim) if scale is None else scale


def check_dropout(dropout_rate: float, dropout_rng: Any) -> None:
    """Checks ``0 <= dropout_rate < 1`` and that a key is given whenever the rate is positive."""
    if not (0.0 <= float(dropout_rate) < 1.0):
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
    if dropout_rate > 0 and dropout_rng is None:
        raise ValueError(f"dropout_rate={dropout_rate} needs a dropout_rng key, got None")
