"""Forward mode (jax.jvp, jax.jacfwd) on the kernels whose derivative is their own backward (issue 24).

The cuDNN and Pallas paths compute the primal with the kernel and the tangent with the blockwise kernel's
tangent pass (attnjax.ops.forward_mode); reverse mode must stay the kernel's own backward. cuDNN cannot run
here, so its wiring runs with a stand-in custom_vjp kernel in place of jax.nn's cuDNN call; the Pallas GPU
kernel runs in the Pallas interpreter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.ops import BlockSizes, IMPLEMENTATIONS, dot_product_attention
from attnjax.ops import backends
from attnjax.ops.dense import dense_attention


def _normal(seed, *shapes):
    keys = jax.random.split(jax.random.PRNGKey(seed), len(shapes))
    return [jax.random.normal(key, shape) for key, shape in zip(keys, shapes)]


def _pallas_kernel_names(jaxpr) -> list[str]:
    """The Pallas kernels a jaxpr runs (nested jaxprs included), by their function names, sorted."""
    names = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "pallas_call":
                names.append(eqn.params["jaxpr"].debug_info.func_name)
            for param in eqn.params.values():
                for sub in param if isinstance(param, (list, tuple)) else [param]:
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        visit(inner)

    visit(jaxpr.jaxpr)
    return sorted(names)


def test_pallas_interpret_jvp_jacfwd_and_grad():
    """The GPU Pallas kernel in the interpreter (causal, grouped-query): jax.jvp and jax.jacfwd equal the
    dense path's, and jax.grad still equals it through the kernel's own backward. The jaxprs show what runs:
    grad runs the forward kernel once and mha's backward kernels (as before forward mode existed), jvp only
    the forward kernel (its tangent comes from the blockwise pass)."""
    q, k, v, dq, dk, dv = _normal(0, *[(1, 16, 4, 16), (1, 16, 2, 16), (1, 16, 2, 16)] * 2)

    def attend(implementation, **extra):
        return lambda q, k, v: dot_product_attention(q, k, v, is_causal=True, implementation=implementation, **extra)

    pallas, dense = attend("pallas_interpret", block_sizes=BlockSizes(16, 16)), attend("dense")
    loss = lambda f: (lambda q, k, v: jnp.sum(f(q, k, v) * dq))

    def derivatives(f):
        return (jax.jvp(f, (q, k, v), (dq, dk, dv)), jax.jacfwd(lambda x: f(q, k, v.at[0, :3].set(x)))(v[0, :3]),
                jax.grad(loss(f), argnums=(0, 1, 2))(q, k, v))

    got, want = jax.jit(lambda: [derivatives(f) for f in (pallas, dense)])()
    (out, tangent), jacobian, grads = got
    np.testing.assert_allclose(out, want[0][0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(tangent, want[0][1], atol=1e-4, rtol=0, err_msg="jvp")
    assert jacobian.shape == (1, 16, 4, 16, 3, 2, 16)
    np.testing.assert_allclose(jacobian, want[1], atol=1e-5, rtol=0, err_msg="jacfwd")
    for name, g, w in zip("qkv", grads, want[2]):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0, err_msg=f"d{name}")

    grad_jaxpr = jax.make_jaxpr(jax.grad(loss(pallas), argnums=(0, 1, 2)))(q, k, v)
    assert _pallas_kernel_names(grad_jaxpr) == ["mha_backward", "mha_forward", "mha_preprocess_backward"]
    jvp_jaxpr = jax.make_jaxpr(lambda *x: jax.jvp(pallas, x[:3], x[3:]))(q, k, v, dq, dk, dv)
    assert _pallas_kernel_names(jvp_jaxpr) == ["mha_forward"]


class _StandIn:
    """Replaces ``backends._jax_nn_attention`` (jax.nn's cuDNN call): the same computation, as a
    ``custom_vjp`` whose backward is counted, like cuDNN's kernel, which JAX cannot push tangents through."""

    def __init__(self):
        self.implementations, self.backwards = [], 0

    def __call__(self, query, key, value, bias, mask, *, jax_implementation, **options):
        self.implementations.append(jax_implementation)

        @jax.custom_vjp
        def kernel(q, k, v, b):
            return dense_attention(q, k, v, b, mask, **options)

        def forward(q, k, v, b):
            return jax.vjp(lambda *x: dense_attention(*x, mask, **options), q, k, v, b)

        def backward(pullback, cotangent):
            self.backwards += 1
            return pullback(cotangent)

        kernel.defvjp(forward, backward)
        return kernel(query, key, value, bias)


@pytest.fixture
def cudnn_stand_in(monkeypatch):
    """``implementation="cudnn"`` runnable here: cuDNN's availability check passes and the stand-in runs."""
    stand_in = _StandIn()
    monkeypatch.setattr(backends, "cudnn_unsupported_reason", lambda *args, **kwargs: None)
    monkeypatch.setattr(backends, "_jax_nn_attention", stand_in)
    return stand_in


def test_cudnn_path_takes_forward_mode_and_keeps_its_backward(cudnn_stand_in):
    """The cuDNN path's wiring with every option it takes (bias with a tangent, mask, lengths with a batch
    row that sees no key, causal window, grouped-query heads, scale): jvp, jacfwd and per-example gradients
    (vmap of grad) equal the dense path's; grad goes through the kernel's own backward, jvp never does."""
    B, T, S, N, K, H = 2, 9, 11, 4, 2, 8
    q, k, v, bias, dq, dk, dv, dbias = _normal(1, *[(B, T, N, H), (B, S, K, H), (B, S, K, H), (1, N, T, S)] * 2)
    mask = jnp.ones((B, 1, T, S), bool).at[0, :, 3, :5].set(False)
    options = dict(mask=mask, is_causal=True, local_window_size=(4, 1), scale=0.4,
                   query_seq_lengths=jnp.array([9, 6]), key_value_seq_lengths=jnp.array([11, 0]))

    def attend(implementation):
        return lambda q, k, v, bias: dot_product_attention(q, k, v, bias, implementation=implementation, **options)

    cudnn, dense = attend("cudnn"), attend("dense")
    loss = lambda f: (lambda q, k, v, bias: jnp.sum(f(q, k, v, bias) * dq))
    primals, tangents = (q, k, v, bias), (dq, dk, dv, dbias)
    row = lambda f: (lambda b: f(q, k, v, bias.at[0, :, 2].set(b)))  # jacfwd over one bias row
    qs = jnp.stack([q, dq])  # two examples' queries: vmap of grad transposes a batched tangent map

    def forward_mode(f):
        return jax.jvp(f, primals, tangents), jax.jacfwd(row(f))(bias[0, :, 2])

    def reverse_mode(f):
        return (jax.grad(loss(f), argnums=(0, 1, 2, 3))(*primals),
                jax.vmap(jax.grad(lambda q: loss(f)(q, k, v, bias)))(qs))

    ((out, tangent), jacobian), ((want, want_tangent), want_jacobian) = jax.jit(
        lambda: [forward_mode(f) for f in (cudnn, dense)])()
    assert cudnn_stand_in.implementations and set(cudnn_stand_in.implementations) == {"cudnn"}
    assert cudnn_stand_in.backwards == 0
    np.testing.assert_allclose(out, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(tangent, want_tangent, atol=1e-4, rtol=0, err_msg="jvp")
    np.testing.assert_array_equal(tangent[1], 0.0)  # batch row 1 sees no key: zero output, zero tangent
    np.testing.assert_allclose(jacobian, want_jacobian, atol=1e-5, rtol=0, err_msg="jacfwd")

    (grads, per_example), (want_grads, want_per_example) = jax.jit(lambda: [reverse_mode(f) for f in (cudnn, dense)])()
    assert cudnn_stand_in.backwards == 2  # traced once for grad, once for vmap of grad
    for name, g, w in zip(("q", "k", "v", "bias"), grads, want_grads):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0, err_msg=f"d{name}")
    np.testing.assert_allclose(per_example, want_per_example, atol=1e-4, rtol=0, err_msg="vmap of grad")


def test_second_order_through_a_kernel_is_a_clear_error(cudnn_stand_in):
    """Derivatives of derivatives would differentiate the kernel's backward: each is refused by name."""
    q, k, v = _normal(2, (1, 4, 2, 8), (1, 4, 2, 8), (1, 4, 2, 8))
    loss = lambda q: jnp.sum(dot_product_attention(q, k, v, implementation="cudnn") ** 2)
    compositions = {"hessian": jax.hessian(loss), "jvp of grad": lambda q: jax.jvp(jax.grad(loss), (q,), (q,)),
                    "grad of grad": jax.grad(lambda q: jnp.sum(jax.grad(loss)(q))),
                    "jacfwd of jacfwd": jax.jacfwd(jax.jacfwd(loss)), "jacrev of jacfwd": jax.jacrev(jax.jacfwd(loss))}
    for name, composition in compositions.items():
        with pytest.raises(NotImplementedError, match=r"implementation='cudnn' takes first-order derivatives.* "
                                                      r"but not derivatives of derivatives"):
            composition(q)


@pytest.mark.parametrize("implementation", [None, "xla", *sorted(set(IMPLEMENTATIONS) - {"pallas_interpret"})])
def test_jvp_and_jacfwd_on_every_implementation(implementation, cudnn_stand_in):
    """jvp and jacfwd take every implementation the platform can run (cuDNN as the stand-in; Pallas on
    GPU/TPU only, its interpreter above), with implementation=None at a length above the blockwise switch."""
    if implementation == "pallas" and jax.default_backend() not in ("gpu", "cuda", "tpu"):
        pytest.skip("the Pallas kernels need a GPU or TPU; pallas_interpret is tested above")
    T = 512 if implementation is None else 16  # 512 * 512 logits: None takes the blockwise path on CPU
    assert T * T >= backends.BLOCKWISE_MIN_LOGITS or implementation is not None
    q, k, v = _normal(3, (1, T, 1, 8), (1, T, 1, 8), (1, T, 1, 8))
    attend = lambda name: (lambda q: dot_product_attention(q, k, v, is_causal=True, implementation=name))
    row = lambda f: (lambda x: f(q.at[0, 1].set(x)))  # jacfwd over one query row (8 basis tangents)
    derivatives = lambda f: (jax.jvp(f, (q,), (v,)), jax.jacfwd(row(f))(q[0, 1]))
    ((out, tangent), jacobian), ((want, want_tangent), want_jacobian) = jax.jit(
        lambda: [derivatives(attend(name)) for name in (implementation, "dense")])()
    np.testing.assert_allclose(out, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(tangent, want_tangent, atol=1e-4, rtol=0)
    np.testing.assert_allclose(jacobian, want_jacobian, atol=1e-5, rtol=0)
