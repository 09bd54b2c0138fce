"""Config of ``experiments/length_generalization.py`` (Delétang et al. 2022 protocol; Ruoss et al. 2023 encodings).

Presets (``--config=experiments/length_generalization/config.py:PRESET``):

* ``cpu`` (default, the README's main job, <= 10 min on 2 CPU cores): parity_check (regular) and
  reverse_string (context-free); LSTM against the Transformer with sinusoidal positions, standard and
  randomized; 3 seeds. Train lengths 1..20, test lengths 1..60.
* ``cpu_grid``: all 15 tasks x (RNN, LSTM, GRU, and the Transformer with each of the 6 encodings, standard
  and randomized) x 3 seeds. Splittable with ``--config.only`` and resumable. Training lengths are drawn
  **per example** (the reference draws one per batch): the fit pilot in the README found that the
  Transformer fits lengths 1..20 to 97-99% in 3,000 steps this way and to 86% with one length per batch.
  Cost on the 2-core machine: about 5 h in all as two pinned halves (each tier's measured time is in the
  README, "The full grid"); run it a tier at a time with ``--config.only="task=..."``.
* ``cpu_similarity``: dot-product, cosine and L2 attention x the 6 encodings x 5 tasks x 3 seeds, per-example
  lengths like ``cpu_grid``.
* ``lr_pilot``: the pilot that picked the CPU presets' one learning rate per model family: lrs
  {3e-4, 1e-3, 3e-3} x (RNN, LSTM, GRU, Transformer with sinusoidal positions) x the ``cpu`` tasks and
  duplicate_string, one seed (100, disjoint from the study's seeds 0..2); the choice is the best mean
  IN-DISTRIBUTION accuracy (lengths 1..20), never the test lengths.
* ``paper``: the published protocol: train 1..40, test 41..500 (512 examples per length), batch 128, the
  learning rates {1e-4, 3e-4, 5e-4} swept per (task, model), 10 seeds, the Delétang Transformer
  (``attnjax.nn.transformer_config("deletang2022")``), RNN/LSTM/GRU with 256 units and a ReLU before the
  read-out, 1,000,000 steps (the paper's count; the reference's example script runs 10,000). Meant for
  accelerators.

CPU presets differ from the paper in: lengths (1..20 -> 60, not 1..40 -> 500), batch 32 (not 128), steps
(3,000, not 1,000,000), smaller models (Transformer 2 layers d 64, 4 heads; recurrent 128 units), 128 test
examples per length (not 512), one learning rate per model family (from the pilot in the README, chosen
on in-distribution accuracy with one length per batch), 3 seeds (not 10), and for the grids per-example
training lengths (not one per batch). Every preset averages the loss over the scored tokens; the
reference sums it over a sequence's output positions and averages over the batch (same optimum, but its
gradients are larger, so the global-norm clip binds more often).

Every value can be overridden, e.g. ``--config.num_steps=1000 --config.tasks=parity_check``.
"""

import dataclasses

import ml_collections

from attnjax.data import TASKS
from attnjax.nn import transformer_config
from attnjax.sweep import model_block, with_harness_keys
from attnjax.sweep.models import EXECUTION_FIELDS
from attnjax.sweep.training import with_recipe_keys

