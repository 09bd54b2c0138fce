"""Accelerator back ends: ``"cudnn"``, ``"pallas"``, ``"pallas_interpret"``, and the choice for ``None``.

* ``"cudnn"``: ``jax.nn.dot_product_attention(implementation="cudnn")`` (cuDNN flash attention).
  Needs a CUDA GPU and float16/bfloat16 inputs; no ``logit_softcap``, no dropout, and a local window
  only as ``(left, 0)`` or with ``is_causal``.
* ``"pallas"``: the Pallas kernels that ship with JAX, ``jax.experimental.pallas.ops.gpu.attention.mha``
  on GPU and ``jax.experimental.pallas.ops.tpu.flash_attention`` on TPU. They take only ``scale`` and
  ``is_causal`` (grouped-query heads are repeated to ``N``); anything else is an error.
* ``"pallas_interpret"``: the same GPU ``mha`` kernel run by the Pallas interpreter, on any back end
  (CPU included). It is slow and exists to test the kernel path without an accelerator; it is never
  chosen automatically.

Asking for a back end by name never falls back silently: if it cannot run (wrong platform, or an
option it cannot express), it raises ``ValueError`` saying why. ``implementation=None`` goes through
:func:`select_implementation`, a pure function of the platform, the shapes and the options.

Both kernel paths keep the attnjax convention that a query row with no visible key returns zeros.

Derivatives: reverse mode (``jax.grad``, ``jax.vjp``, ``jax.jacrev``) is each kernel's own backward, unchanged.
Forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``) computes the primal with the kernel and the tangent
with the blockwise kernel's tangent pass on the same inputs and options (:func:`with_blockwise_tangent`, through
:mod:`attnjax.ops.forward_mode`), so it works at every length in ``O(T + S)`` memory, and under ``vmap``.
Derivatives of derivatives (``jax.hessian``, Hessian-vector products, ``jacfwd`` of ``jacfwd``) raise
``NotImplementedError``: the kernels cannot be differentiated beyond their own backward; ``"blockwise"`` and
``"dense"`` take them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from attnjax.ops import checks
from attnjax.ops.blockwise import blockwise_attention
from attnjax.ops.forward_mode import with_tangent_pass
from attnjax.ops.masks import attention_mask
from attnjax.ops.primitives import repeat_kv_heads
from attnjax.ops.visibility import Visibility

# From experiments/bench/attention.py on a 2-core CPU (float32, N=8, H=64, forward+backward): the
# blockwise path already beats the dense one at T=S=1024 and its memory grows as O(T + S), so it
# takes over from T*S = 512*512 up; below that the dense path's single fused matmul wins.
BLOCKWISE_MIN_LOGITS = 512 * 512

_GPU_PLATFORMS = ("gpu", "cuda", "rocm")
_CUDNN_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def cudnn_unsupported_reason(platform: str, query_shape, value_shape, dtype, *, is_causal: bool = False,
                             window: tuple[int, int] | None = None, logit_softcap: float | None = None,
                             dropout_rate: float = 0.0) -> str | None:
    """Why cuDNN flash attention cannot run this call, or None if it can (pure; no device query).

    Args:
        platform: ``jax.default_backend()``-style name: ``"cpu"``, ``"gpu"``, ``"cuda"``, ``"rocm"``, ``"tpu"``.
        query_shape: ``(B, T, N, H)``.
        value_shape: ``(B, S, K, Hv)``.
        dtype: input dtype.
        is_causal, window, logit_softcap, dropout_rate: the call's options.
    """
    if platform not in ("gpu", "cuda"):
        return f"cuDNN attention needs a CUDA GPU back end, found {platform!r}"
    if jnp.dtype(dtype) not in _CUDNN_DTYPES:
        return f"cuDNN flash attention needs float16 or bfloat16 inputs, got {jnp.dtype(dtype)}"
    H, Hv = query_shape[-1], value_shape[-1]
    if Hv != H:
        return f"cuDNN attention needs value head dim == query head dim, got {Hv} != {H}"
    if H % 8 or H > 128:
        return f"cuDNN flash attention needs a head dim that is a multiple of 8 and <= 128, got {H}"
    if logit_softcap is not None:
        return "cuDNN attention does not implement logit_softcap"
    if dropout_rate:
        return "attnjax does not route dropout through cuDNN; use implementation='dense'"
    if window is not None and window[1] != 0 and not is_causal:
        return f"cuDNN supports only left windows (left, 0) unless is_causal, got local_window_size={window}"
    return None


def pallas_unsupported_reason(platform: str, query_shape, key_shape, value_shape, *, dtype: Any = None,
                              has_bias: bool = False, has_mask: bool = False, has_seq_lengths: bool = False,
                              window: tuple[int, int] | None = None, logit_softcap: float | None = None,
                              dropout_rate: float = 0.0, interpret: bool = False) -> str | None:
    """Why the Pallas kernels cannot run this call, or None if they can (pure; no device query)."""
    if not interpret and platform not in _GPU_PLATFORMS + ("tpu",):
        return (f"Pallas attention kernels need a GPU or TPU back end, found {platform!r} "
                "(use implementation='pallas_interpret' to run the GPU kernel in the Pallas interpreter)")
    if dtype is not None and jnp.dtype(dtype) == jnp.float64:
        return "the Pallas kernels compute in float32; float64 inputs need implementation='dense' or 'blockwise'"
    unsupported = [name for name, used in (("bias", has_bias), ("mask", has_mask),
                                           ("query_seq_lengths/key_value_seq_lengths", has_seq_lengths),
                                           ("local_window_size", window is not None),
                                           ("logit_softcap", logit_softcap is not None),
                                           ("dropout_rate", bool(dropout_rate))) if used]
    if unsupported:
        return (f"the Pallas attention kernels take only scale and is_causal, got {', '.join(unsupported)}; "
                "use implementation='blockwise' or 'dense'")
    if value_shape[-1] != query_shape[-1]:
        return f"Pallas attention needs value head dim == query head dim, got {value_shape[-1]} != {query_shape[-1]}"
    return None


def select_implementation(platform: str, query_shape, key_shape, value_shape, dtype, *, has_bias: bool = False,
                          has_mask: bool = False, has_seq_lengths: bool = False, is_causal: bool = False,
                          window: tuple[int, int] | None = None, logit_softcap: float | None = None,
                          dropout_rate: float = 0.0, return_residual: bool = False, has_score_mod: bool = False,
                          has_mask_mod: bool = False) -> str:
    """The implementation ``implementation=None`` uses (pure function of platform, shapes and options).

    * CUDA GPU: ``"cudnn"`` when :func:`cudnn_unsupported_reason` finds nothing against it;
    * TPU: ``"pallas"`` (TPU flash attention) for plain or causal attention with ``T, S`` multiples
      of 128, at least 1024;
    * otherwise ``"blockwise"`` once ``T * S >= BLOCKWISE_MIN_LOGITS``, else ``"dense"``; dropout
      always takes one of these two (the only paths with attention dropout), and so do
      ``return_residual`` (the only paths that return the log-sum-exp) and ``score_mod``/``mask_mod``
      (the only paths that evaluate them).

    Args:
        platform: back end name, e.g. ``jax.default_backend()``.
        query_shape, key_shape, value_shape: ``[B, T, N, H]``, ``[B, S, K, H]``, ``[B, S, K, Hv]``.
        dtype: input dtype.
        has_bias, has_mask, has_seq_lengths, is_causal, window, logit_softcap, dropout_rate,
            return_residual, has_score_mod, has_mask_mod: options.

    Returns:
        A key of ``attnjax.ops.IMPLEMENTATIONS``.
    """
    T, S = query_shape[1], key_shape[1]
    portable = "blockwise" if T * S >= BLOCKWISE_MIN_LOGITS else "dense"
    if return_residual or has_score_mod or has_mask_mod:
        return portable
    if cudnn_unsupported_reason(platform, query_shape, value_shape, dtype, is_causal=is_causal, window=window,
                                logit_softcap=logit_softcap, dropout_rate=dropout_rate) is None:
        return "cudnn"
    if (platform == "tpu" and T % 128 == 0 and S % 128 == 0 and min(T, S) >= 1024
            and pallas_unsupported_reason(platform, query_shape, key_shape, value_shape, dtype=dtype, has_bias=has_bias,
                                          has_mask=has_mask, has_seq_lengths=has_seq_lengths, window=window,
                                          logit_softcap=logit_softcap, dropout_rate=dropout_rate) is None):
        return "pallas"
    return portable


def _rows_with_keys(T: int, S: int, mask, *, is_causal, query_seq_lengths, key_value_seq_lengths, window):
    """Boolean ``[B|1, N|1, T, 1]``: which query rows see at least one key (None: all of them).

    Without a user mask this is O(B*T) from the visibility rule; with one, the mask is combined exactly.
    """
    if mask is not None:
        full = attention_mask(T, S, mask=mask, is_causal=is_causal, query_seq_lengths=query_seq_lengths,
                              key_value_seq_lengths=key_value_seq_lengths, window=window)
        return jnp.any(full, axis=-1, keepdims=True)
    rows = Visibility(is_causal, window).rows_with_keys(T, S, query_seq_lengths=query_seq_lengths,
                                                       key_value_seq_lengths=key_value_seq_lengths)
    return None if rows is None else rows[:, None, :, None]


def _zero_rows_without_keys(out, rows_ok):
    """``out [B, T, N, H]`` with rows that see no key set to 0 (the attnjax convention)."""
    if rows_ok is None:
        return out
    return jnp.where(jnp.swapaxes(rows_ok, 1, 2), out, jnp.zeros((), out.dtype))


def _jax_nn_attention(query, key, value, bias, mask, *, scale, is_causal, query_seq_lengths,
                      key_value_seq_lengths, window, jax_implementation):
    """``jax.nn.dot_product_attention`` on checked arguments, with attnjax's fully-masked-row zeros."""
    if window is not None and is_causal:
        window = (window[0], 0)  # equivalent under causality, and the only form cuDNN accepts
    as_i32 = lambda x: None if x is None else jnp.asarray(x, jnp.int32)
    out = jax.nn.dot_product_attention(
        query, key, value, bias=bias, mask=mask, scale=scale, is_causal=is_causal,
        query_seq_lengths=as_i32(query_seq_lengths), key_value_seq_lengths=as_i32(key_value_seq_lengths),
        local_window_size=window, implementation=jax_implementation)
    rows_ok = _rows_with_keys(query.shape[1], key.shape[1], mask, is_causal=is_causal,
                              query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                              window=window)
    return _zero_rows_without_keys(out, rows_ok)


