"""Config of ``experiments/decoder_generalization/run.py``: length generalization of decoder-only models that write
their answer token by token (issue 26). Presets (``--config=experiments/decoder_generalization/config.py:PRESET``):

* ``cpu_kazemnejad`` (default): Kazemnejad et al. (NeurIPS 2023) as close as a CPU allows: NoPE, APE (their
  "APE" is the sinusoidal absolute embedding, ``pe_abs_sin`` in McGill-NLP/length-generalization), T5's bias,
  ALiBi and RoPE, standard positions only, on their task types we have, at their lengths: copy twice
  (``duplicate_string``) and reverse trained on 1..20 and tested on 21..40 (the encoder study's cpu_grid lengths:
  the report pairs them with it); parity, sort and addition trained on 1..8 and tested on 9..16 (their test sets
  hold the longer lengths only). The encoder study's Transformer width; 3 seeds; about an hour on 2 cores.
* ``cpu_decoder``: the decoder grid on the tasks that separate the claims (parity, reverse, duplicate, bucket sort,
  binary addition trained on 1..10 and tested to 20; Zhou et al.'s decimal addition reversed, with and without
  index hints, 1..10 digits to 25): every encoding standard and randomized (NoPE standard), every mechanism with
  the positional encoding its paper uses (:data:`MECHANISMS`), LSTM and GRU; 3 seeds. Half the encoder study's
  Transformer width and a 2,500-step budget: about 3 hours on 2 idle cores. Run it in pieces with
  ``--config.only="task=..."``.
* ``recipe_pilot``: recipe (AdamW + warmup/cosine or constant Adam) x learning rate for ``transformer_lm`` on
  cpu_decoder's protocol, three tasks, seed 100; the report's pilot table chooses on in-distribution validation.
* ``paper_decoder``: the published scale, for accelerators: Kazemnejad et al.'s decoder (T5-base size: 12 layers,
  d_model 768, 12 heads, feed-forward 3072; AdamW, 40,000 steps, batch 64, their learning rates {1e-5, 3e-5,
  5e-5}, 6% warmup), every task trained on 1..40 and tested to 100 (Zhou et al.'s decimal addition: 40 digits
  to 100; with hints to 63, the hint alphabet's limit), 10 seeds (Zhou et al. find the result fragile across seeds).

Mechanisms and the positions their papers use: stick-breaking (Tan et al. 2025) and forgetting attention (Lin et
al. 2025, ``use_rope: false`` in zhixuan-lin/forgetting-transformer) none; CoPE replaces the position embedding
(``--pos-emb cope`` in facebookresearch/RAM); SSMax (Nakanishi 2025) is trained with RoPE; FIRE is itself the
relative encoding (standard positions only: the models pass no randomized positions to it). The CPU presets train
with the encoder study's recipe (AdamW, warmup, cosine decay; chosen by its recipe pilot on in-distribution
validation) and its train-to-fit rule, validated free-running on held-out training lengths.
"""

from typing import Any, Mapping

import ml_collections

from attnjax.data.tasks import ALL_TASKS
from attnjax.sweep import check_names, model_block, with_harness_keys, with_recipe_keys
from attnjax.sweep.training import with_stopping_keys
from experiments.length_generalization.config import ALL_ENCODINGS, SET_PER_CELL

PRESETS = ("cpu_kazemnejad", "cpu_decoder", "recipe_pilot", "paper_decoder")
FAMILIES = ("lstm", "gru", "transformer_lm")
# attention+positional: each mechanism with the positional encoding of its paper (module docstring).
MECHANISMS = "stick_breaking+nope,forgetting+nope,cope+nope,ssmax+rope,fire+nope"
KAZEMNEJAD_ENCODINGS = "nope,sinusoidal,t5,alibi,rope"  # NoPE, APE, T5's relative bias, ALiBi, RoPE
DECODER_TASKS = ("parity_check,reverse_string,duplicate_string,bucket_sort,binary_addition,"
                 "decimal_addition_reversed,decimal_addition_hints")


