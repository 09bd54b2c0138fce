"""Pure, module-level train and eval steps on blank-token batches.

A batch is a dict: ``inputs [B, L, V]`` float, ``targets [B, L]`` int, ``loss_mask [B, L]`` float
(1 where the loss is taken), optionally ``accuracy_mask [B, L]`` float (1 where accuracy is scored;
default ``loss_mask``: tasks with a termination token score accuracy only up to it), and
``seq_lengths [B]`` int. Model ``apply_fn(variables, inputs, seq_lengths=..., train=...)`` returns
``[B, L, C]`` logits.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from attnjax.train.state import TrainState

Batch = dict[str, jnp.ndarray]
Metrics = dict[str, jnp.ndarray]


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


def _forward(state: TrainState, params: Any, batch: Batch, train: bool, rng: jax.Array | None):
    # Separate streams so that adding randomized positions does not change a model's dropout masks.
    # Evaluation gets the positions stream only: randomized encodings (Ruoss et al.) draw positions
    # at test time too; dropout is off.
    rngs = None
    if rng is not None:
        rngs = {"positions": jax.random.fold_in(rng, 1)}
        if train:
            rngs["dropout"] = rng
    logits = state.apply_fn({"params": params}, batch["inputs"], seq_lengths=batch["seq_lengths"], train=train,
                            rngs=rngs)
    return masked_loss_and_correct(logits, batch["targets"], batch["loss_mask"], batch.get("accuracy_mask"))


def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    """One optimizer step on the per-token mean loss of the scored positions.

    Args:
        state: the train state (donated where jitted by :func:`attnjax.train.fit`).
        batch: see module docstring.
        rng: base key; the step uses ``fold_in(rng, state.step)``, so the same key can be passed every step.

    Returns:
        ``(new_state, metrics)`` with scalar ``loss``, ``accuracy`` (scored tokens), ``grad_norm``
        (before clipping), ``param_norm`` (after the update) and ``update_norm``.
    """
    step_rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
        loss_sum, loss_count, correct, count = _forward(state, params, batch, True, step_rng)
        # An all-unscored batch gives zero loss and accuracy, not NaN.
        return loss_sum / jnp.maximum(loss_count, 1.0), correct / jnp.maximum(count, 1.0)

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads),
               "param_norm": optax.tree.norm(params), "update_norm": optax.tree.norm(updates)}
    return new_state, metrics


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
    """
    loss_sum, loss_count, correct, count = _forward(state, state.params, batch, False, rng)
    return {"loss": loss_sum / jnp.maximum(loss_count, 1.0), "accuracy": correct / jnp.maximum(count, 1.0),
            "loss_sum": loss_sum, "loss_count": loss_count, "correct": correct, "count": count}
