"""Shared training helpers of the model tests: tiny Adam loops compiled once, and the probe that serves the
padding, causality and training tests of one model with a single compile."""

import functools

import chex
import jax
import jax.numpy as jnp
import optax


def adam_losses(apply, params, args, labels, steps: int, learning_rate: float = 1e-2) -> list[float]:
    """Runs ``steps`` Adam steps on the mean cross-entropy of ``apply({"params": p}, *args)`` against
    integer ``labels``; returns the loss at every step. Fails if the step is traced more than once."""
    opt = optax.adam(learning_rate)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        def loss_fn(p):
            return optax.softmax_cross_entropy_with_integer_labels(apply({"params": p}, *args), labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    state, losses = opt.init(params), []
    for _ in range(steps):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    return losses


# These tests check values, not speed: XLA's CPU backend at optimization level 0 compiles about twice
# as fast, and compiling is most of the time here.
JIT = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def make_probe(apply_fn, lr):
    """One jitted function for the loss, its gradients and an Adam step.

    Args:
        apply_fn: ``(params, inputs, extra) -> logits [..., C]``; ``extra`` holds what is not
            differentiated (lengths, decoder inputs).
        lr: Adam learning rate.

    Returns:
        ``(probe, init_opt)``: ``probe(params, opt_state, inputs, extra, labels, weights)`` -> dict with
        ``loss`` (cross-entropy weighted by ``weights``, shaped like ``labels``), ``logits``, ``grads``
        (w.r.t. params), ``input_grads`` and the ``params``/``opt_state`` after one Adam step.
    """
    opt = optax.adam(lr)

    def probe(params, opt_state, inputs, extra, labels, weights):
        def loss_fn(p, x):
            logits = apply_fn(p, x, extra)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
            return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0), logits

        (loss, logits), (grads, input_grads) = jax.value_and_grad(loss_fn, (0, 1), has_aux=True)(params, inputs)
        updates, opt_state = opt.update(grads, opt_state, params)
        return dict(loss=loss, logits=logits, grads=grads, input_grads=input_grads,
                    params=optax.apply_updates(params, updates), opt_state=opt_state)

    return JIT(probe), opt.init


def fit(probe_and_init, params, batch, steps):
    """``steps`` full-batch Adam steps; ``batch = (inputs, extra, labels, weights)``.

    Returns:
        ``(params, losses)`` with ``steps + 1`` losses, the last one after the last step.
    """
    probe, init_opt = probe_and_init
    opt_state, losses = init_opt(params), []
    for _ in range(steps + 1):
        out = probe(params, opt_state, *batch)
        losses.append(float(out["loss"]))
        params, opt_state = out["params"], out["opt_state"]
    return params, losses


def probe_once(probe_and_init, params, *batch):
    """The probe's outputs for ``params`` (its Adam step is discarded)."""
    probe, init_opt = probe_and_init
    return probe(params, init_opt(params), *batch)
