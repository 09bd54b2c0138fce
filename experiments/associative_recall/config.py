"""Config of ``python -m experiments.associative_recall``: multi-query associative recall (Zoology, Arora et al. 2023).

Presets (``--config=experiments/associative_recall/config.py:PRESET``):

* ``cpu`` (default; one process in under 10 minutes on the shared 2-core machine): vocabulary 32, sequence
  length 16 with 2 and 4 key-value pairs, width 64 (``mlp_dim`` 64), 3 seeds, 300 Adam steps of batch 64
  (19,200 examples drawn with replacement from a fixed set of 20,000 per seed); trained at filler noise 0
  (the paper's Figure 2 setting) and scored on test sets with filler noise 0, 0.5 and 1 (the noise sweep:
  distractors at test time, no extra training); 1,000 test and 500 validation examples per setting.
  Budget, measured on the 2-core machine while two to three other experiments shared it (load average
  5-8): a width-64 Transformer step is 13-20 ms, a Performer step ~50 ms, a model's first cell adds ~10 s
  of compilation; 11 models x 3 seeds x 2 settings at 300 steps with ``mlp_dim`` 128 took 10 min 24 s, so
  ``mlp_dim`` was halved (12% less time per step): 5 min 02 s wall once the other jobs had ended (load
  ~1-2), an estimated ~9.5 min at load 6-8. At this budget leaving the loss plateau (the induction-like
  circuit that binds keys to values) happens in some seeds and not others; with width 32 or vocabulary 64
  it did not happen within 1,500 steps (measured).
* ``lr_pilot``: the pilot that chose the ``cpu`` learning rates on a **validation split** (never the test
  set: ``score_test=False``): lrs {1e-3, 3e-3} for every attention variant and {3e-3, 1e-2} for LSTM and
  GRU, 4 pairs, noise 0, 300 steps, two seeds (100 and 101, disjoint from the study's; run as two
  processes, ``--config.first_seed=101 --config.num_seeds=1`` for the second, and merged). Choice: best
  mean validation accuracy per model and attention variant. It ran with ``mlp_dim`` 128 (the ``cpu``
  preset before its feed-forward was halved to fit 10 minutes; the choice is carried over). Result
  (validation accuracy %, seeds 100 and 101, at the smaller / larger lr): dot_product 65.3, 99.9 /
  **97.4, 99.9**; cosine **38.9, 83.0** / 37.4, 37.1; l2 **35.8, 37.9** / 35.4, 36.4; additive **36.5, 36.6**
  / 36.4, 36.6; multiplicative **100.0, 99.9** / 98.7, 96.9; sigmoid **99.9, 100.0** / 99.9, 80.8; linear
  37.5, 37.1 / **36.9, 38.2**; performer **59.8, 38.4** / 37.2, 36.4; local **40.2, 38.5** / 37.2, 37.6;
  LSTM **34.9, 35.6** / 35.5, 34.5; GRU **35.9, 36.5** / 34.8, 34.8. Where a model learned in neither run
  (l2, additive, linear, local, LSTM, GRU) the choice is within noise. Whether a run leaves the loss
  plateau within 300 steps varies by seed (dot_product: 65% vs 99.9% at 1e-3).
* ``paper``: Zoology's Figure 2 protocol as its configs state it (``zoology/experiments/paper_configs/
  iclr24_zoology_figure2/configs.py``): vocabulary 8,192; (sequence length, pairs) in {(64, 4), (128, 8),
  (256, 16)}; 100,000 training and 3,000 test examples; power-law exponent 0.01; filler noise 0
  (``random_non_queries=False``), plus a training-noise sweep {0, 1} at (128, 8); widths 64, 128, 256,
  512; 2 layers; learning rates ``numpy.logspace(-4, -2, 4)``; 64 epochs. Here the best learning rate per
  (model, setting, width) is picked on a 3,000-example validation split, then its test accuracy is
  reported. Sized for an accelerator (on CPU it is weeks).

Differences from Zoology (all presets unless marked):

* models: Zoology compares attention with gated convolutions (H3, Hyena, BaseConv), RWKV, Mamba and Based;
  we compare softmax attention with attnjax's registered attention variants (cosine, l2, additive,
  multiplicative, sigmoid, linear elu+1, Performer, sliding-window local, softmax with temperature) and
  with LSTM and GRU (2 layers, hidden = width, a learned [V, width] token embedding first). Linear
  attention and the Performer are the closest to Zoology's attention-free/approximate mixers (Based is a
  linear attention); the local window (4 keys on ``cpu``, 16 on ``paper``) stands for short-range mixers;
  none of the gated convolutions is here;
* the Transformer block has a feed-forward branch (``mlp_dim = width``); Zoology's Figure 2 blocks have
  none (``state_mixer=Identity``). Attention has 2 heads with RoPE positions (Zoology: 1 head, learned
  absolute positions); with 1 head and learned positions our models did not leave the loss plateau within
  the ``cpu`` budget (measured: 5,000 steps of batch 32 at width 32, vocabulary 64, still at ~28%).
  Embeddings are tied to the read-out, as in Zoology; no dropout (Zoology: 0.1 on the embeddings);
* optimizer: Adam with global-norm clipping at 1.0 and a constant learning rate, batches drawn with
  replacement for ``num_steps`` steps (Zoology: AdamW, cosine decay over 64 epochs, early stopping at 99%
  validation accuracy, where its "validation" set is the test set); ``paper`` uses batch 256 at every
  length (Zoology: 512 at lengths 64 and 128);
* learning rates are chosen on a validation split, never on test accuracy (Zoology reports the best
  learning rate on its test set);
* the test-time noise sweep (``eval_noises``) is ours; Zoology trains and tests at one noise level;
* ``cpu`` only: vocabulary 32 (not 8,192), sequence length 16 for both numbers of pairs (Zoology grows the
  length with the pairs: 16 tokens per pair), 2 and 4 pairs only, width 64 only, 19,200 training examples
  seen (not 64 epochs of 100,000; at one length, the 2-pair runs get half the scored queries of the 4-pair
  runs per step), ``mlp_dim`` 64 (the pilot ran with 128), per-variant learning rates from ``lr_pilot``,
  3 seeds (Zoology: one run per learning rate), and the softmax-with-temperature variant is left out: at
  its default temperature 1 it *is* dot-product attention, with the same parameters and outputs (``paper``
  keeps it). With 32 ids, ~3% of the 2-pair test sequences also occur in a training set (0% at 4 pairs);
  ``summary.md`` reports the share (Zoology warns above 0.1%).
"""

