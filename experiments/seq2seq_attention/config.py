"""Config of ``experiments/seq2seq_attention/run.py``: attention vs no attention in seq2seq (Bahdanau et al. 2014).

Presets (``--config=experiments/seq2seq_attention/config.py:PRESET``):

* ``cpu`` (default, 2 CPU cores): copy and reverse over 8 symbols, trained on lengths 1..10, scored at 1..30;
  the GRU encoder-decoder without attention (RNNencdec), with additive (RNNsearch) and multiplicative (Luong)
  attention, all with the same encoder, decoder and optimizer, and a 2+2-layer Transformer; 3 seeds, 1,000 steps
  of batch 32; one learning rate per family from ``lr_pilot``.
* ``lr_pilot``: lrs {3e-4, 1e-3, 3e-3, 1e-2} x every model x both tasks, one seed (100), scored only at the
  training lengths on a validation stream; a family's lr is its best mean (the RNN variants share one).
* ``paper``: Bahdanau-like sizes for accelerators: lengths 1..50 (tested to 150), GRU 1000, embeddings 620,
  batch 80, 20,000 steps, four tasks, 5 seeds; the ``cpu`` pilot's lrs until ``paper_lr_pilot`` (the
  ``lr_pilot`` rule at these sizes, lrs {1e-4, 3e-4, 1e-3}) has run.

Differences from the paper: ``protocol`` in ``published.json`` beside this file, shown on every page.
"""

import ml_collections

from attnjax.data.seq2seq import SEQ2SEQ_TASKS
from attnjax.nn.rnn_seq2seq import SEQ2SEQ_ATTENTION
from attnjax.sweep import check_names, model_block, with_harness_keys, with_recipe_keys

PRESETS = ("cpu", "lr_pilot", "paper", "paper_lr_pilot")
FAMILIES = ("rnn_seq2seq", "transformer_seq2seq")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    """Returns the config for ``preset`` (one of :data:`PRESETS`)."""
    check_names("preset", [preset], PRESETS)
    c = ml_collections.ConfigDict(dict(
        preset=preset, tasks="copy,reverse",  # names in attnjax.data.seq2seq.SEQ2SEQ_TASKS
        models=",".join(FAMILIES),  # names in attnjax.nn.MODELS ("seq2seq" kind)
        rnn_attentions=",".join(SEQ2SEQ_ATTENTION),  # rnn_seq2seq runs once per kind: none,additive,multiplicative
        alphabet_size=8,  # source and target symbols (V = C); the decoder's begin token is this id
        train_max_length=10,  # N: training source lengths uniform in 1..N, drawn per example
        test_max_length=30,  # M: evaluate every length 1..M (M >= 3N in the study presets)
        eval_split="test",  # "test" or "validation" (the lr pilot): which fresh-example stream is scored
        eval_batch_size=64,  # fresh examples per evaluated length
        eval_bucket=0,  # pad evaluated lengths up to multiples of this (0: every length padded to M, one program)
        num_seeds=3, first_seed=0, batch_size=32, num_steps=1000,
        min_train_accuracy=0.9,  # in-distribution greedy token accuracy below this is flagged as under-fit
        attention_map_task="reverse",  # the first seed's attention models store cross-attention maps ("": none)
        attention_map_lengths="10,20",  # a training length and a test length
        log_every=250, mesh_data=1))  # mesh_data: devices on the 'data' mesh axis
    with_harness_keys(c)
    with_recipe_keys(c)  # Adam after global-norm clipping at 1.0, a constant rate (attnjax.sweep.training)

    # One learning rate per model family, from lr_pilot (comma-separated values sweep them as a grid axis).
    c.learning_rates = ml_collections.ConfigDict(dict(rnn_seq2seq="1e-3", transformer_seq2seq="3e-4"))
    # The RNN encoder-decoder's cell sets its attention (its variant, from config.rnn_attentions), not its block.
    c.rnn_seq2seq = model_block(
        "rnn_seq2seq", set_per_cell=("attention",), cell="gru", hidden_size=64, embed_dim=32, attention_dim=64,
        bidirectional_encoder=True, num_layers=1, dropout_rate=0.0)
    c.transformer_seq2seq = model_block(
        "transformer_seq2seq", num_layers=2, d_model=64, num_heads=4, mlp_dim=128, dropout_rate=0.0,
        positional="sinusoidal", max_len=2048)

    if preset in ("paper", "paper_lr_pilot"):
        c.update(tasks=",".join(SEQ2SEQ_TASKS), alphabet_size=32, train_max_length=50, test_max_length=150,
                 eval_batch_size=128, eval_bucket=50, num_seeds=5, batch_size=80, num_steps=20_000, log_every=1000,
                 attention_map_lengths="50,100", mesh_data=-1)
        c.rnn_seq2seq.update(hidden_size=1000, embed_dim=620, attention_dim=1000)
        c.transformer_seq2seq.update(num_layers=3, d_model=256, num_heads=8, mlp_dim=1024)
    if preset in ("lr_pilot", "paper_lr_pilot"):
        # In-distribution lengths only, on a validation stream: nothing long is ever looked at.
        c.update(num_seeds=1, first_seed=100, eval_split="validation", test_max_length=c.train_max_length,
                 attention_map_task="")
        lrs = "3e-4,1e-3,3e-3,1e-2" if preset == "lr_pilot" else "1e-4,3e-4,1e-3"
        c.learning_rates.update({family: lrs for family in FAMILIES})
    return c
