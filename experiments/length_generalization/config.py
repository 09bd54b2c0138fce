"""Config of ``experiments/length_generalization/run.py`` (Delétang et al. 2022 protocol; Ruoss et al. 2023
randomized positions). Presets (``--config=experiments/length_generalization/config.py:PRESET``):

* ``cpu`` (default): parity_check and reverse_string; LSTM against the Transformer with sinusoidal positions,
  standard and randomized; 3 seeds; a 3,000-step budget (the main job runs within 10 minutes).
* ``cpu_grid``: all 15 tasks x (RNN, LSTM, GRU, Transformer x 6 encodings x standard/randomized) x 3 seeds,
  training lengths drawn per example (in a pilot the Transformer fit 1..20 far better so); run it in pieces
  with ``--config.only="task=..."``. ``cpu_similarity``: dot-product, cosine and L2 attention x 6 encodings x
  5 tasks x 3 seeds, likewise.
* ``recipe_pilot``: recipe (Adam or AdamW; constant rate or warmup then cosine decay) x learning rate per model
  family, on three tasks that under-fit before, one seed (100, disjoint from the study's). The CPU presets'
  recipes and learning rates are its best mean IN-DISTRIBUTION VALIDATION accuracy (fresh examples at lengths
  1..20), never the test lengths.
* ``fit_check``: what stopping at fit changes. The ``cpu_grid`` protocol on a few tasks; a cell that fits is
  scored there, then trains on to the budget and is scored again (paired by seed in the report).
* ``paper``: the published protocol (train 1..40, test 41..500, 512 examples per length, batch 128, Adam at
  lrs {1e-4, 3e-4, 5e-4} per (task, model), 10 seeds, 1,000,000 steps without early stopping, the Delétang
  Transformer, 256-unit recurrent models with a ReLU before the read-out).

The CPU presets are smaller (each report lists how they differ from the paper) and average the loss over the
scored tokens (the reference sums it over a sequence's outputs).
"""

import dataclasses

import ml_collections

from attnjax.data import TASKS
from attnjax.nn import transformer_config
from attnjax.sweep import check_names, model_block, with_harness_keys, with_recipe_keys
from attnjax.sweep.training import with_stopping_keys

