"""Pure, module-level train and eval steps on blank-token batches.

A batch is a dict: ``inputs [B, L, V]`` float, ``targets [B, L]`` int, ``loss_mask [B, L]`` float
(1 where the loss is taken), optionally ``accuracy_mask [B, L]`` float (1 where accuracy is scored;
default ``loss_mask``: tasks with a termination token score accuracy only up to it), and
``seq_lengths [B]`` int. Model ``apply_fn(variables, inputs, seq_lengths=..., train=...)`` returns
``[B, L, C]`` logits.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

from attnjax.nn.positional import MissingPositionsRngError
from attnjax.train.state import TrainState

Batch = dict[str, jnp.ndarray]
Metrics = dict[str, jnp.ndarray]
# A train step: ``(state, batch, rng) -> (new_state, metrics)`` (:func:`train_step`, and what
# :func:`attnjax.train.make_train_step` builds).
StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]


def masked_loss_and_correct(logits: jnp.ndarray, targets: jnp.ndarray, loss_mask: jnp.ndarray,
                            accuracy_mask: jnp.ndarray | None = None
                            ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Summed cross-entropy and its token count, summed correct predictions and their token count.

    Args:
        logits: ``[B, L, C]``.
        targets: ``[B, L]`` int.
        loss_mask: ``[B, L]``, 1 where the loss is taken.
        accuracy_mask: ``[B, L]``, 1 where accuracy is scored (None: ``loss_mask``).

    Returns:
        ``(loss_sum, loss_count, correct_sum, count)`` float32 scalars.
    """
    mask = loss_mask.astype(jnp.float32)
    acc_mask = mask if accuracy_mask is None else accuracy_mask.astype(jnp.float32)
    xent = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return jnp.sum(xent * mask), jnp.sum(mask), jnp.sum(correct * acc_mask), jnp.sum(acc_mask)


def step_rngs(rng: jax.Array | None, train: bool, shard: jnp.ndarray | int | None = None
              ) -> dict[str, jax.Array] | None:
    """The ``rngs`` a model's ``apply`` gets from one step key (None: no randomness).

    Separate streams so that adding randomized positions does not change a model's dropout masks.
    Evaluation gets the positions stream only: randomized encodings (Ruoss et al.) draw positions
    at test time too; dropout is off.

    ``shard`` (inside ``shard_map``/``pmap``: this device's index over the axes the batch is split
    over) is folded into the dropout stream only: each shard then draws its own dropout masks, while
    the positions stay shared by the whole batch (and equal on the shards of one sequence).
    """
    if rng is None:
        return None
    rngs = {"positions": jax.random.fold_in(rng, 1)}
    if train:
        rngs["dropout"] = rng if shard is None else jax.random.fold_in(rng, shard)
    return rngs


def missing_positions_rng(caller: str) -> MissingPositionsRngError:
    """The error for ``caller`` (an evaluation function of this package) called with ``rng=None`` on a model
    that draws randomized positions at evaluation: it names ``caller``'s own ``rng`` argument, the fix."""
    return MissingPositionsRngError(
        f"{caller} got rng=None, but the model draws randomized positions at evaluation (Ruoss et al. 2023) and "
        f"needs a key for them: pass rng=key to {caller}, e.g. {caller}(..., rng=jax.random.key(0)); or build the "
        f'model with randomized_eval="consecutive" to evaluate at positions 0..L-1')


def _forward(state: TrainState, params: Any, batch: Batch, train: bool, rng: jax.Array | None,
             shard: jnp.ndarray | int | None = None):
    logits = state.apply_fn({"params": params}, batch["inputs"], seq_lengths=batch["seq_lengths"], train=train,
                            rngs=step_rngs(rng, train, shard))
    return masked_loss_and_correct(logits, batch["targets"], batch["loss_mask"], batch.get("accuracy_mask"))


