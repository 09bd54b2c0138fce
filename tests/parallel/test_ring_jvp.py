"""Forward mode through ring attention on fake CPU devices: jax.jvp and jax.jacfwd equal the dense reference on
the unsharded sequence, and reverse mode is still the hand-written ring backward (tests/parallel/test_ring.py
checks its values)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attnjax
from attnjax.parallel import ring_self_attention

AUTO = jax.sharding.AxisType.Auto


@functools.lru_cache(maxsize=None)
def _mesh(shape=(4,), names=("seq",)):
    n = int(np.prod(shape))
    return jax.make_mesh(shape, names, axis_types=(AUTO,) * len(shape), devices=jax.devices()[:n])


def _inputs(B, T, S, N, K, H, Hv=None, seed=0):
    """``(q, k, v)`` and tangents ``(dq, dk, dv)``."""
    r = np.random.RandomState(seed)
    shapes = ((B, T, N, H), (B, S, K, H), (B, S, K, Hv or H))
    return [jnp.asarray(r.randn(*shape), jnp.float32) for shape in shapes * 2]


def _assert_jvps_equal(got, want):
    """``(out, tangent)`` pairs: outputs within 1e-5, tangents within 1e-4 (float32), as the blockwise jvp tests."""
    (out, tangent), (want_out, want_tangent) = got, want
    np.testing.assert_allclose(out, want_out, atol=1e-5, rtol=0)
    assert bool(jnp.all(jnp.isfinite(tangent)))
    np.testing.assert_allclose(tangent, want_tangent, atol=1e-4, rtol=0, err_msg="tangent")


# Packed sequences whose boundaries fall inside tiles and shards (as in test_ring.py).
_SEGMENTS = jnp.array([[0] * 5 + [1] * 11 + [2] * 16, [0] * 20 + [1] * 12], jnp.int32)

# (shapes B, T, S, N, K, H[, Hv]), mesh shape, options; each entry is one compile.
CASES = {
    # Non-causal, grouped-query, query and key lengths (batch 2 sees no key), 2x2 tiles per ring step.
    "contiguous-gqa-lengths-tiled": ((3, 32, 32, 4, 2, 8), (4,), dict(
        layout="contiguous", q_lengths=True, kv_lengths=True, block_size=4)),
    # Causal cross-attention (S = 2T, Hv != H), multi-query, the batch sharded too.
    "causal-zigzag-mqa-cross-data-seq": ((4, 32, 64, 2, 1, 8, 16), (2, 4), dict(
        is_causal=True, layout="zigzag", kv_lengths=True, batch_axis_name="data", block_size=4)),
    # Packed segments, a local window, softcap and scale.
    "causal-striped-segments-window-softcap": ((2, 32, 32, 4, 2, 8), (4,), dict(
        is_causal=True, layout="striped", segments=True, local_window_size=(5, 2), logit_softcap=2.0, scale=0.3)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ring_jvp_matches_dense(name):
    """Tangents on query, key and value at once, against the dense path's jvp on the gathered sequence."""
    shapes, mesh_shape, options = CASES[name]
    B, T, S = shapes[:3]
    options = dict(options)
    q, k, v, dq, dk, dv = _inputs(*shapes, seed=len(name))
    kv_lengths = jnp.array([S, 13, 0, S][:B], jnp.int32) if options.pop("kv_lengths", False) else None
    q_lengths = jnp.array([T, 20, T][:B], jnp.int32) if options.pop("q_lengths", False) else None
    segments = _SEGMENTS if options.pop("segments", False) else None
    names = ("seq",) if len(mesh_shape) == 1 else ("data", "seq")
    dense_options = {key: val for key, val in options.items() if key not in ("layout", "batch_axis_name", "block_size")}
    common = dict(query_seq_lengths=q_lengths, key_value_seq_lengths=kv_lengths)

    def ring(q, k, v):
        return ring_self_attention(q, k, v, mesh=_mesh(mesh_shape, names), axis_name="seq",
                                   query_segment_ids=segments, **common, **options)

    def dense(q, k, v):
        mask = None if segments is None else attnjax.ops.segment_mask(segments)
        return attnjax.dot_product_attention(q, k, v, mask=mask, implementation="dense", **common, **dense_options)

    got, want = jax.jit(lambda *x: [jax.jvp(f, x[:3], x[3:]) for f in (ring, dense)])(q, k, v, dq, dk, dv)
    _assert_jvps_equal(got, want)
    if kv_lengths is not None and B > 2:
        np.testing.assert_array_equal(got[1][2], 0.0)  # no visible key: zero output, zero tangent


def _alibi_mod(score, batch, head, q_idx, kv_idx, slopes):
    return score - slopes[head] * jnp.abs(q_idx - kv_idx).astype(score.dtype)


