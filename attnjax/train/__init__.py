"""Training: TrainState, optax setup, the recipe, pure train/eval steps, the fit loop, checkpoints, evaluation."""

from attnjax.train.accumulate import accumulated_train_step, accumulating_train_step
from attnjax.train.checkpoint import Checkpointer, CorruptCheckpointWarning
from attnjax.train.evaluate import eval_step_jit, evaluate, evaluate_lengths
from attnjax.train.loop import batch_counts, fit, train_step_for
from attnjax.train.parallel_steps import (jit_step, pmap_train_step, replicate, shard_map_train_step, split_batch,
                                          unreplicate)
from attnjax.train.placement import jit_train_step, put_replicated, shard_batch
from attnjax.train.recipe import Recipe, make_recipe_optimizer
from attnjax.train.seq2seq_steps import (evaluate_seq2seq, evaluate_seq2seq_lengths, greedy_decode,
                                         seq2seq_eval_step, seq2seq_eval_step_jit, seq2seq_train_step)
from attnjax.train.state import ModelApply, TrainState, count_params, create_train_state, make_optimizer
from attnjax.train.steps import (apply_gradients, eval_step, masked_loss_and_correct, optimizer_step, step_rngs,
                                 train_step)

__all__ = [
    "ModelApply", "TrainState", "count_params", "create_train_state", "eval_step", "eval_step_jit", "evaluate",
    "evaluate_lengths", "evaluate_seq2seq", "evaluate_seq2seq_lengths", "fit", "greedy_decode", "jit_train_step",
    "make_optimizer", "masked_loss_and_correct", "optimizer_step", "seq2seq_eval_step", "seq2seq_eval_step_jit",
    "seq2seq_train_step", "shard_batch", "step_rngs", "train_step", "train_step_for", "put_replicated",
    # Parallel steps (attnjax.train.parallel_steps).
    "jit_step", "pmap_train_step", "replicate", "shard_map_train_step", "split_batch", "unreplicate",
    # Checkpoints and gradient accumulation (attnjax.train.checkpoint, attnjax.train.accumulate).
    "Checkpointer", "CorruptCheckpointWarning", "accumulated_train_step", "accumulating_train_step",
    "apply_gradients", "batch_counts",
    # The training recipe (attnjax.train.recipe).
    "Recipe", "make_recipe_optimizer",
]
