"""Config of ``experiments/mnist1d/run.py``: MNIST-1D, normal vs shuffled positions, and sample efficiency.

Presets (``--config=experiments/mnist1d/config.py:PRESET``):

* ``cpu`` (default, sized for the study's 60-minute budget on 2 CPU cores): logistic, MLP, CNN, GRU, ViT-1D
  and the Transformer classifier over the 40 positions with no positions (the permutation-equivariant
  control), sinusoidal and RoPE positions x {normal, shuffled} x train sizes {250, 1000, 4000} x 3 seeds
  (144 cells); Adam (global-norm clip 1.0), batch 100, ``num_steps`` (1,000) steps, one learning rate per
  model family (from ``lr_pilot``). Measured on the 2-core machine with other jobs on it: per cell
  logistic/MLP ~0.5-1 s, CNN ~1-2 s, GRU ~4-6 s, ViT-1D ~2-3 s, Transformer 9-25 s (+3-5 s compile for each
  model config's first cell); the 22 cells of one seed and size with all six encodings took 3.6 min.
* ``cpu_all_encodings``: ``cpu`` with every positional encoding (nope, sinusoidal, learned, rope, alibi, t5):
  198 cells, about twice as long (the Transformer's cells are most of the cost).
* ``lr_pilot``: the pilot that chooses the ``cpu`` learning rates: lrs {1e-3, 3e-3, 1e-2} x every model,
  normal data, the full training size, one seed (100, disjoint from the study's seeds). The last 500 of the
  4,000 training examples are held out as a **validation split**; cells report ``val_accuracy`` on it and the
  choice is the best validation accuracy. The test set is never looked at. Result (1,000 steps, validation
  accuracy % at 1e-3 / 3e-3 / 1e-2): logistic 30.0 / 30.4 / 31.0, MLP 57.2 / 63.6 / 63.6 (tie: the smaller),
  CNN 63.8 / 81.0 / 89.2, GRU 53.8 / 80.6 / 93.4, ViT-1D 66.0 / 72.4 / 70.4, Transformer (mean of nope and
  sinusoidal) 49.1 / 50.2 / 53.6, hence logistic 1e-2, MLP 3e-3, CNN 1e-2, GRU 1e-2, ViT-1D 3e-3, Transformer 1e-2.
* ``paper``: the published protocol as the reference repository (greydanus/mnist1d, ``get_model_args``)
  states it: Adam, learning rate 1e-2, no weight decay, batch 100, 8,000 steps, the full 4,000 training
  examples; models at their reference sizes (MLP two hidden layers of 100, CNN three convolutions of 25
  channels, GRU hidden 6), 5 seeds.

Differences from the published protocol (Greydanus & Kobak), for every preset:

* the shuffled permutation is ``numpy.random.default_rng(0).permutation(40)`` (the package draws its own
  from NumPy's global state), applied after generation (normalization is unaffected: it is global);
* the reference GRU is **bidirectional** with hidden size 6 and reads out all time steps; ours is
  unidirectional and reads out the last state (``pooling="last"``), hidden 32 on CPU;
* Adam is preceded by global-norm gradient clipping at 1.0 (the reference does not clip);
* batches are drawn with replacement (the reference draws random batches per step too, without epochs);
* the reference reports one run; we report mean and 95% t-interval over seeds, and the sample-efficiency
  grid (train sizes < 4,000, subsets drawn per seed) and the attention models are ours;
* ``cpu`` only: fewer steps (``num_steps`` below, not 8,000), per-family learning rates from the pilot
  (not 1e-2 for all), 3 seeds.
"""

import ml_collections

from attnjax.sweep import model_block, with_harness_keys

PRESETS = ("cpu", "cpu_all_encodings", "lr_pilot", "paper")
ALL_ENCODINGS = "nope,sinusoidal,learned,rope,alibi,t5"
FAMILIES = ("logistic", "mlp", "cnn", "gru", "vit1d", "transformer")
# The Transformer classifier's cell sets its positional encoding from its variant, not from its model block.
SET_PER_CELL = ("positional",)


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    """Returns the config for ``preset`` (one of :data:`PRESETS`)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.models = ",".join(FAMILIES)  # comma-separated names in attnjax.nn.MODELS ("classifier" kind)
    c.positionals = "nope,sinusoidal,rope"  # the Transformer classifier runs once per encoding (attnjax.ops.POSITIONAL)
    c.datasets = "normal,shuffled"
    c.train_sizes = "250,1000,4000"  # training examples per cell (at most 4000 - validation_size)
    c.num_seeds = 3
    c.first_seed = 0
    c.validation_size = 0  # > 0: hold out the last N training examples and score them instead of the test set
    c.permutation_seed = 0  # the shuffled variant's fixed permutation of the 40 positions
    c.dataset_seed = 42  # mnist1d generator seed (42 = the published dataset)
    c.batch_size = 100
    c.num_steps = 1000
    c.max_grad_norm = 1.0
    c.eval_batch_size = 250
    c.log_every = 500
    c.mesh_data = 1  # devices on the 'data' mesh axis (batches of 100 on one CPU device)
    # The harness keys (--config.only="model=cnn|gru,dataset=shuffled", workers, ...): attnjax.sweep.settings.
    with_harness_keys(c)

    # One learning rate per model family (comma-separated values sweep them as a grid axis); see lr_pilot.
    c.learning_rates = ml_collections.ConfigDict(dict(
        logistic="1e-2", mlp="3e-3", cnn="1e-2", gru="1e-2", vit1d="3e-3", transformer="1e-2"))
    # Model blocks hold every field of the model's config: any of them can be overridden on the command line.
    c.logistic = model_block("logistic")
    c.mlp = model_block("mlp", hidden_sizes=(100, 100))
    c.cnn = model_block("cnn", channels=(25, 25, 25), kernel_sizes=(5, 3, 3))
    c.gru = model_block("gru", hidden_size=32, pooling="last")
    # One layer of width 32 on CPU: two layers of 4 heads cost ~5x more per step on the shared 2-core machine.
    attention = dict(num_layers=1, d_model=32, num_heads=2, mlp_dim=64, dropout_rate=0.0, max_len=64)
    # ViT-1D keeps its learned positions in its block: it runs once, not once per encoding.
    c.vit1d = model_block("vit1d", **attention, patch_size=4, pooling="cls", positional="learned")
    c.transformer = model_block("transformer", set_per_cell=SET_PER_CELL, **attention, pooling="mean")

    if preset in ("cpu_all_encodings", "paper"):
        c.positionals = ALL_ENCODINGS
    if preset == "lr_pilot":
        c.datasets = "normal"
        c.train_sizes = "3500"
        c.num_seeds = 1
        c.first_seed = 100
        c.validation_size = 500
        c.positionals = "nope,sinusoidal"
        for family in FAMILIES:
            c.learning_rates[family] = "1e-3,3e-3,1e-2"
    elif preset == "paper":
        c.train_sizes = "4000"
        c.num_seeds = 5
        c.num_steps = 8000
        c.log_every = 1000
        c.gru.hidden_size = 6
        for family in FAMILIES:
            c.learning_rates[family] = "1e-2"
    return c