def with_blockwise_tangent(kernel, query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                           query_seq_lengths=None, key_value_seq_lengths=None, window=None, what: str):
    """``kernel(query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths)``, differentiable in
    forward mode by the blockwise kernel's tangent pass and in reverse mode by the kernel's own VJP.

    The primal (and, under ``jax.grad``, the backward) is the kernel's; under ``jax.jvp``/``jax.jacfwd`` the
    output tangent is ``jax.jvp`` of :func:`~attnjax.ops.blockwise.blockwise_attention` on the same inputs and
    options (default block sizes), ``O(T + S)`` memory at every length (:mod:`attnjax.ops.forward_mode`).

    Args:
        kernel: an attention kernel on checked arguments, ``[B, T, N, Hv]`` out, whose derivative is its own
            ``jax.custom_vjp``; it must compute what :func:`blockwise_attention` computes with these options.
        query, key, value, bias: ``[B, T, N, H]``, ``[B, S, K, H]``, ``[B, S, K, Hv]`` and a rank-4 bias or
            None: the differentiated inputs.
        mask, query_seq_lengths, key_value_seq_lengths: rank-4 boolean mask, ``[B]`` lengths, or None.
        scale, is_causal, window: the options, as :func:`blockwise_attention` takes them.
        what: how a refused second-order derivative names the kernel, e.g. ``"implementation='cudnn'"``.
    """
    def call(args, consts):
        return kernel(*args, *consts)

    def tangent_pass(args, consts, tangents):
        mask, query_seq_lengths, key_value_seq_lengths = consts
        chosen = [i for i, t in enumerate(tangents) if t is not None]

        def blockwise(*xs):
            full = list(args)
            for i, x in zip(chosen, xs):
                full[i] = x
            return blockwise_attention(*full, mask, scale=scale, is_causal=is_causal,
                                       query_seq_lengths=query_seq_lengths,
                                       key_value_seq_lengths=key_value_seq_lengths, window=window)

        return jax.jvp(blockwise, tuple(args[i] for i in chosen), tuple(tangents[i] for i in chosen))[1]

    return with_tangent_pass(call, tangent_pass, (query, key, value, bias),
                             (mask, query_seq_lengths, key_value_seq_lengths), what=what)