import ml_collections

from attnjax.sweep import model_block, with_harness_keys

PRESETS = ("cpu", "lr_pilot", "paper")
FAMILIES = ("transformer_lm", "lstm", "gru")
# Every registered attention variant: all apply under a causal mask (the registry's functions take is_causal).
ALL_ATTENTIONS = ("dot_product,softmax_temperature,cosine,l2,additive,multiplicative,sigmoid,linear,performer,local")
CPU_ATTENTIONS = "dot_product,cosine,l2,additive,multiplicative,sigmoid,linear,performer,local"
# A cell sets these model fields itself (from its width, variant and sequence length, and config.vocab_size,
# config.mlp_ratio and config.attention_options), not from the model's block.
LM_SET_PER_CELL = ("d_model", "mlp_dim", "attention", "attention_options", "max_len", "vocab_size")
RECURRENT_SET_PER_CELL = ("hidden_size", "vocab_size")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    """Returns the config for ``preset`` (one of :data:`PRESETS`)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.models = ",".join(FAMILIES)  # names in attnjax.nn.MODELS ("sequence" kind)
    c.attentions = CPU_ATTENTIONS  # the Transformer LM runs once per attention (attnjax.ops.registry.ATTENTION)
    # The task: "seq_len:num_kv_pairs" settings (the pairs sweep), at every width and at filler noise `noise`.
    c.vocab_size = 32
    c.settings = "16:2,16:4"
    c.widths = "64"
    c.noise = 0.0  # share of filler positions holding a random token (0: Zoology Figure 2; 1: its generator default)
    # The noise sweep: these noise levels at one setting and the first width (cells shared with the pairs sweep
    # run once).
    c.noise_sweep = ""  # cpu: no training-noise cells (their cost); the test-time sweep below covers noise
    c.noise_setting = "16:2"
    # Every cell is also scored on test sets with these filler-noise levels (no training cost).
    c.eval_noises = "0.0,0.5,1.0"
    c.power_a = 0.01  # query-gap power law (Zoology: 0.01)
    c.num_train = 20_000  # training examples per seed (a fixed set; batches are drawn from it with replacement)
    c.num_val = 500  # validation examples per setting (learning-rate choice)
    c.num_test = 1_000  # test examples per setting (Zoology: 3,000)
    c.num_train_eval = 500  # training examples scored for the training fit
    c.score_test = True  # False (the pilot): the test set is never generated or scored
    c.num_seeds = 3
    c.first_seed = 0
    c.batch_size = 64
    c.num_steps = 300
    c.max_grad_norm = 1.0
    c.eval_batch_size = 500
    c.log_every = 50
    # The harness keys (attnjax.sweep.settings), e.g. --config.only="model=transformer_lm,variant=dot_product|linear".
    with_harness_keys(c)
    c.mesh_data = 1  # devices on the 'data' mesh axis
    c.attention_map_setting = "16:4"  # the softmax Transformer's attention maps are recorded at this setting

    c.learning_rates = ml_collections.ConfigDict(dict(transformer_lm="3e-3", lstm="3e-3", gru="3e-3"))
    # Per-variant choices of the pilot (override learning_rates.transformer_lm for that attention).
    c.attention_learning_rates = ml_collections.ConfigDict(dict(
        dot_product="3e-3", cosine="1e-3", l2="1e-3", additive="1e-3", multiplicative="1e-3", sigmoid="1e-3",
        linear="3e-3", performer="1e-3", local="1e-3"))
    c.mlp_ratio = 1  # Transformer mlp_dim = mlp_ratio x width
    # Model blocks hold every field of the model's config but those a cell sets: any of them can be overridden
    # on the command line (--config.transformer_lm.implementation=blockwise).
    c.transformer_lm = model_block("transformer_lm", set_per_cell=LM_SET_PER_CELL, num_layers=2, num_heads=2,
                                   positional="rope", tie_embeddings=True, dropout_rate=0.0, norm="pre")
    # Variant keywords: the window must be shorter than the context-to-query distance, else local = softmax.
    c.attention_options = ml_collections.ConfigDict(dict(local=dict(local_window_size=4)))
    c.lstm = model_block("lstm", set_per_cell=RECURRENT_SET_PER_CELL, num_layers=2)
    c.gru = model_block("gru", set_per_cell=RECURRENT_SET_PER_CELL, num_layers=2)

    if preset == "lr_pilot":
        c.settings = "16:4"
        c.noise_sweep = ""
        c.num_seeds = 2
        c.first_seed = 100
        c.mlp_ratio = 2  # as run (see the docstring): the cpu preset before it was shrunk
        c.score_test = False
        c.attention_map_setting = ""
        c.learning_rates = ml_collections.ConfigDict(dict(transformer_lm="1e-3,3e-3", lstm="3e-3,1e-2",
                                                          gru="3e-3,1e-2"))
        c.attention_learning_rates = ml_collections.ConfigDict()
        c.eval_noises = ""
    elif preset == "paper":
        c.attentions = ALL_ATTENTIONS
        c.vocab_size = 8192
        c.settings = "64:4,128:8,256:16"
        c.widths = "64,128,256,512"
        c.noise_sweep = "0.0,1.0"
        c.noise_setting = "128:8"
        c.num_train = 100_000
        c.num_val = 3_000
        c.num_test = 3_000
        c.num_train_eval = 3_000
        c.batch_size = 256  # Zoology: 512 at lengths 64 and 128, 256 at 256; one batch size keeps one program
        c.num_steps = 25_000  # 64 epochs of 100,000 at batch 256
        c.log_every = 1000
        c.attention_map_setting = "64:4"
        c.attention_options.local.local_window_size = 16
        c.attention_learning_rates = ml_collections.ConfigDict()
        for family in FAMILIES:
            c.learning_rates[family] = "1e-4,4.64e-4,2.15e-3,1e-2"  # numpy.logspace(-4, -2, 4), rounded
    return c
