"""One tiny Adam loop for the "trains below a stated loss" tests, compiled exactly once."""

import chex
import jax
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
