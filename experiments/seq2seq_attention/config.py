"""Config of ``experiments/seq2seq_attention/run.py``: attention vs no attention in seq2seq (Bahdanau et al. 2014).

Presets (``--config=experiments/seq2seq_attention/config.py:PRESET``):

* ``cpu`` (default; 24 cells measured at 9 min 16 s wall in one process on the 2-core machine while other
  experiments kept its load average near 8, i.e. this process had well under one core): tasks
  copy and reverse over an alphabet of 8 symbols; source lengths uniform in 1..10 per example for training,
  evaluation at every length 1..30 (3N) with 64 fresh examples per length; models: the GRU encoder-decoder
  without attention (RNNencdec), with additive attention (RNNsearch, Bahdanau) and with multiplicative
  attention (Luong "general" with input feeding), all three with the same bidirectional GRU encoder (64 units
  per direction), decoder (64 units), embeddings (32) and optimizer, and a 2+2-layer encoder-decoder
  Transformer (d 64, 4 heads, sinusoidal positions); 3 seeds; Adam with global-norm clip 1.0, batch 32,
  1,000 steps. Every model fits the training lengths (in-distribution greedy token accuracy: RNNencdec 94-95%,
  the attention models 99-100%).
* ``lr_pilot``: the pilot that chose the ``cpu`` learning rates, one per model family (the three RNN variants
  share one, so attention is the only thing that differs between them): lrs {3e-4, 1e-3, 3e-3, 1e-2} x every model
  x both tasks, one seed (100, disjoint from the study's seeds 0..2). It scores only IN-DISTRIBUTION lengths
  1..10 on a separate validation stream (``eval_split="validation"``, ``test_max_length = train_max_length``),
  so the long test lengths never choose anything; the choice is the best mean in-distribution greedy token
  accuracy over the family's models and the tasks (ties within 0.1 point: the smaller lr). Result (32 cells,
  13.7 min on the shared 2-core machine), in-distribution greedy token accuracy % (mean of copy and reverse) at
  3e-4 / 1e-3 / 3e-3 / 1e-2: RNNencdec 90.1 / 94.3 / 93.2 / 88.5, RNNsearch 100.0 / 99.9 / 99.6 / 91.3, Luong
  99.0 / 99.6 / 98.9 / 64.3 (family mean 96.4 / 97.9 / 97.2 / 81.4), Transformer 99.95 / 99.88 / 98.8 / 52.9;
  hence rnn_seq2seq 1e-3 and transformer_seq2seq 3e-4 (the Transformer saturates at both 3e-4 and 1e-3, so
  the grid's lower edge is no concern there; every RNN variant is best inside the grid or within 0.1 point).
* ``paper``: a Bahdanau-like size for accelerators: train lengths 1..50 (their RNNsearch-50 / RNNencdec-50
  cut-off), test 1..150; GRU with 1000 units, embeddings 620, alignment dimension 1000 (their sizes), batch 80
  (theirs), 20,000 steps, alphabet 32, the four tasks copy / reverse / sort / odds_first, 5 seeds; a
  3+3-layer Transformer (d 256, 8 heads). Its learning rates come from ``paper_lr_pilot`` (the ``lr_pilot``
  rule at ``paper`` sizes: lrs {1e-4, 3e-4, 1e-3}, one seed, lengths 1..50 only); until that pilot has been
  run they are the ``cpu`` pilot's choices (1e-3 RNN, 3e-4 Transformer), which is a stated protocol difference.

Differences from Bahdanau et al. (2014), for every preset (also listed in summary.md):

* synthetic reordering tasks over a small alphabet (8 symbols on CPU) instead of WMT'14 English-French
  translation (30,000-word vocabularies); the tasks have a known alignment and a target as long as the source;
* per-token and whole-sequence accuracy of greedy decoding at every source length, instead of BLEU of beam
  search per sentence-length bucket; no end-of-sequence token (the target length is known, see
  :mod:`attnjax.data.seq2seq`);
* Adam with global-norm clipping 1.0 instead of Adadelta (eps 1e-6, rho 0.95) with norm clipping at 1;
* a tanh read-out layer instead of their maxout layer (500 units), and no beam search;
* ``cpu``: 64-unit GRUs, embeddings 32, attention dimension 64 (theirs: 1000, 620, 1000), training
  lengths 1..10 (theirs: sentences up to 30 or 50 words), 1,000 steps of batch 32 (theirs: ~5 days of
  training, batch 80), 3 seeds (they report one run);
* our RNNencdec feeds the fixed context vector to every decoder step and its read-out (Cho et al. 2014's
  design, as theirs does), and initializes the decoder from it; their RNNencdec is the same in spirit;
* the Luong and Transformer models are ours, added as other attention models with the same data.

Every value can be overridden, e.g. ``--config.num_steps=500 --config.tasks=copy``.
"""

