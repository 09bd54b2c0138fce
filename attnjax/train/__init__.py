"""Training: TrainState, optax setup, the recipe, pure train/eval steps, the fit loop, stopping at fit, checkpoints,
evaluation.

Every train step is built by :func:`make_train_step` (pure, jit, shard_map, pmap, micro-batches, sequence
parallel). Lower-level pieces stay in their modules: :mod:`attnjax.train.steps` (the loss and the optimizer
update), :mod:`attnjax.train.accumulate`, :mod:`attnjax.train.placement` and :mod:`attnjax.train.parallel_steps`
(the pieces ``make_train_step`` composes, and the ``pmap`` helpers), :mod:`attnjax.train.seq2seq_steps` (greedy
decoding), :mod:`attnjax.train.checkpoint` (``Checkpointer``).
"""

from attnjax.train.checkpoint import CorruptCheckpointWarning
from attnjax.train.evaluate import evaluate, evaluate_lengths
from attnjax.train.loop import BatchShapeWarning, fit
from attnjax.train.placement import put_replicated, shard_batch
from attnjax.train.recipe import Recipe, make_recipe_optimizer
from attnjax.train.seq2seq_steps import evaluate_seq2seq_lengths, seq2seq_train_step
from attnjax.train.state import TrainState, create_train_state, make_optimizer
from attnjax.train.step_factory import make_train_step
from attnjax.train.stopping import TrainToFit
from attnjax.train.steps import eval_step, train_step

__all__ = [
    "TrainState", "create_train_state", "eval_step", "evaluate", "evaluate_lengths", "evaluate_seq2seq_lengths",
    "fit", "make_optimizer", "seq2seq_train_step", "shard_batch", "train_step", "put_replicated",
    # The one train-step factory (attnjax.train.step_factory).
    "make_train_step",
    # Checkpoints (attnjax.train.checkpoint), and fit's warning that a batch shape compiles the step again.
    "BatchShapeWarning", "CorruptCheckpointWarning",
    # The training recipe (attnjax.train.recipe).
    "Recipe", "make_recipe_optimizer",
    # Train to fit: the stop rule fit(validate=..., stop=...) reads (attnjax.train.stopping).
    "TrainToFit",
]
