"""Kernelized (linear-time) attention: elu+1 linear attention and Performer FAVOR+.

Both replace ``exp(q.k)`` by a feature-map product ``phi(q).phi(k)``, so attention becomes
``phi(Q) (phi(K)^T V) / (phi(Q) phi(K)^T 1)``: memory and time are linear in the sequence length.

* Non-causal: the ``[F, H]`` summary ``phi(K)^T V`` is built once.
* Causal: prefix sums of ``phi(k_j) v_j^T``, computed chunk by chunk with ``lax.scan`` (a
  ``C x C`` masked product inside each chunk, a running ``[F, H]`` state between chunks), so memory
  is ``O(T)`` (``O(T C + (T / C) F H)``), never ``O(T^2)``.

Masks: there are no ``[T, S]`` logits, so only *key* masks are possible — ``mask`` must be
broadcastable to ``[B, N, 1, S]`` (a lower rank counts as leading 1s, as in ``jax.nn``: ``[S]`` is a
key mask) — plus ``key_value_seq_lengths``, ``query_seq_lengths`` and
``is_causal`` (query ``i`` sees keys ``j <= i``, top-left aligned like ``jax.nn``). No ``bias``.
A query with no visible key returns zeros, with zero gradient.

Layout as everywhere: queries ``[B, T, N, H]``, keys/values ``[B, S, K, H]``, ``N % K == 0``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops import checks
from attnjax.ops.masks import padding_mask, position_mask
from attnjax.ops.primitives import repeat_kv_heads

Array = jnp.ndarray
FeatureMap = Callable[[Array], Array]


# --------------------------------------------------------------------------- feature maps

def elu_feature_map(x: Array) -> Array:
    """``elu(x) + 1`` (Katharopoulos et al. 2020): positive, so every normalizer is > 0."""
    return jax.nn.elu(x) + 1.0


def taylor_exp_feature_map(x: Array) -> Array:
    """Second-order Taylor features of ``exp(q.k / sqrt(F))`` (Based, Arora et al. 2024), ``[..., 1 + F + F^2]``.

    ``phi(x) = [1, x / F^(1/4), vec(x x^T) / sqrt(2 F)]``, so that
    ``phi(q).phi(k) = 1 + z + z^2 / 2`` with ``z = q.k / sqrt(F)``. The entries are not all positive, but
    ``1 + z + z^2 / 2 >= 1/2`` for every ``z``: every score, hence every normalizer, stays positive, as
    :func:`linear_attention` needs of its ``feature_map``.

    Args:
        x: ``[..., F]`` (queries or keys, ``F`` small: the feature count grows as ``F^2``).

    Returns:
        ``[..., 1 + F + F^2]`` float32.
    """
    x = jnp.asarray(x, jnp.float32)
    F = x.shape[-1]
    outer = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], F * F)
    return jnp.concatenate([jnp.ones_like(x[..., :1]), x / np.float32(F ** 0.25),
                            outer / np.float32(np.sqrt(2.0 * F))], axis=-1)


def orthogonal_random_features(rng: jax.Array, num_features: int, head_dim: int) -> Array:
    """Gaussian random features with orthogonal blocks (Choromanski et al. 2021), ``[F, H]`` float32.

    Rows come in blocks of ``H`` mutually orthogonal directions (QR of a Gaussian matrix); each row
    is rescaled by the norm of an independent Gaussian vector, so every row is marginally
    ``N(0, I_H)`` while rows in a block are exactly orthogonal (lower-variance estimator).

    Raises:
        ValueError: ``num_features`` or ``head_dim`` not a positive int.
    """
    checks.check_positive_int("num_features", num_features)
    checks.check_positive_int("head_dim", head_dim)
    n_blocks = -(-num_features // head_dim)
    block_key, norm_key = jax.random.split(rng)
    gaussian = jax.random.normal(block_key, (n_blocks, head_dim, head_dim), jnp.float32)
    q, r = jnp.linalg.qr(gaussian)
    # Q of a QR is Haar-distributed (unbiased directions) only once R's diagonal is made positive.
    q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    # Columns of q, i.e. rows of q^T, within one block are orthonormal.
    directions = jnp.swapaxes(q, -1, -2).reshape(n_blocks * head_dim, head_dim)[:num_features]
    norms = jnp.linalg.norm(jax.random.normal(norm_key, (num_features, head_dim), jnp.float32), axis=-1)
    return directions * norms[:, None]


def favor_features(x: Array, projection: Array, *, is_query: bool, valid: Array | None = None) -> Array:
    """Positive random features of the softmax kernel: ``exp(w.x - |x|^2 / 2) / sqrt(F)``.

    ``E[phi(q).phi(k)] = exp(q.k)``. The input is pre-scaled by ``H^-1/4`` so that the estimated
    kernel is ``exp(q.k / sqrt(H))``, the one of dot-product attention.

    A stabilizer is subtracted inside the ``exp`` and cancels in the attention ratio: per query for
    queries (any per-row constant cancels), and one constant per ``(batch, head)`` over the visible
    keys for keys. It is held constant for differentiation (``stop_gradient``): mathematically the
    output does not depend on it, so no gradient may flow through it (this is also what keeps
    causal outputs from receiving gradient from later keys).

    Args:
        x: ``[B, L, N, H]``.
        projection: ``[F, H]`` random features.
        is_query: which stabilizer to use.
        valid: ``[B, L, N]`` boolean, visible keys (keys only), or None.

    Returns:
        ``[B, L, N, F]`` float32, all entries >= 0.
    """
    H = x.shape[-1]
    F = projection.shape[0]
    x = x.astype(jnp.float32) * jnp.float32(H ** -0.25)
    wx = jnp.einsum("BLNH,FH->BLNF", x, projection.astype(jnp.float32))
    exponent = wx - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)
    if is_query:
        stab = jnp.max(exponent, axis=-1, keepdims=True)
    else:
        row_max = jnp.max(exponent, axis=-1)  # [B, L, N]
        if valid is not None:
            row_max = jnp.where(valid, row_max, -jnp.inf)
        stab = jnp.max(row_max, axis=1, keepdims=True)[..., None]  # [B, 1, N, 1]
        stab = jnp.where(jnp.isfinite(stab), stab, 0.0)  # no visible key at all
    return jnp.exp(exponent - jax.lax.stop_gradient(stab)) / jnp.float32(np.sqrt(F))


# --------------------------------------------------------------------------- the shared core

# Normalizers below this count as "no visible key". Anything larger keeps num / den^2 (the
# gradient of the ratio) finite in float32: num <= den * max|v|, so num / den^2 <= max|v| * 1e18.
_MIN_NORMALIZER = 1e-18


def _safe_ratio(num: Array, den: Array) -> Array:
    """``num / den[..., None]``, zeros where ``den`` is (numerically) zero, with finite gradients.

    A normalizer can only underflow when every visible key's features vanish next to the largest
    key's (e.g. Performer at logits ~1e4); such rows are treated as having no visible key.
    """
    ok = den > _MIN_NORMALIZER
    return jnp.where(ok[..., None], num / jnp.where(ok, den, 1.0)[..., None], 0.0)


def _causal_prefix(phi_q: Array, phi_k: Array, value: Array, chunk_size: int) -> tuple[Array, Array]:
    """Causal numerator ``[B, T, N, Hv]`` and normalizer ``[B, T, N]`` by chunked prefix sums (T == S)."""
    B, T, N, F = phi_q.shape
    Hv = value.shape[-1]
    C = max(1, min(chunk_size, T))
    pad = (-T) % C
    if pad:
        # Zero features contribute nothing; the padded queries are cut off below.
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        phi_q, phi_k, value = (jnp.pad(x, widths) for x in (phi_q, phi_k, value))
    n_chunks = (T + pad) // C

    def chunks(x):
        return jnp.moveaxis(x.reshape(B, n_chunks, C, *x.shape[2:]), 1, 0)

    tril = jnp.tril(jnp.ones((C, C), jnp.float32))

    def step(carry, xs):
        kv_state, z_state = carry  # [B, N, F, Hv], [B, N, F]: sums over all earlier chunks
        q_c, k_c, v_c = xs
        intra = jnp.einsum("BCNF,BDNF->BNCD", q_c, k_c) * tril
        num = jnp.einsum("BNCD,BDNH->BCNH", intra, v_c) + jnp.einsum("BCNF,BNFH->BCNH", q_c, kv_state)
        den = jnp.einsum("BNCD->BCN", intra) + jnp.einsum("BCNF,BNF->BCN", q_c, z_state)
        kv_state = kv_state + jnp.einsum("BDNF,BDNH->BNFH", k_c, v_c)
        z_state = z_state + jnp.einsum("BDNF->BNF", k_c)
        return (kv_state, z_state), (num, den)

    init = (jnp.zeros((B, N, F, Hv), jnp.float32), jnp.zeros((B, N, F), jnp.float32))
    _, (num, den) = jax.lax.scan(step, init, (chunks(phi_q), chunks(phi_k), chunks(value)))
    num = jnp.moveaxis(num, 0, 1).reshape(B, n_chunks * C, N, Hv)[:, :T]
    den = jnp.moveaxis(den, 0, 1).reshape(B, n_chunks * C, N)[:, :T]
    return num, den


def kernelized_attention(phi_q: Array, phi_k: Array, value: Array, *, is_causal: bool = False,
                         chunk_size: int = 64) -> Array:
    """``phi(Q) phi(K)^T V`` row-normalized, given non-negative features. Arguments are unchecked.

    Args:
        phi_q: ``[B, T, N, F]`` query features (>= 0).
        phi_k: ``[B, S, N, F]`` key features (>= 0; zero rows are masked keys).
        value: ``[B, S, N, Hv]``.
        is_causal: query ``i`` sees keys ``j <= i`` (top-left aligned).
        chunk_size: chunk length of the causal prefix sums.

    Returns:
        ``[B, T, N, Hv]`` float32; rows with zero normalizer are zeros.
    """
    value = value.astype(jnp.float32)
    if not is_causal:
        kv = jnp.einsum("BSNF,BSNH->BNFH", phi_k, value)
        num = jnp.einsum("BTNF,BNFH->BTNH", phi_q, kv)
        den = jnp.einsum("BTNF,BNF->BTN", phi_q, jnp.sum(phi_k, axis=1))
        return _safe_ratio(num, den)
    T, S = phi_q.shape[1], phi_k.shape[1]
    if S > T:  # keys past the last query are never visible
        phi_k, value = phi_k[:, :T], value[:, :T]
    elif S < T:  # queries past the last key see all keys: pad with invisible (zero-feature) keys
        widths = ((0, 0), (0, T - S), (0, 0), (0, 0))
        phi_k, value = jnp.pad(phi_k, widths), jnp.pad(value, widths)
    num, den = _causal_prefix(phi_q, phi_k, value, chunk_size)
    return _safe_ratio(num, den)


# --------------------------------------------------------------------------- argument handling

def _key_mask(mask, key_value_seq_lengths, B: int, N: int, S: int) -> Array | None:
    """Combines a ``[B|1, N|1, 1, S]`` key mask and key lengths into ``[B, S, N]`` (or None)."""
    out = None
    if mask is not None:
        out = jnp.broadcast_to(jnp.asarray(mask)[:, :, 0, :], (B, N, S))
    if key_value_seq_lengths is not None:
        lengths = padding_mask(1, S, None, key_value_seq_lengths)[:, :, 0, :]  # [B, 1, S]
        out = lengths if out is None else out & lengths
    return None if out is None else jnp.broadcast_to(out, (B, N, S)).transpose(0, 2, 1)


def _check(name: str, query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths, chunk_size):
    """Checks every argument; returns ``(B, T, S, N, K, H, mask)`` with ``mask`` padded to rank 4."""
    B, T, S, N, K, H = checks.check_inputs(query, key, value, query_seq_lengths=query_seq_lengths,
                                           key_value_seq_lengths=key_value_seq_lengths)
    if bias is not None:
        raise ValueError(
            f"bias is not supported by {name}: it never forms [B, N, T, S] logits; got bias of shape "
            f"{tuple(np.shape(bias))}")
    if mask is not None:
        checks.check_mask_and_bias(mask, None, (B, N, T, S))
        # Ranks below 4 count as leading 1s, as in jax.nn: a [S] or [1, S] mask is a key mask.
        given = tuple(np.shape(mask))
        mask = checks.pad_to_rank4(mask)
        if mask.shape[2] != 1:
            raise ValueError(
                f"mask for {name} must be a key mask broadcastable to [B, N, 1, S] = ({B}, {N}, 1, {S}) "
                f"(no [T, S] logits exist), got shape {given}")
    checks.check_positive_int("chunk_size", chunk_size)
    return B, T, S, N, K, H, mask


def _finish(out: Array, query_seq_lengths, dtype) -> Array:
    if query_seq_lengths is not None:
        T = out.shape[1]
        valid = jnp.arange(T)[None, :] < jnp.asarray(query_seq_lengths)[:, None]
        out = jnp.where(valid[:, :, None, None], out, 0.0)
    return out.astype(dtype)


def _dense_weights(phi_q: Array, phi_k: Array, is_causal: bool, query_seq_lengths) -> Array:
    """The implicit ``[B, N, T, S]`` weights ``phi(q_i).phi(k_j) / sum_j(...)``, materialized."""
    scores = jnp.einsum("BTNF,BSNF->BNTS", phi_q, phi_k)
    T, S = scores.shape[-2:]
    if is_causal:
        scores = jnp.where(position_mask(jnp.arange(T), jnp.arange(S), is_causal=True), scores, 0.0)
    weights = _safe_ratio(scores, jnp.sum(scores, axis=-1))
    if query_seq_lengths is not None:
        valid = jnp.arange(T)[None, :] < jnp.asarray(query_seq_lengths)[:, None]
        weights = jnp.where(valid[:, None, :, None], weights, 0.0)
    return weights


# --------------------------------------------------------------------------- linear attention

def _linear_features(query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths, chunk_size,
                     feature_map):
    query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)
    B, T, S, N, K, H, mask = _check("linear_attention", query, key, value, bias, mask, query_seq_lengths,
                              key_value_seq_lengths, chunk_size)
    fm = elu_feature_map if feature_map is None else feature_map
    if not callable(fm):
        raise TypeError(f"feature_map must be callable or None, got {type(feature_map).__name__}")
    phi_q = fm(query.astype(jnp.float32))
    phi_k = fm(repeat_kv_heads(key, N, axis=2).astype(jnp.float32))
    keep = _key_mask(mask, key_value_seq_lengths, B, N, S)
    if keep is not None:
        phi_k = jnp.where(keep[..., None], phi_k, 0.0)
    return query, phi_q, phi_k, repeat_kv_heads(value, N, axis=2)


def linear_attention(query, key, value, bias=None, mask=None, *, is_causal: bool = False,
                     query_seq_lengths=None, key_value_seq_lengths=None, chunk_size: int = 64,
                     feature_map: FeatureMap | None = None) -> Array:
    """Linear attention (Katharopoulos et al. 2020) with ``phi = elu + 1``.

    ``out_i = sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j)``; no ``1/sqrt(H)`` scale (the
    feature map is not an exponential). ``O(T)`` memory in both the causal and non-causal forms.

    Args:
        query: ``[B, T, N, H]``; key, value: ``[B, S, K, H]`` (same dtype).
        bias: must be None (unsupported, see module docstring).
        mask: boolean key mask broadcastable to ``[B, N, 1, S]``, ``True`` = attend; lower ranks count
            as leading 1s (``[S]``, ``[1, S]``, ``[N|1, 1, S]``), as in ``jax.nn``.
        is_causal: query ``i`` sees keys ``j <= i``, via chunked prefix sums.
        query_seq_lengths: ``[B]``; queries past the length output zeros.
        key_value_seq_lengths: ``[B]``; keys past the length are ignored.
        chunk_size: chunk length of the causal prefix sums (memory ``O(T * chunk)``).
        feature_map: a positive feature map ``[..., H] -> [..., F]``; default ``elu(x) + 1``.

    Returns:
        ``[B, T, N, H]`` in the query dtype; queries with no visible key are zeros.

    Raises:
        ValueError/TypeError: malformed shapes or dtypes, a bias, a non-key mask, bad chunk_size.
    """
    query, phi_q, phi_k, value = _linear_features(query, key, value, bias, mask, query_seq_lengths,
                                                  key_value_seq_lengths, chunk_size, feature_map)
    out = kernelized_attention(phi_q, phi_k, value, is_causal=is_causal, chunk_size=int(chunk_size))
    return _finish(out, query_seq_lengths, query.dtype)


def linear_weights(query, key, bias=None, mask=None, *, is_causal: bool = False, query_seq_lengths=None,
                   key_value_seq_lengths=None, feature_map: FeatureMap | None = None) -> Array:
    """The implicit ``[B, N, T, S]`` float32 weights of :func:`linear_attention` (materialized: O(T S))."""
    _, phi_q, phi_k, _ = _linear_features(query, key, key, bias, mask, query_seq_lengths,
                                          key_value_seq_lengths, 1, feature_map)
    return _dense_weights(phi_q, phi_k, is_causal, query_seq_lengths)


# --------------------------------------------------------------------------- Performer FAVOR+

def _performer_features(query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths, chunk_size,
                        projection, rng, num_features):
    query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)
    B, T, S, N, K, H, mask = _check("performer_attention", query, key, value, bias, mask, query_seq_lengths,
                              key_value_seq_lengths, chunk_size)
    if projection is None:
        if rng is None:
            raise ValueError("performer_attention needs projection [F, H] or an rng key to draw one, got neither "
                             "(attnjax.ops.registry.init_attention_params('performer', rng, head_dim=H, "
                             "num_heads=N) builds a projection)")
        projection = orthogonal_random_features(rng, int(num_features), H)
    else:
        if np.ndim(projection) != 2 or np.shape(projection)[1] != H:
            raise ValueError(f"projection must have shape [F, H] with H = {H}, got {tuple(np.shape(projection))}")
        checks.check_floating("projection", projection)
        projection = jnp.asarray(projection)
    keep = _key_mask(mask, key_value_seq_lengths, B, N, S)
    phi_q = favor_features(query, projection, is_query=True)
    phi_k = favor_features(repeat_kv_heads(key, N, axis=2), projection, is_query=False, valid=keep)
    if keep is not None:
        phi_k = jnp.where(keep[..., None], phi_k, 0.0)
    return query, phi_q, phi_k, repeat_kv_heads(value, N, axis=2)


def performer_attention(query, key, value, bias=None, mask=None, *, projection: Array | None = None,
                        rng: jax.Array | None = None, num_features: int = 256, is_causal: bool = False,
                        query_seq_lengths=None, key_value_seq_lengths=None, chunk_size: int = 64) -> Array:
    """Performer FAVOR+ (Choromanski et al. 2021): unbiased linear-time softmax attention estimate.

    Approximates ``softmax(Q K^T / sqrt(H)) V`` with positive orthogonal random features; the error
    shrinks like ``1 / sqrt(F)``. Give either a fixed ``projection`` (from
    :func:`orthogonal_random_features`, e.g. redrawn every few steps by the caller) or an ``rng``.

    Args:
        query: ``[B, T, N, H]``; key, value: ``[B, S, K, H]`` (same dtype).
        bias: must be None (unsupported).
        mask: boolean key mask broadcastable to ``[B, N, 1, S]`` (lower ranks: leading 1s, as in ``jax.nn``).
        projection: ``[F, H]`` random features; if None they are drawn from ``rng``.
        rng: PRNG key used when ``projection`` is None.
        num_features: ``F`` when drawing from ``rng``.
        is_causal, query_seq_lengths, key_value_seq_lengths, chunk_size: as in :func:`linear_attention`.

    Returns:
        ``[B, T, N, H]`` in the query dtype; queries with no visible key are zeros.

    Raises:
        ValueError/TypeError: malformed shapes, neither projection nor rng, a bias, a non-key mask.
    """
    query, phi_q, phi_k, value = _performer_features(query, key, value, bias, mask, query_seq_lengths,
                                                     key_value_seq_lengths, chunk_size, projection, rng,
                                                     num_features)
    out = kernelized_attention(phi_q, phi_k, value, is_causal=is_causal, chunk_size=int(chunk_size))
    return _finish(out, query_seq_lengths, query.dtype)


def performer_weights(query, key, bias=None, mask=None, *, projection=None, rng=None, num_features=256,
                      is_causal=False, query_seq_lengths=None, key_value_seq_lengths=None) -> Array:
    """The implicit ``[B, N, T, S]`` float32 weights of :func:`performer_attention` (materialized)."""
    _, phi_q, phi_k, _ = _performer_features(query, key, key, bias, mask, query_seq_lengths,
                                             key_value_seq_lengths, 1, projection, rng, num_features)
    return _dense_weights(phi_q, phi_k, is_causal, query_seq_lengths)
