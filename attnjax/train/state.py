"""TrainState and optimizer construction."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

__all__ = ["ModelApply", "TrainState", "create_train_state", "make_optimizer"]


@dataclasses.dataclass(frozen=True)
class ModelApply:
    """``model.apply`` as a value: equal (and equally hashed) for equal model configs.

    ``TrainState.apply_fn`` is static, i.e. part of the jit cache key. A bound method ``model.apply``
    compares by the *identity* of ``model``, so every new run would recompile; this wrapper compares
    the model dataclasses instead, and seeds of one configuration share their compiled steps.
    """

    model: nn.Module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.apply(*args, **kwargs)


@functools.partial(jax.jit, static_argnums=0)
def _init_params(model: nn.Module, rng: jax.Array, *example_inputs: jnp.ndarray) -> Any:
    return model.init(rng, *example_inputs)["params"]


def make_optimizer(learning_rate: float, max_grad_norm: float | None = 1.0, b1: float = 0.9,
                   b2: float = 0.999) -> optax.GradientTransformation:
    """``clip_by_global_norm(max_grad_norm)`` then Adam.

    Cached: equal hyper-parameters give the *same* (immutable) transformation object, however they are
    passed (``make_optimizer(1e-3)`` is ``make_optimizer(1e-3, 1.0, 0.9, 0.999)``). The optimizer is a
    static part of :class:`TrainState`, so this lets several runs share one compiled step.

    Raises:
        ValueError: non-positive ``learning_rate`` or ``max_grad_norm``.
    """
    # One cache key per hyper-parameter tuple: functools.lru_cache keys on the call's *form*, so
    # ``f(x)`` and ``f(x, default)`` would otherwise build two objects (two compiled steps).
    return _make_optimizer(learning_rate, max_grad_norm, b1, b2)


@functools.lru_cache(maxsize=None)
def _make_optimizer(learning_rate: float, max_grad_norm: float | None, b1: float,
                    b2: float) -> optax.GradientTransformation:
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
    adam = optax.adam(learning_rate, b1=b1, b2=b2)
    return adam if max_grad_norm is None else optax.chain(optax.clip_by_global_norm(max_grad_norm), adam)


def create_train_state(model: nn.Module, rng: jax.Array, example_inputs: jnp.ndarray | tuple[jnp.ndarray, ...],
                       tx: optax.GradientTransformation) -> TrainState:
    """Initializes ``model`` on ``example_inputs`` and wraps params, optimizer and step.

    Args:
        model: the module.
        rng: init key.
        example_inputs: the model's first positional argument (``inputs [B, L, V]``), or a tuple of its
            positional arguments (a seq2seq model: ``(source [B, S, V], target_inputs [B, T])``).
        tx: the optimizer.

    ``apply_fn`` is :class:`ModelApply`, so compiled steps are reused across seeds of one model config
    (and so is the compiled initializer).
    """
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    params = _init_params(model, rng, *args)
    return TrainState.create(apply_fn=ModelApply(model), params=params, tx=tx)