def test_ring_jvp_with_hooks_and_a_tangent_in_their_params():
    """ALiBi as a score_mod with learned slopes plus an offset per head it closes over, and packed documents as a
    mask_mod closing over the segment ids: the tangent flows from q, k, v, the slopes and the closed-over offset
    at once, against dense with the same hooks."""
    B, T, N, K, H = 2, 32, 4, 2, 8
    q, k, v, dq, dk, dv = _inputs(B, T, T, N, K, H, seed=7)
    slopes, d_slopes = jnp.array([0.5, 0.25, 0.125, 0.0625]), jnp.array([1.0, -2.0, 0.5, 3.0])
    offsets, d_offsets = jnp.array([0.3, -0.2, 0.1, 0.0]), jnp.array([1.0, 0.5, -1.0, 2.0])

    @jax.jit
    def both(primals, tangents):
        def run(f):
            def attention(q, k, v, slopes, offsets):
                score_mod = lambda s, b, h, i, j, p: _alibi_mod(s, b, h, i, j, p) + offsets[h] * (i == j)
                documents = lambda b, h, i, j: _SEGMENTS[b, i] == _SEGMENTS[b, j]
                return f(q, k, v, score_mod=score_mod, mask_mod=documents, score_mod_params=slopes)
            return jax.jvp(attention, primals, tangents)

        ring = functools.partial(ring_self_attention, mesh=_mesh(), axis_name="seq", is_causal=True,
                                 layout="zigzag", block_size=2)
        dense = functools.partial(attnjax.dot_product_attention, is_causal=True, implementation="dense")
        return run(ring), run(dense)

    got, want = both((q, k, v, slopes, offsets), (dq, dk, dv, d_slopes, d_offsets))
    _assert_jvps_equal(got, want)
    # The hooks' own tangents matter: without them the tangent differs.
    _, without = both((q, k, v, slopes, offsets), (dq, dk, dv, 0 * d_slopes, 0 * d_offsets))
    assert float(jnp.abs(without[1] - want[1]).max()) > 1e-2


def _ring_sends(closed_jaxpr) -> dict:
    """How many ``ppermute`` sends each ring pass (``ring_passes.ring_forward``, ``ring_tangent``,
    ``ring_backward``, named by ``jax.named_call``) has in a program, nested jaxprs included."""
    passes = ("ring_forward", "ring_tangent", "ring_backward")
    found = dict.fromkeys(passes, 0)

    def visit(jaxpr, outer):
        for eqn in jaxpr.eqns:
            stack = f"{outer}/{eqn.source_info.name_stack}"
            if eqn.primitive.name == "ppermute":
                (owner,) = [name for name in passes if name in stack]
                found[owner] += 1
            for param in eqn.params.values():
                for sub in param if isinstance(param, (list, tuple)) else [param]:
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        visit(inner, stack)

    visit(closed_jaxpr.jaxpr, "")
    return found


def test_ring_jacfwd_and_which_pass_each_mode_runs():
    """jax.jacfwd and jax.grad equal dense's. The programs show which ring passes run: the forward once in
    every mode (sending keys and values), jax.jvp adds the tangent pass (which sends dK and dV along) and never
    the backward; jax.grad adds the hand-written backward and never the tangent pass."""
    q, k, v, dq, dk, dv = _inputs(1, 24, 24, 2, 1, 4, seed=9)
    ring = lambda q, k, v: ring_self_attention(q, k, v, mesh=_mesh(), axis_name="seq", layout="striped")
    dense = lambda q, k, v: attnjax.dot_product_attention(q, k, v, implementation="dense")
    rows = lambda f: (lambda x: f(q, k, v.at[0, 5:8].set(x)))  # jacfwd over 3 value rows (12 basis tangents)
    loss = lambda f: (lambda q: jnp.sum(f(q, k, v) * dq))

    (jacobian, grad), (want_jacobian, want_grad) = jax.jit(
        lambda: [(jax.jacfwd(rows(f))(v[0, 5:8]), jax.grad(loss(f))(q)) for f in (ring, dense)])()
    np.testing.assert_allclose(jacobian, want_jacobian, atol=1e-5, rtol=0, err_msg="jacfwd")
    np.testing.assert_allclose(grad, want_grad, atol=1e-4, rtol=0, err_msg="grad")

    forward = {"ring_forward": 2, "ring_tangent": 0, "ring_backward": 0}  # k and v: 2 sends per step
    assert _ring_sends(jax.make_jaxpr(ring)(q, k, v)) == forward
    jvp = jax.make_jaxpr(lambda *x: jax.jvp(ring, x[:3], x[3:]))(q, k, v, dq, dk, dv)
    assert _ring_sends(jvp) == {**forward, "ring_tangent": 4}  # k, v, dk, dv travel together
    backward = _ring_sends(jax.make_jaxpr(jax.grad(loss(ring)))(q))
    assert backward["ring_forward"] == 2 and backward["ring_tangent"] == 0 and backward["ring_backward"] > 0


@pytest.mark.slow
def test_ring_second_order_derivatives_match_dense():
    """The ring's passes are plain JAX, so derivatives of derivatives work as they did with the custom_vjp
    (linear_call's completed JVP differentiates the backward and the tangent pass in their residuals): a
    Hessian-vector product (jax.jvp of jax.grad) and reverse over reverse (jax.grad of jax.grad)."""
    q, k, v, c, _, _ = _inputs(1, 8, 8, 2, 2, 4, seed=11)
    ring = lambda q: ring_self_attention(q, k, v, mesh=_mesh((2,)), axis_name="seq", is_causal=True, layout="zigzag")
    dense = lambda q: attnjax.dot_product_attention(q, k, v, is_causal=True, implementation="dense")
    loss = lambda f: (lambda q: jnp.sum(f(q) * c) + 0.5 * jnp.sum(f(q) ** 2))

    def second_order(f):
        return (jax.jvp(jax.grad(loss(f)), (q,), (c,))[1],
                jax.grad(lambda q: jnp.sum(jax.grad(loss(f))(q) * c))(q))

    got, want = jax.jit(lambda: [second_order(f) for f in (ring, dense)])()
    for name, g, w in zip(("jvp of grad", "grad of grad"), got, want):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0, err_msg=name)
