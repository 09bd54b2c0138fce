"""Config of ``experiments/length_generalization/run.py`` (Delétang et al. 2022 protocol; Ruoss et al. 2023
randomized positions). Presets (``--config=experiments/length_generalization/config.py:PRESET``):

* ``cpu`` (default): parity_check and reverse_string; LSTM against the Transformer with sinusoidal positions,
  standard and randomized; 3 seeds.
* ``cpu_grid``: all 15 tasks x (RNN, LSTM, GRU, Transformer x 6 encodings x standard/randomized) x 3 seeds,
  training lengths drawn per example (in a pilot the Transformer fit 1..20 far better so); run it in pieces
  with ``--config.only="task=..."``. ``cpu_similarity``: dot-product, cosine and L2 attention x 6 encodings x
  5 tasks x 3 seeds, likewise.
* ``lr_pilot``: lrs {3e-4, 1e-3, 3e-3} per model family, one seed (100, disjoint from the study's); the CPU
  presets' learning rates are its best mean IN-DISTRIBUTION accuracy (lengths 1..20), never the test lengths.
* ``paper``: the published protocol (train 1..40, test 41..500, 512 examples per length, batch 128, lrs
  {1e-4, 3e-4, 5e-4} per (task, model), 10 seeds, 1,000,000 steps, the Delétang Transformer, 256-unit
  recurrent models with a ReLU before the read-out).

The CPU presets are smaller (each report lists how they differ from the paper) and average the loss over the
scored tokens (the reference sums it over a sequence's outputs).
"""

import dataclasses

import ml_collections

from attnjax.data import TASKS
from attnjax.nn import transformer_config
from attnjax.sweep import model_block, with_harness_keys, with_recipe_keys
from attnjax.sweep.models import EXECUTION_FIELDS

PRESETS = ("cpu", "cpu_grid", "cpu_similarity", "lr_pilot", "paper")
ALL_ENCODINGS = "nope,sinusoidal,learned,rope,alibi,t5"
# An attention model's cell sets these from its variant and the protocol keys, not from its model block.
SET_PER_CELL = ("attention", "positional", "randomized_positions", "randomized_eval", "max_len")
FAMILIES = ("rnn", "lstm", "gru", "transformer")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    """Returns the config for ``preset`` (one of :data:`PRESETS`); every value can be overridden."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
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
    c.per_example_lengths = preset in ("cpu_grid", "cpu_similarity")  # True: every example draws its own length
    c.test_max_length = 60  # evaluate every length 1..M; OOD score = mean accuracy over N+1..M
    c.batch_size, c.num_steps = 32, 3000
    with_recipe_keys(c)  # Adam, global-norm clip 1.0, constant rate (attnjax.sweep.training.RECIPE_DEFAULTS)
    c.eval_batch_size = 128  # examples per test length
    c.eval_bucket = 20  # pad test lengths up to multiples of this: a few compiled eval programs
    c.attention_map_task = "reverse_string"  # first seed's attention models store weight maps ("" for none)
    c.min_train_accuracy = 0.9  # runs below this in-distribution accuracy are flagged in the report
    c.log_every = 500
    c.mesh_data = -1  # devices on the 'data' mesh axis (-1: all)
    with_harness_keys(c, workers="auto")  # one single-threaded worker process per CPU core
    c.compute_dtype = "float32"  # "bfloat16": attention models compute in bf16 (parameters, loss float32)
    c.micro_batches = 1  # gradient accumulation over this many pieces of a batch (divides batch_size)
    # One learning rate per model family (comma-separated: a grid axis), from the lr_pilot preset.
    c.learning_rates = ml_collections.ConfigDict(dict(rnn="3e-4", lstm="3e-3", gru="3e-3", transformer="3e-4"))
    for family in FAMILIES[:3]:
        c[family] = model_block(family, hidden_size=128, num_layers=1, readout_relu=True)
    c.transformer = model_block("transformer", set_per_cell=SET_PER_CELL, num_layers=2, d_model=64, num_heads=4,
                                mlp_dim=128, dropout_rate=0.0, causal=False)

    if preset in ("cpu_grid", "paper"):
        c.tasks, c.models, c.positionals = ",".join(TASKS), ",".join(FAMILIES), ALL_ENCODINGS
    if preset == "cpu_similarity":
        c.tasks = "parity_check,modular_arithmetic,reverse_string,duplicate_string,bucket_sort"
        c.models, c.attentions, c.randomized = "transformer", "dot_product,cosine,l2", "false"
        c.positionals = ALL_ENCODINGS
    elif preset == "lr_pilot":
        c.tasks, c.models, c.randomized = "parity_check,reverse_string,duplicate_string", ",".join(FAMILIES), "false"
        c.num_seeds, c.first_seed = 1, 100
        c.learning_rates.update({family: "3e-4,1e-3,3e-3" for family in FAMILIES})
    elif preset == "paper":
        c.num_seeds, c.train_max_length, c.test_max_length, c.batch_size, c.num_steps = 10, 40, 500, 128, 1_000_000
        c.eval_batch_size, c.eval_bucket, c.log_every = 512, 50, 1000
        c.checkpoint_every = 10_000  # a cell runs for hours: survive preemption
        c.learning_rates.update({family: "1e-4,3e-4,5e-4" for family in FAMILIES})
        for family in FAMILIES[:3]:
            c[family].hidden_size = 256
        fields = dataclasses.asdict(transformer_config("deletang2022"))
        c.transformer = model_block("transformer", set_per_cell=SET_PER_CELL, **{
            k: v for k, v in fields.items() if k not in SET_PER_CELL + EXECUTION_FIELDS})
    return c