def get_config(preset: str = "cpu_kazemnejad") -> ml_collections.ConfigDict:
    """Returns the config for ``preset`` (one of :data:`PRESETS`); every value can be overridden."""
    check_names("preset", [preset], PRESETS)
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.tasks = DECODER_TASKS  # names in attnjax.data.tasks.ALL_TASKS
    c.models = ",".join(FAMILIES)  # decoder-only models of attnjax.nn.MODELS: transformer_lm, lstm, gru
    # transformer_lm runs every (attention x positional x randomized) combination of these, then the mechanisms.
    c.attentions, c.positionals, c.randomized = "dot_product", ALL_ENCODINGS, "false,true"
    c.mechanisms = MECHANISMS  # attention+positional, standard positions only
    c.randomized_max_len = 2048  # Ruoss et al.: positions are a sorted random subset of [0, randomized_max_len)
    c.randomized_eval = "random"
    c.num_seeds, c.first_seed = 3, 0
    # Training input lengths 1..N, test lengths 1..M (OOD: N+1..M); task_lengths overrides them per task as
    # "task:N:M,...". Requested length = the task's (decimal addition: digits per operand).
    c.train_max_length, c.test_max_length = 10, 20
    c.task_lengths = "decimal_addition_reversed:10:25,decimal_addition_hints:10:25"  # Zhou et al.'s 2.5x
    c.per_example_lengths = True  # every training example draws its length
    # num_steps: the budget; train-to-fit stops many cells earlier. cpu_decoder's budget, flat window and width are
    # sized from measured CPU seconds per step and per cell, so that its grid fits in about 3 hours on 2 idle cores.
    c.batch_size, c.num_steps = 32, 2500
    # Validation: free-running on val_batch_size held-out examples per training length (one batch).
    c.validate_every, c.val_batch_size = 250, 16
    with_stopping_keys(c, flat_steps=1250)  # fit: 99% twice in a row; flat: < 1 point over 1,250 steps
    with_recipe_keys(c, per_cell=True, warmup_steps=125, final_fraction=0.01, weight_decay=0.01)
    # Test examples per length (equal to val_batch_size: the training lengths share the validation's program), and
    # test lengths decoded together (0: all; attnjax.sweep.decoding.length_buckets): few compiled programs.
    c.eval_batch_size, c.eval_bucket = 16, 0
    c.min_train_accuracy = 0.9  # runs below this free-running in-distribution accuracy are flagged
    c.mesh_data = -1  # devices on the 'data' mesh axis for training (-1: all)
    with_harness_keys(c, workers="auto")
    c.compute_dtype, c.micro_batches = "float32", 1
    # The encoder study's recipe per family (its recipe_pilot, on in-distribution validation only).
    c.recipes = ml_collections.ConfigDict({f: "adamw+warmup_cosine" for f in FAMILIES})
    c.learning_rates = ml_collections.ConfigDict(dict(lstm="3e-3", gru="3e-3", transformer_lm="1e-3"))
    for family in FAMILIES[:2]:
        c[family] = model_block(family, hidden_size=128, num_layers=1, readout_relu=True)
    # Half the encoder study's width (d_model 64, mlp 128): twice the steps in the same CPU time.
    c.transformer_lm = model_block("transformer_lm", set_per_cell=SET_PER_CELL, num_layers=2, d_model=32,
                                   num_heads=4, mlp_dim=64, dropout_rate=0.0)
    # The encoder run the report pairs with: a folder under results/ (or an absolute path; "": none).
    c.encoder_run = "length_generalization/cpu_grid"

    if preset == "cpu_kazemnejad":
        c.tasks = "duplicate_string,reverse_string,parity_check,bucket_sort,decimal_addition"
        c.task_lengths = "parity_check:8:16,bucket_sort:8:16,decimal_addition:8:16"
        c.models, c.positionals, c.randomized, c.mechanisms = "transformer_lm", KAZEMNEJAD_ENCODINGS, "false", ""
        # Five encodings only: the encoder study's width and a longer budget in one hour on 2 cores.
        c.transformer_lm.update(d_model=64, mlp_dim=128)
        c.num_steps, c.warmup_steps, c.stopping.flat_steps = 4000, 200, 2000
        c.val_batch_size = c.eval_batch_size = 32
        c.train_max_length, c.test_max_length = 20, 40
    elif preset == "recipe_pilot":  # cpu_decoder's protocol, seed 100, chosen on in-distribution validation only
        c.tasks, c.models, c.positionals, c.randomized, c.mechanisms = (
            "reverse_string,duplicate_string,binary_addition", "transformer_lm", "nope,rope", "false", "")
        c.num_seeds, c.first_seed = 1, 100
        c.recipes.transformer_lm, c.learning_rates.transformer_lm = "adamw+warmup_cosine,adam+constant", "1e-3,3e-3"
    elif preset == "paper_decoder":
        c.tasks = ",".join(ALL_TASKS)  # Delétang et al.'s 15 and Zhou et al.'s decimal addition formats
        c.train_max_length, c.test_max_length, c.num_seeds = 40, 100, 10
        c.task_lengths = "decimal_addition_hints:40:63"  # 64 hint symbols: operands of up to 63 digits
        c.batch_size, c.num_steps, c.warmup_steps, c.final_fraction, c.weight_decay = 64, 40_000, 2400, 0.0, 0.05
        c.eval_batch_size, c.eval_bucket, c.validate_every, c.checkpoint_every = 512, 20, 2000, 5000
        c.learning_rates.transformer_lm = "1e-5,3e-5,5e-5"
        c.stopping.flat_steps = 20_000
        c.transformer_lm = model_block("transformer_lm", set_per_cell=SET_PER_CELL, num_layers=12, d_model=768,
                                       num_heads=12, mlp_dim=3072, dropout_rate=0.1)
        for family in FAMILIES[:2]:
            c[family].hidden_size = 256  # Delétang et al.'s recurrent width
        c.encoder_run = "length_generalization/paper"
    return c


def lengths(config: Mapping[str, Any], task: str) -> tuple[int, int]:
    """``(N, M)``: the task's longest training and test input length, ``config["task_lengths"]`` (``task:N:M,...``)
    over ``train_max_length``/``test_max_length``; ``config`` is a ConfigDict or a results file's config.

    Raises:
        ValueError: a malformed ``task_lengths`` entry, naming it.
    """
    for entry in config["task_lengths"].split(","):
        name, *numbers = entry.strip().split(":")
        if len(numbers) != 2 or not all(s.strip().isdigit() for s in numbers):
            if entry.strip():
                raise ValueError(f"config.task_lengths entries are task:N:M, got {entry.strip()!r}")
            continue
        if name == task:
            return int(numbers[0]), int(numbers[1])
    return config["train_max_length"], config["test_max_length"]