def cudnn_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                    query_seq_lengths=None, key_value_seq_lengths=None, window=None, logit_softcap=None,
                    dropout_rate=0.0, dropout_rng=None):
    """cuDNN flash attention through ``jax.nn.dot_product_attention`` (checked arguments).

    ``jax.grad`` runs cuDNN's backward; ``jax.jvp``/``jax.jacfwd`` take the tangent from the blockwise kernel
    (:func:`with_blockwise_tangent`); second-order derivatives raise ``NotImplementedError``.

    Raises:
        ValueError: no CUDA GPU, or an option cuDNN cannot express (see :func:`cudnn_unsupported_reason`).
    """
    del dropout_rng
    platform = jax.default_backend()
    reason = cudnn_unsupported_reason(platform, query.shape, value.shape, query.dtype, is_causal=is_causal,
                                      window=window, logit_softcap=logit_softcap, dropout_rate=dropout_rate)
    if reason is not None:
        raise ValueError(f"implementation='cudnn' cannot run: {reason}")

    def kernel(query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths):
        return _jax_nn_attention(query, key, value, bias, mask, scale=scale, is_causal=is_causal,
                                 query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                                 window=window, jax_implementation="cudnn")

    return with_blockwise_tangent(kernel, query, key, value, bias, mask, scale=scale, is_causal=is_causal,
                                  query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                                  window=window, what="implementation='cudnn'")


