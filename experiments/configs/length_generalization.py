"""Config of ``experiments/length_generalization.py`` (Delétang et al. 2022 protocol).

Presets (``--config=experiments/configs/length_generalization.py:PRESET``):

* ``cpu`` (default): sized to finish in a few minutes on 2 CPU cores. Train lengths 1..20 and test
  lengths up to 40 (the paper: 1..40 and up to 500), batch 32 (paper: 128), 2 seeds, one learning rate
  and small models, 1000 steps at lr 3e-3 (the paper: lrs {1e-4, 3e-4, 1e-3}). The numbers it gives are a smoke-scale comparison, not the paper's.
* ``paper``: the published protocol (train 1..40, test to 500, batch 128, 10 seeds, Delétang-sized
  models); meant for an accelerator.

Every value can be overridden, e.g. ``--config.num_steps=3000 --config.tasks=parity_check``.
"""

import ml_collections


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    """Returns the config for ``preset`` in {"cpu", "paper"}."""
    if preset not in ("cpu", "paper"):
        raise ValueError(f"preset must be 'cpu' or 'paper', got {preset!r}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.tasks = "parity_check,reverse_string,duplicate_string"  # comma-separated names in attnjax.data.TASKS
    c.models = "lstm,transformer"  # comma-separated names in attnjax.nn.MODELS
    c.num_seeds = 2
    c.first_seed = 0
    c.train_max_length = 20  # train input lengths uniform in 1..N, sampled per example
    c.test_max_length = 40  # evaluate every length 1..M; OOD score = mean accuracy over N+1..M
    c.batch_size = 32
    c.num_steps = 1000
    c.learning_rate = 3e-3
    c.max_grad_norm = 1.0  # global-norm clipping before Adam
    c.eval_batch_size = 64  # examples per test length
    c.eval_bucket = 0  # pad test lengths up to multiples of this (0: one padded length for all)
    c.log_every = 100
    c.progress = "auto"  # tqdm bar: "auto" (when a terminal), "on", "off"
    c.mesh_data = -1  # devices on the 'data' mesh axis (-1: all)

    # Attention variant (attnjax.ops.registry.ATTENTION) and positional encoding
    # (attnjax.ops.positional.POSITIONAL) of the attention models, e.g. --config.attention=cosine
    # --config.positional=alibi; the model configs below refer to these two values.
    c.attention = "dot_product"
    c.positional = "sinusoidal"

    c.lstm = ml_collections.ConfigDict(dict(hidden_size=64, num_layers=1))
    c.transformer = ml_collections.ConfigDict(dict(
        num_layers=2, d_model=32, num_heads=4, mlp_dim=64, dropout_rate=0.0,
        attention=c.get_ref("attention"), positional=c.get_ref("positional"), causal=False))

    if preset == "paper":
        c.num_seeds = 10
        c.train_max_length = 40
        c.test_max_length = 500
        c.batch_size = 128
        c.num_steps = 100_000
        c.eval_batch_size = 128
        c.eval_bucket = 50
        c.log_every = 1000
        c.lstm.hidden_size = 256
        c.transformer.update(dict(num_layers=5, d_model=64, num_heads=8, mlp_dim=256))
    return c
