"""Config of ``experiments/mnist1d/run.py``: MNIST-1D, normal vs shuffled positions, and sample efficiency.

Presets (``--config=experiments/mnist1d/config.py:PRESET``):

* ``cpu`` (default, 2 CPU cores): logistic, MLP, CNN, GRU, ViT-1D, and the Transformer classifier with no
  positions (the permutation-invariant control), sinusoidal and RoPE; normal and shuffled data; train sizes
  250, 1000, 4000; 3 seeds; 1,000 steps of batch 100; one learning rate per family from ``lr_pilot``.
* ``cpu_all_encodings``: ``cpu`` with every positional encoding of the Transformer.
* ``lr_pilot``: lrs {1e-3, 3e-3, 1e-2} x every model, normal data, one seed (100); scored on a validation
  split (the last 500 training examples), never the test set.
* ``recipe_pilot``: the attention models' recipe under the ``paper`` protocol: recipe x peak lr per model, normal
  data, 3,500 examples, one seed (100); chosen on the validation split (the last 500 training examples).
* ``paper``: the reference protocol of greydanus/mnist1d (``notebooks/train.py``, ``notebooks/models.py``): Adam
  at 1e-2 without clipping or weight decay, batch 100 taken in the training set's order pass after pass, 8,000
  steps, all 4,000 training examples, the final model scored on the 1,000 test examples; logistic, MLP 100-100
  (residual second layer), CNN 25-25-25 channels, kernels 5-3-3, stride 2, padding 1, flattened; GRU
  bidirectional, hidden 6, every step's output flattened into the linear read-out; 5 seeds; every encoding.

Differences from the reference, per preset: ``protocol_reference`` (``paper``, ``recipe_pilot``) and ``protocol``
(the others, which also draw batches at random) in ``published.json`` beside this file, shown on every page.
"""

import ml_collections

from attnjax.sweep import check_names, model_block, with_harness_keys, with_recipe_keys

PRESETS = ("cpu", "cpu_all_encodings", "lr_pilot", "recipe_pilot", "paper")
ALL_ENCODINGS = "nope,sinusoidal,learned,rope,alibi,t5"
FAMILIES = ("logistic", "mlp", "cnn", "gru", "vit1d", "transformer")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    """Returns the config for ``preset`` (one of :data:`PRESETS`)."""
    check_names("preset", [preset], PRESETS)
    c = ml_collections.ConfigDict(dict(
        preset=preset, models=",".join(FAMILIES),  # "classifier"-kind names in attnjax.nn.MODELS
        positionals="nope,sinusoidal,rope",  # the Transformer classifier runs once per encoding
        datasets="normal,shuffled", train_sizes="250,1000,4000",  # examples per cell (<= 4000 - validation_size)
        num_seeds=3, first_seed=0,
        validation_size=0,  # > 0: hold out the last N training examples and score them instead of the test set
        permutation_seed=0,  # the shuffled variant's fixed permutation of the 40 positions
        dataset_seed=42,  # mnist1d generator seed (42 = the published dataset)
        batch_size=100, num_steps=1000, eval_batch_size=250, log_every=500,
        batch_order="random",  # "random": uniform with replacement; "cycle": the training set in order, pass after pass
        mesh_data=1))  # devices on the 'data' mesh axis
    with_harness_keys(c)
    with_recipe_keys(c)  # Adam after global-norm clipping at 1.0, a constant rate (attnjax.sweep.training)

    # One learning rate per model family (comma-separated values sweep them as a grid axis).
    c.learning_rates = ml_collections.ConfigDict(dict(
        logistic="1e-2", mlp="3e-3", cnn="1e-2", gru="1e-2", vit1d="3e-3", transformer="1e-2"))
    c.logistic = model_block("logistic")
    c.mlp = model_block("mlp", hidden_sizes=(100, 100))
    c.cnn = model_block("cnn", channels=(25, 25, 25), kernel_sizes=(5, 3, 3))
    c.gru = model_block("gru", hidden_size=32, pooling="last")
    attention = dict(num_layers=1, d_model=32, num_heads=2, mlp_dim=64, dropout_rate=0.0, max_len=64)
    # ViT-1D keeps its learned positions in its block: it runs once, not once per encoding.
    c.vit1d = model_block("vit1d", **attention, patch_size=4, pooling="cls", positional="learned")
    # The Transformer classifier's cell sets its positional encoding (its variant), not its model block.
    c.transformer = model_block("transformer", set_per_cell=("positional",), **attention, pooling="mean")

    if preset in ("cpu_all_encodings", "paper"):
        c.positionals = ALL_ENCODINGS
    if preset in ("recipe_pilot", "paper"):  # the reference protocol
        c.update(num_steps=8000, batch_order="cycle", max_grad_norm=None, warmup_steps=400, final_fraction=0.01,
                 weight_decay=0.01)  # warmup_cosine: 5% warmup, decay to 1% of the peak; adamw: small decay
        c.recipes = ml_collections.ConfigDict({family: "adam+constant" for family in FAMILIES})
        c.learning_rates.update({family: "1e-2" for family in FAMILIES})
        c.gru.update(hidden_size=6, bidirectional=True, pooling="flatten")
    if preset == "lr_pilot":
        c.update(datasets="normal", train_sizes="3500", num_seeds=1, first_seed=100, validation_size=500,
                 positionals="nope,sinusoidal")
        c.learning_rates.update({family: "1e-3,3e-3,1e-2" for family in FAMILIES})
    elif preset == "recipe_pilot":
        # Sized to 25 min on one core (8,000 steps: ViT-1D ~40 s, the Transformer over 40 tokens ~150 s; on a
        # loaded machine it took 33): every recipe for ViT-1D; constant Adam against AdamW + warmup + cosine for the
        # Transformer, on sinusoidal.
        c.update(models="vit1d,transformer", positionals="sinusoidal", datasets="normal", train_sizes="3500",
                 num_seeds=1, first_seed=100, validation_size=500)
        c.recipes.update(vit1d="adam+constant,adam+warmup_cosine,adamw+warmup_cosine",
                         transformer="adam+constant,adamw+warmup_cosine")
        c.learning_rates.update({family: "1e-3,3e-3,1e-2" for family in FAMILIES[4:]})
    elif preset == "paper":
        c.update(train_sizes="4000", num_seeds=5, log_every=1000)
        # recipe_pilot (docs/results/mnist1d/recipe_pilot): AdamW, 400 warmup steps, cosine decay to 1% of a 1e-2
        # peak. ViT-1D: the best validation accuracy (81.8%; train 100%). The Transformer (sinusoidal): the only
        # recipe that fit (train 98.6%, val 73.6%); constant Adam at 1e-2 scored 75.0% on validation (1.4 points
        # more, within one standard error of 500 examples) but stopped at train 89.6%, still rising.
        c.recipes.update(vit1d="adamw+warmup_cosine", transformer="adamw+warmup_cosine")
    return c
