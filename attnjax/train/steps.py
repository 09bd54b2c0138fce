"""Pure, module-level train and eval steps on blank-token batches.

A batch is a dict: ``inputs [B, L, V]`` float, ``targets [B, L]`` int, ``loss_mask [B, L]`` float
(1 where scored), ``seq_lengths [B]`` int. Model ``apply_fn(variables, inputs, seq_lengths=..., train=...)``
returns ``[B, L, C]`` logits.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from attnjax.train.state import TrainState

Batch = dict[str, jnp.ndarray]
Metrics = dict[str, jnp.ndarray]


def masked_loss_and_correct(logits: jnp.ndarray, targets: jnp.ndarray, loss_mask: jnp.ndarray
                            ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Summed cross-entropy, summed correct predictions and number of scored tokens.

    Args:
        logits: ``[B, L, C]``.
        targets: ``[B, L]`` int.
        loss_mask: ``[B, L]``, 1 where scored.

    Returns:
        ``(loss_sum, correct_sum, count)`` float32 scalars.
    """
    mask = loss_mask.astype(jnp.float32)
    xent = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return jnp.sum(xent * mask), jnp.sum(correct * mask), jnp.sum(mask)


def _forward(state: TrainState, params: Any, batch: Batch, train: bool, rng: jax.Array | None):
    # Separate streams so that adding randomized positions does not change a model's dropout masks.
    rngs = {"dropout": rng, "positions": jax.random.fold_in(rng, 1)} if rng is not None else None
    logits = state.apply_fn({"params": params}, batch["inputs"], seq_lengths=batch["seq_lengths"], train=train,
                            rngs=rngs)
    return masked_loss_and_correct(logits, batch["targets"], batch["loss_mask"])


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
        loss_sum, correct, count = _forward(state, params, batch, True, step_rng)
        count = jnp.maximum(count, 1.0)  # an all-unscored batch gives zero loss, not NaN
        return loss_sum / count, correct / count

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads),
               "param_norm": optax.tree.norm(params), "update_norm": optax.tree.norm(updates)}
    return new_state, metrics


def eval_step(state: TrainState, batch: Batch) -> Metrics:
    """Deterministic forward pass.

    Returns:
        ``loss`` and ``accuracy`` (means over scored tokens) plus the sums ``loss_sum``, ``correct``
        and ``count`` so callers can aggregate over batches exactly.
    """
    loss_sum, correct, count = _forward(state, state.params, batch, False, None)
    safe = jnp.maximum(count, 1.0)
    return {"loss": loss_sum / safe, "accuracy": correct / safe, "loss_sum": loss_sum, "correct": correct,
            "count": count}