PRESETS = ("cpu", "cpu_grid", "cpu_similarity", "recipe_pilot", "fit_check", "paper")
ALL_ENCODINGS = "nope,sinusoidal,learned,rope,alibi,t5"
# An attention model's cell sets these from its variant and the protocol keys, not from its model block.
SET_PER_CELL = ("attention.name", "positional", "randomized_positions", "randomized_eval", "max_len")
FAMILIES = ("rnn", "lstm", "gru", "transformer")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    """Returns the config for ``preset`` (one of :data:`PRESETS`); every value can be overridden."""
    check_names("preset", [preset], PRESETS)
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.tasks = "parity_check,reverse_string"  # names in attnjax.data.TASKS
    c.models = "lstm,transformer"  # names in attnjax.nn.MODELS (sequence models)
    # Attention models run every (attention x positional x randomized) combination of these lists.
    c.attentions, c.positionals = "dot_product", "sinusoidal"  # attnjax.ops.ATTENTION, attnjax.ops.POSITIONAL
    c.randomized = "false,true"  # Ruoss et al.'s randomized positions: "false", "true" or both
    c.randomized_max_len = 2048  # positions are a sorted random subset of [0, randomized_max_len)
    c.randomized_eval = "random"  # "random" (at test time too, as Ruoss et al.) or "consecutive"
    c.num_seeds, c.first_seed = 3, 0
    c.train_max_length = 20  # training input lengths uniform in 1..N, one length per batch
    c.per_example_lengths = preset in ("cpu_grid", "cpu_similarity", "recipe_pilot", "fit_check")  # True: every example draws its own length
    c.test_max_length = 60  # evaluate every length 1..M; OOD score = mean accuracy over N+1..M
    c.batch_size, c.num_steps = 32, 10_000  # num_steps: the budget; train-to-fit stops most cells earlier
    # Train to fit: every validate_every steps, the accuracy on val_batch_size fresh examples per training
    # length 1..N (mean over lengths, as train_accuracy); a cell stops at fit or when flat (TrainToFit).
    c.validate_every, c.val_batch_size = 250, 32
    with_stopping_keys(c)  # threshold 0.99 twice in a row; flat: < 1 point of gain over 3,000 steps
    # The recipes (optimizer+schedule) and learning rates are grid axes per model family (comma-separated);
    # warmup over 5% of the budget, cosine decay to 1% of the peak, AdamW's small weight decay.
    with_recipe_keys(c, per_cell=True, warmup_steps=500, final_fraction=0.01, weight_decay=0.01)
    c.eval_batch_size = 128  # examples per test length
    c.eval_bucket = 20  # pad test lengths up to multiples of this: a few compiled eval programs
    c.attention_map_task = "reverse_string"  # first seed's attention models store weight maps ("" for none)
    c.min_train_accuracy = 0.9  # runs below this in-distribution accuracy are flagged in the report
    c.mesh_data = -1  # devices on the 'data' mesh axis (-1: all)
    with_harness_keys(c, workers="auto")  # one single-threaded worker process per CPU core
    c.compute_dtype = "float32"  # "bfloat16": attention models compute in bf16 (parameters, loss float32)
    c.micro_batches = 1  # gradient accumulation over this many pieces of a batch (divides batch_size)
    # One recipe and learning rate per model family: the recipe_pilot's best mean in-distribution validation
    # accuracy over its three tasks (docs/results/length_generalization/recipe_pilot). The Transformer fit all
    # three at a mean 4,167 steps with AdamW, warmup and cosine decay at 1e-3 (constant Adam at 3e-4, the
    # former recipe: 1 of 3); LSTM and GRU are best so too; the RNN fits none with either and keeps Adam.
    c.recipes = ml_collections.ConfigDict(dict(rnn="adam+constant", lstm="adamw+warmup_cosine",
                                               gru="adamw+warmup_cosine", transformer="adamw+warmup_cosine"))
    c.learning_rates = ml_collections.ConfigDict(dict(rnn="3e-4", lstm="3e-3", gru="3e-3", transformer="1e-3"))
    for family in FAMILIES[:3]:
        c[family] = model_block(family, hidden_size=128, num_layers=1, readout_relu=True)
    c.transformer = model_block("transformer", set_per_cell=SET_PER_CELL, num_layers=2, d_model=64, num_heads=4,
                                mlp_dim=128, dropout_rate=0.0, causal=False)

    if preset in ("cpu_grid", "paper"):
        c.tasks, c.models, c.positionals = ",".join(TASKS), ",".join(FAMILIES), ALL_ENCODINGS
    if preset == "cpu":  # the main job stays within 10 minutes on 2 cores: the former 3,000-step budget
        c.num_steps, c.warmup_steps = 3000, 150
        c.stopping.flat_steps = 1500
    elif preset == "cpu_similarity":
        c.tasks = "parity_check,modular_arithmetic,reverse_string,duplicate_string,bucket_sort"
        c.models, c.attentions, c.randomized = "transformer", "dot_product,cosine,l2", "false"
        c.positionals = ALL_ENCODINGS
    elif preset == "recipe_pilot":  # the worst under-fits of the constant-Adam grid, with its protocol
        # Three of the worst under-fits (a Transformer cell at the 10,000-step budget takes ~7 min on one core).
        c.tasks = "stack_manipulation,duplicate_string,odds_first"
        c.models, c.randomized = ",".join(FAMILIES), "false"
        c.num_seeds, c.first_seed = 1, 100
        # Recurrent models: today's recipe against the full one; the Transformer: every recipe x 2 peak rates.
        c.recipes.update({family: "adam+constant,adamw+warmup_cosine" for family in FAMILIES[:3]})
        c.recipes.transformer = "adam+constant,adam+warmup_cosine,adamw+warmup_cosine"
        c.learning_rates.transformer = "3e-4,1e-3"
    elif preset == "fit_check":
        # Tasks where the recipe pilot's (or the cpu preset's) LSTM and Transformer fit, so most cells pair.
        c.tasks, c.models, c.randomized = "reverse_string,duplicate_string,odds_first", "lstm,transformer", "false"
        c.stopping.stop_at_fit = False
    elif preset == "paper":
        c.num_seeds, c.train_max_length, c.test_max_length, c.batch_size, c.num_steps = 10, 40, 500, 128, 1_000_000
        c.eval_batch_size, c.eval_bucket, c.validate_every = 512, 50, 1000
        c.checkpoint_every = 10_000  # a cell runs for hours: survive preemption
        c.learning_rates.update({family: "1e-4,3e-4,5e-4" for family in FAMILIES})
        # The reference's fixed budget with constant-rate Adam: no early stop (a run that fits is also scored
        # there, as in fit_check); validation still records every curve.
        c.recipes.update({family: "adam+constant" for family in FAMILIES})
        c.stopping.update(dict(stop_at_fit=False, flat_steps=c.num_steps))
        for family in FAMILIES[:3]:
            c[family].hidden_size = 256
        fields = dataclasses.asdict(transformer_config("deletang2022"))
        c.transformer = model_block("transformer", set_per_cell=SET_PER_CELL, **{
            k: v for k, v in fields.items() if k not in SET_PER_CELL})
    return c
