"""Training: TrainState, optax setup, pure train/eval steps, the fit loop, evaluation."""

from attnjax.train.evaluate import eval_step_jit, evaluate, evaluate_lengths
from attnjax.train.loop import fit, jit_train_step, shard_batch
from attnjax.train.state import ModelApply, TrainState, count_params, create_train_state, make_optimizer
from attnjax.train.steps import eval_step, masked_loss_and_correct, train_step

__all__ = [
    "ModelApply", "TrainState", "count_params", "create_train_state", "eval_step", "eval_step_jit", "evaluate",
    "evaluate_lengths", "fit", "jit_train_step", "make_optimizer", "masked_loss_and_correct",
    "shard_batch", "train_step",
]