PRESETS = ("cpu", "cpu_grid", "cpu_similarity", "lr_pilot", "paper")
ALL_TASKS = ",".join(TASKS)
ALL_ENCODINGS = "nope,sinusoidal,learned,rope,alibi,t5"
# An attention model's cell sets these from its variant and the protocol keys, not from its model block.
SET_PER_CELL = ("attention", "positional", "randomized_positions", "randomized_eval", "max_len")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    """Returns the config for ``preset`` (one of :data:`PRESETS`)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.tasks = "parity_check,reverse_string"  # comma-separated names in attnjax.data.TASKS
    c.models = "lstm,transformer"  # comma-separated names in attnjax.nn.MODELS (sequence models)
    # Attention models run every (attention x positional x randomized) combination of these lists.
    c.attentions = "dot_product"  # names in attnjax.ops.ATTENTION
    c.positionals = "sinusoidal"  # names in attnjax.ops.POSITIONAL
    c.randomized = "false,true"  # "false", "true" or both: Ruoss et al. randomized positions
    c.randomized_max_len = 2048  # positions are a sorted random subset of [0, randomized_max_len)
    c.randomized_eval = "random"  # "random" (Ruoss et al.: at test time too) or "consecutive" (0..L-1 at test)
    c.num_seeds = 3
    c.first_seed = 0
    c.train_max_length = 20  # training input lengths uniform in 1..N, one length per batch
    c.per_example_lengths = False  # True: every example draws its own length (longer ones weigh more)
    c.test_max_length = 60  # evaluate every length 1..M; OOD score = mean accuracy over N+1..M
    c.batch_size = 32
    c.num_steps = 3000
    # The training recipe (optimizer, schedule, weight decay, clipping): attnjax.sweep.training.RECIPE_DEFAULTS,
    # Adam with global-norm clipping at 1.0 and a constant rate. Learning rates are grid axes, below.
    with_recipe_keys(c)
    c.eval_batch_size = 128  # examples per test length
    c.eval_bucket = 20  # pad test lengths up to multiples of this: a few compiled eval programs
    # Attention models of the first seed on this task store last-layer weight maps at lengths N and M.
    c.attention_map_task = "reverse_string"  # "" for none
    c.min_train_accuracy = 0.9  # runs below this in-distribution accuracy are flagged in the report
    c.log_every = 500
    c.mesh_data = -1  # devices on the 'data' mesh axis (-1: all)
    # Cells on one single-threaded worker process per core on a CPU (the harness keys: attnjax.sweep.settings).
    with_harness_keys(c, workers="auto")
    # "bfloat16": attention models compute in bf16; parameters, optimizer state, logits and loss stay float32.
    c.compute_dtype = "float32"
    c.micro_batches = 1  # gradient accumulation: each batch runs as this many sequential pieces (divides batch_size)

    # One learning rate per model family on CPU (comma-separated values sweep them as a grid axis).
    # Chosen by the lr_pilot preset on mean in-distribution accuracy (README, "Learning-rate pilot").
    c.learning_rates = ml_collections.ConfigDict(dict(rnn="3e-4", lstm="3e-3", gru="3e-3", transformer="3e-4"))
    # Model blocks hold every field of the model's config: any of them can be overridden on the command line.
    for family in ("rnn", "lstm", "gru"):
        c[family] = model_block(family, hidden_size=128, num_layers=1, readout_relu=True)
    c.transformer = model_block("transformer", set_per_cell=SET_PER_CELL, num_layers=2, d_model=64, num_heads=4,
                                mlp_dim=128, dropout_rate=0.0, causal=False)

    if preset in ("cpu_grid", "cpu_similarity"):
        c.per_example_lengths = True
    if preset == "cpu_grid":
        c.tasks = ALL_TASKS
        c.models = "rnn,lstm,gru,transformer"
        c.positionals = ALL_ENCODINGS
    elif preset == "cpu_similarity":
        c.tasks = "parity_check,modular_arithmetic,reverse_string,duplicate_string,bucket_sort"
        c.models = "transformer"
        c.attentions = "dot_product,cosine,l2"
        c.positionals = ALL_ENCODINGS
        c.randomized = "false"
    elif preset == "lr_pilot":
        c.tasks = "parity_check,reverse_string,duplicate_string"
        c.models = "rnn,lstm,gru,transformer"
        c.randomized = "false"
        c.num_seeds = 1
        c.first_seed = 100
        for family in ("rnn", "lstm", "gru", "transformer"):
            c.learning_rates[family] = "3e-4,1e-3,3e-3"
    elif preset == "paper":
        c.tasks = ALL_TASKS
        c.models = "rnn,lstm,gru,transformer"
        c.positionals = ALL_ENCODINGS
        c.num_seeds = 10
        c.train_max_length = 40
        c.test_max_length = 500
        c.batch_size = 128
        c.num_steps = 1_000_000
        c.eval_batch_size = 512
        c.eval_bucket = 50
        c.log_every = 1000
        c.checkpoint_every = 10_000  # a cell runs for hours: survive preemption
        for family in ("rnn", "lstm", "gru", "transformer"):
            c.learning_rates[family] = "1e-4,3e-4,5e-4"
        for family in ("rnn", "lstm", "gru"):
            c[family].hidden_size = 256
        preset = dataclasses.asdict(transformer_config("deletang2022"))
        c.transformer = model_block("transformer", set_per_cell=SET_PER_CELL, **{
            k: v for k, v in preset.items() if k not in SET_PER_CELL + EXECUTION_FIELDS})
    return c