def optimizer_step(state: TrainState, forward: Callable[[Any, jax.Array], tuple[jnp.ndarray, ...]],
                   rng: jax.Array, axis_name: str | tuple[str, ...] | None = None) -> tuple[TrainState, Metrics]:
    """One optimizer step on the per-token mean loss that ``forward`` sums; every train step ends here.

    Args:
        state: the train state.
        forward: ``(params, step_rng) -> (loss_sum, loss_count, correct, count)``, e.g. from
            :func:`masked_loss_and_correct`.
        rng: base key; the step uses ``fold_in(rng, state.step)``, so the same key can be passed every step.
        axis_name: inside ``jax.shard_map`` or ``jax.pmap``, the axis (or axes) the batch is split over:
            ``forward`` sums this device's shard, and sums, counts and gradients are summed over the
            axis, so the loss is the per-token mean over the *whole* batch (not a mean of per-shard
            means, which would overweight shards with few scored tokens) and the step equals the
            one-device step. None: ``forward`` sees the whole batch.

    Returns:
        ``(new_state, metrics)`` with scalar ``loss``, ``accuracy`` (scored tokens), ``grad_norm``
        (before clipping), ``param_norm`` (after the update) and ``update_norm``.
    """
    step_rng = jax.random.fold_in(rng, state.step)
    # Sharded: differentiate per-device copies of the parameters, so each device's gradient is its
    # shard's alone and the psum below is the one reduction (under shard_map's replication check the
    # gradient of replicated parameters would otherwise be summed implicitly).
    params = state.params if axis_name is None else lax.pcast(state.params, axis_name, to="varying")

    def loss_fn(params):
        loss_sum, loss_count, correct, count = forward(params, step_rng)
        if axis_name is not None:
            # Global denominators: this shard's loss_sum / global count is its share of the global mean.
            loss_count, correct, count = lax.psum((loss_count, correct, count), axis_name)
        # An all-unscored batch gives zero loss and accuracy, not NaN.
        return loss_sum / jnp.maximum(loss_count, 1.0), correct / jnp.maximum(count, 1.0)

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    if axis_name is not None:
        loss, grads = lax.psum((loss, grads), axis_name)
    return apply_gradients(state, grads, loss, accuracy)


def apply_gradients(state: TrainState, grads: Any, loss: jnp.ndarray, accuracy: jnp.ndarray
                    ) -> tuple[TrainState, Metrics]:
    """The optimizer update every train step ends with (:func:`optimizer_step`, the accumulating step).

    Args:
        state: the train state.
        grads: gradient of the per-token mean loss, a pytree like ``state.params``.
        loss: scalar mean loss (logged).
        accuracy: scalar accuracy (logged).

    Returns:
        ``(new_state, metrics)``: see :func:`optimizer_step`.
    """
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads),
               "param_norm": optax.tree.norm(params), "update_norm": optax.tree.norm(updates)}
    return new_state, metrics


def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    """One optimizer step on the per-token mean loss of the scored positions.

    Args:
        state: the train state (donated where jitted by :func:`attnjax.train.fit`).
        batch: see module docstring.
        rng: base key; the step uses ``fold_in(rng, state.step)``, so the same key can be passed every step.

    Returns:
        see :func:`optimizer_step`.
    """
    return optimizer_step(state, lambda params, step_rng: _forward(state, params, batch, True, step_rng), rng)


def eval_step(state: TrainState, batch: Batch, rng: jax.Array | None = None) -> Metrics:
    """Forward pass without dropout.

    Args:
        state: the train state.
        batch: see module docstring.
        rng: key for models that draw randomized positions at evaluation (Ruoss et al. 2023); None
            for deterministic models.

    Returns:
        ``loss`` and ``accuracy`` (means over their tokens) plus the sums ``loss_sum``, ``loss_count``,
        ``correct`` and ``count`` so callers can aggregate over batches exactly.

    Raises:
        ValueError: ``rng=None`` for a model that draws randomized positions at evaluation.
    """
    try:
        loss_sum, loss_count, correct, count = _forward(state, state.params, batch, False, rng)
    except MissingPositionsRngError as error:
        if rng is not None:
            raise
        raise missing_positions_rng("eval_step") from error
    return {"loss": loss_sum / jnp.maximum(loss_count, 1.0), "accuracy": correct / jnp.maximum(count, 1.0),
            "loss_sum": loss_sum, "loss_count": loss_count, "correct": correct, "count": count}