import ml_collections

from attnjax.data.seq2seq import SEQ2SEQ_TASKS
from attnjax.nn.rnn_seq2seq import SEQ2SEQ_ATTENTION
from attnjax.sweep import model_block, with_harness_keys

PRESETS = ("cpu", "lr_pilot", "paper", "paper_lr_pilot")
FAMILIES = ("rnn_seq2seq", "transformer_seq2seq")
# The RNN encoder-decoder's cell sets its attention from its variant (config.rnn_attentions), not from its block.
RNN_SET_PER_CELL = ("attention",)


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    """Returns the config for ``preset`` (one of :data:`PRESETS`)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.tasks = "copy,reverse"  # comma-separated names in attnjax.data.seq2seq.SEQ2SEQ_TASKS
    c.models = ",".join(FAMILIES)  # comma-separated names in attnjax.nn.MODELS ("seq2seq" kind)
    c.rnn_attentions = ",".join(SEQ2SEQ_ATTENTION)  # rnn_seq2seq runs once per kind: none,additive,multiplicative
    c.alphabet_size = 8  # source and target symbols (V = C); the decoder's begin token is this id
    c.train_max_length = 10  # N: training source lengths uniform in 1..N, drawn per example
    c.test_max_length = 30  # M: evaluate every length 1..M (M >= 3N in the study presets)
    c.eval_split = "test"  # "test" or "validation" (the lr pilot): which fresh-example stream is scored
    c.eval_batch_size = 64  # fresh examples per evaluated length
    c.eval_bucket = 0  # pad evaluated lengths up to multiples of this (0: every length padded to M, one program)
    c.num_seeds = 3
    c.first_seed = 0
    c.batch_size = 32
    c.num_steps = 1000
    c.max_grad_norm = 1.0  # global-norm clipping before Adam
    c.min_train_accuracy = 0.9  # in-distribution greedy token accuracy below this is flagged as under-fit
    # The first seed's attention models on this task store cross-attention maps of one example per length.
    c.attention_map_task = "reverse"  # "" for none
    c.attention_map_lengths = "10,20"  # a training length and a test length
    c.log_every = 250
    c.mesh_data = 1  # devices on the 'data' mesh axis (batches of 32 on one CPU device)
    # The harness keys (--config.only="task=copy,variant=additive|none", workers, ...): attnjax.sweep.settings.
    with_harness_keys(c)

    # One learning rate per model family, from lr_pilot (comma-separated values sweep them as a grid axis).
    c.learning_rates = ml_collections.ConfigDict(dict(rnn_seq2seq="1e-3", transformer_seq2seq="3e-4"))
    # Model blocks hold every field of the model's config: any of them can be overridden on the command line.
    c.rnn_seq2seq = model_block(
        "rnn_seq2seq", set_per_cell=RNN_SET_PER_CELL, cell="gru", hidden_size=64, embed_dim=32, attention_dim=64,
        bidirectional_encoder=True, num_layers=1, dropout_rate=0.0)
    c.transformer_seq2seq = model_block(
        "transformer_seq2seq", num_layers=2, d_model=64, num_heads=4, mlp_dim=128, dropout_rate=0.0,
        positional="sinusoidal", max_len=2048)

    if preset in ("paper", "paper_lr_pilot"):
        c.tasks = ",".join(SEQ2SEQ_TASKS)  # copy, reverse, sort, odds_first
        c.alphabet_size = 32
        c.train_max_length = 50
        c.test_max_length = 150
        c.eval_batch_size = 128
        c.eval_bucket = 50
        c.num_seeds = 5
        c.batch_size = 80
        c.num_steps = 20_000
        c.log_every = 1000
        c.attention_map_lengths = "50,100"
        c.mesh_data = -1
        c.learning_rates = ml_collections.ConfigDict(dict(rnn_seq2seq="1e-3", transformer_seq2seq="3e-4"))
        c.rnn_seq2seq.update(hidden_size=1000, embed_dim=620, attention_dim=1000)
        c.transformer_seq2seq.update(num_layers=3, d_model=256, num_heads=8, mlp_dim=1024)
    if preset in ("lr_pilot", "paper_lr_pilot"):
        c.num_seeds = 1
        c.first_seed = 100
        c.eval_split = "validation"
        c.test_max_length = c.train_max_length  # in-distribution lengths only: nothing long is ever looked at
        c.attention_map_task = ""
        lrs = "3e-4,1e-3,3e-3,1e-2" if preset == "lr_pilot" else "1e-4,3e-4,1e-3"
        for family in FAMILIES:
            c.learning_rates[family] = lrs
    return c