def _traced_in_32_bits(kernel):
    """``kernel(*arrays)`` with its forward *and* backward traced with x64 off.

    JAX's Pallas attention kernels mix int32 grid indices with default-int constants, which
    ``jax.enable_x64`` turns into int64 (a TypeError). A ``with jax.enable_x64(False)`` around the call
    covers the forward only: the kernel's own backward is traced later, outside it. This wrapper
    recomputes the kernel's VJP inside the context in its backward, so it costs one extra forward and
    is used only in x64 mode.
    """
    if not jax.config.jax_enable_x64:
        return kernel

    def call(*arrays):
        with jax.enable_x64(False):
            return kernel(*arrays)

    wrapped = jax.custom_vjp(call)

    def backward(arrays, g):
        with jax.enable_x64(False):
            return jax.vjp(kernel, *arrays)[1](g)

    wrapped.defvjp(lambda *arrays: (call(*arrays), arrays), backward)
    return wrapped


def _gpu_mha(query, key, value, *, scale, is_causal, interpret, block_q, block_k):
    """Runs ``pallas.ops.gpu.attention.mha`` on ``[B, T, N, H]`` inputs of any ``T`` and ``S``.

    ``mha`` needs ``T`` and ``S`` to be block multiples. Padded query rows are dropped. Padded keys
    must be hidden: under ``is_causal`` with ``T == S`` they come after every real query, so causality
    hides them; otherwise (``T == S``) segment ids (real 0, padding 1) do, since ``mha`` takes one
    segment-id array for queries and keys alike.
    """
    from jax.experimental.pallas.ops.gpu import attention as gpu_attention

    T, S = query.shape[1], key.shape[1]
    bq, bk = min(block_q, T), min(block_k, S)
    sizes = gpu_attention.BlockSizes(block_q=bq, block_k=bk, block_q_dkv=bq, block_kv_dkv=bk,
                                     block_q_dq=bq, block_kv_dq=bk)
    segment_ids = None
    pad_q, pad_k = -T % bq, -S % bk
    if pad_k:
        if T != S:
            raise ValueError(
                f"implementation='pallas' needs S ({S}) to be a multiple of block_k ({bk}) when T ({T}) != S; "
                "pass block sizes that divide S or use implementation='blockwise'")
        step = math.lcm(bq, bk)
        pad_q = pad_k = -T % step
        if not is_causal:
            segment_ids = jnp.broadcast_to((jnp.arange(T + pad_q) >= T).astype(jnp.int32), (query.shape[0], T + pad_q))
    # mha's fused backward needs as many dQ query blocks as dK/dV key blocks.
    T_pad, n_blocks = T + pad_q, (S + pad_k) // bk
    if T_pad % n_blocks:
        raise ValueError(
            f"implementation='pallas' needs the padded T ({T_pad}) to split into S/block_k = {n_blocks} equal "
            "blocks for mha's backward; choose block sizes with T/block_q == S/block_k")
    sizes = dataclasses.replace(sizes, block_q_dq=T_pad // n_blocks)
    q = jnp.pad(query, ((0, 0), (0, pad_q), (0, 0), (0, 0)))
    k = jnp.pad(key, ((0, 0), (0, pad_k), (0, 0), (0, 0)))
    v = jnp.pad(value, ((0, 0), (0, pad_k), (0, 0), (0, 0)))
    kernel = lambda q, k, v: gpu_attention.mha(q, k, v, segment_ids, sm_scale=scale, causal=is_causal,
                                               block_sizes=sizes, interpret=interpret)
    out = _traced_in_32_bits(kernel)(q, k, v)
    return out[:, :T]


def _tpu_flash(query, key, value, *, scale, is_causal):
    """``pallas.ops.tpu.flash_attention`` on ``[B, T, N, H]`` inputs (it works in ``[B, N, T, H]``)."""
    from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash

    T, S = query.shape[1], key.shape[1]
    if T % 128 or S % 128:  # the kernel's default tiles are 128 along both sequences
        raise ValueError(f"implementation='pallas' on TPU needs T and S to be multiples of 128, got T={T}, S={S}; "
                         "use implementation='blockwise' for other lengths")
    to_bnth = lambda x: jnp.swapaxes(x, 1, 2)
    kernel = lambda q, k, v: tpu_flash.flash_attention(q, k, v, causal=is_causal, sm_scale=scale)
    out = _traced_in_32_bits(kernel)(to_bnth(query), to_bnth(key), to_bnth(value))
    return jnp.swapaxes(out, 1, 2)


def _pallas(query, key, value, bias, mask, *, scale, is_causal, query_seq_lengths, key_value_seq_lengths, window,
            logit_softcap, dropout_rate, interpret, block_sizes):
    platform = jax.default_backend()
    reason = pallas_unsupported_reason(
        platform, query.shape, key.shape, value.shape, dtype=query.dtype, has_bias=bias is not None,
        has_mask=mask is not None,
        has_seq_lengths=query_seq_lengths is not None or key_value_seq_lengths is not None, window=window,
        logit_softcap=logit_softcap, dropout_rate=dropout_rate, interpret=interpret)
    name = "pallas_interpret" if interpret else "pallas"
    if reason is not None:
        raise ValueError(f"implementation={name!r} cannot run: {reason}")
    scale = float(checks.default_scale(scale, query.shape[-1]))
    if platform == "tpu" and not interpret:
        if block_sizes is not None:
            raise ValueError("implementation='pallas' on TPU uses the kernel's own block sizes; pass block_sizes=None")
        run = functools.partial(_tpu_flash, scale=scale, is_causal=is_causal)
    else:
        run = functools.partial(_gpu_mha, scale=scale, is_causal=is_causal, interpret=interpret,
                                block_q=64 if block_sizes is None else block_sizes.block_q,
                                block_k=64 if block_sizes is None else block_sizes.block_k)

    def kernel(query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths):
        del bias, mask, query_seq_lengths, key_value_seq_lengths  # all None: refused above
        key, value = (repeat_kv_heads(x, query.shape[2]) for x in (key, value))
        return run(query, key, value)

    return with_blockwise_tangent(kernel, query, key, value, scale=scale, is_causal=is_causal,
                                  what=f"implementation={name!r}")


def pallas_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                     query_seq_lengths=None, key_value_seq_lengths=None, window=None, logit_softcap=None,
                     dropout_rate=0.0, dropout_rng=None, block_sizes: Any = None):
    """JAX's Pallas attention kernel for the platform: GPU ``mha`` or TPU flash attention (checked args).

    ``jax.grad`` runs the kernel's own backward; ``jax.jvp``/``jax.jacfwd`` take the tangent from the blockwise
    kernel (:func:`with_blockwise_tangent`); second-order derivatives raise ``NotImplementedError``.

    Args:
        block_sizes: an ``attnjax.ops.BlockSizes``; its ``block_q``/``block_k`` tile the GPU kernel
            (default 64/64, clipped to ``T``/``S``).

    Raises:
        ValueError: not on GPU/TPU, or an option the kernels cannot express.
    """
    del dropout_rng
    return _pallas(query, key, value, bias, mask, scale=scale, is_causal=is_causal,
                   query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths, window=window,
                   logit_softcap=logit_softcap, dropout_rate=dropout_rate, interpret=False, block_sizes=block_sizes)


def pallas_interpret_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                               query_seq_lengths=None, key_value_seq_lengths=None, window=None, logit_softcap=None,
                               dropout_rate=0.0, dropout_rng=None, block_sizes: Any = None):
    """The GPU Pallas ``mha`` kernel run by the Pallas interpreter, on any back end (slow; for tests)."""
    del dropout_rng
    return _pallas(query, key, value, bias, mask, scale=scale, is_causal=is_causal,
                   query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths, window=window,
                   logit_softcap=logit_softcap, dropout_rate=dropout_rate, interpret=True, block_sizes=block_sizes)
