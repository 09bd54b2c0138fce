"""Config of ``python -m experiments.associative_recall``: multi-query associative recall (Zoology, Arora et al. 2023).

Presets (``--config=experiments/associative_recall/config.py:PRESET``):

* ``cpu`` (default; minutes on 2 cores): vocabulary 32, length 16 with 2 and 4 key-value pairs, width 64, 3 seeds,
  300 steps of batch 64 from 20,000 examples per seed, trained at filler noise 0 and tested at 0, 0.5 and 1;
  learning rates per attention variant from ``lr_pilot``.
* ``lr_pilot``: chooses those learning rates on a validation split (the test set is never built): two per model,
  4 pairs, seeds 100 and 101, ``mlp_dim`` 128 (the ``cpu`` preset before its feed-forward was halved). Chosen at 4
  pairs only: at 2 pairs softmax attention's 3e-3 keeps it on the chance plateau (1/P, loss ln P) past 300 steps,
  where 1e-3 leaves it by about 300 steps in 3 of 3 seeds.
* ``paper``: Zoology's Figure 2 grid: vocabulary 8,192, (length, pairs) in {(64, 4), (128, 8), (256, 16)}, 100,000
  training and 3,000 test examples, widths 64-512, 4 learning rates picked on validation, training noise {0, 1} at
  (128, 8). Sized for an accelerator.
* ``zoology``: Zoology's shape at a 2-core size: (length, pairs) in {(64, 4), (128, 8)} (16 tokens per pair),
  vocabulary 256, widths 32, 64 and 128, softmax attention against BaseConv, Hyena, Based and the LSTM and GRU
  (216 cells), all with Zoology's AdamW (weight decay 0.1) and a warmup then cosine decay, learning rates 1e-3 and
  3e-3 picked per setting and width on validation, 3 seeds, 3,000 steps of batch 64 from 100,000 examples per seed,
  a cell stopping once its validation accuracy reaches 99%. Run it with ``--config.workers=2``: a probe of 200
  steps per model put the grid at 13-19 h on 2 loaded cores if no cell stops early ((256, 16) would more than double
  that and is left out). Softmax attention may stay at chance at this budget: in one-seed probes at (64, 4), width
  64, it stayed at 1/P validation accuracy through 1,500-2,800 steps at lr 1e-3, 3e-3 or 1e-2, with learned
  positions, 1 head or batch 256.

Differences from Zoology, per preset: ``protocol`` in ``published.json`` beside this file, shown on every page.
"""

import ml_collections

from attnjax.ops.registry import ATTENTION
from attnjax.sweep import check_names, model_block, with_harness_keys, with_recipe_keys
from attnjax.sweep.training import with_stopping_keys

PRESETS = ("cpu", "lr_pilot", "paper", "zoology")
FAMILIES = ("transformer_lm", "lstm", "gru")
MIXERS = ("base_conv", "hyena", "based")  # Zoology's attention-free LMs (attnjax.nn.mixer_lm), in ``zoology``
CPU_ATTENTIONS = "dot_product,cosine,l2,additive,multiplicative,sigmoid,linear,performer,local"
ALL_ATTENTIONS = ",".join(ATTENTION)  # ``paper``: every registered variant
# Model fields a cell sets (from its width, variant and length, config.vocab_size, mlp_ratio, attention_options).
LM_SET_PER_CELL = ("d_model", "mlp_dim", "attention.name", "attention.options", "max_len", "vocab_size")
MIXER_SET_PER_CELL = ("d_model", "mlp_dim", "max_len", "vocab_size")  # from the width, mlp_ratio and the length
# ``zoology``: softmax attention only; linear attention and the Performer cost 1.3-1.4x and 2.5-3.2x its step time.
ZOOLOGY_ATTENTIONS = "dot_product"
ZOOLOGY_STEPS = 3000  # ``zoology``'s budget in steps of batch 64
# ``zoology``'s learning rates, every model: the best rates of this study's lr_pilot (constant Adam) and of the
# length-generalization recipe pilot (AdamW, cosine decay) lie in 1e-3..3e-3 for every family; chosen per setting,
# as 2 pairs needed 1e-3 where 4 pairs took 3e-3 (lr_pilot above).
ZOOLOGY_LRS = "1e-3,3e-3"
Config = ml_collections.ConfigDict


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    """Returns the config for ``preset`` (one of :data:`PRESETS`)."""
    check_names("preset", [preset], PRESETS)
    c = Config(dict(
        preset=preset, models=",".join(FAMILIES), attentions=CPU_ATTENTIONS,  # the LM runs once per attention
        vocab_size=32, settings="16:2,16:4", widths="64",  # "seq_len:num_kv_pairs" settings, each at every width
        noise=0.0,  # share of filler positions holding a random token (Zoology Figure 2: 0)
        noise_sweep="", noise_setting="16:2",  # training-noise levels, run at one setting and the first width
        eval_noises="0.0,0.5,1.0",  # every cell is also tested at these filler-noise levels (no training cost)
        power_a=0.01, num_train=20_000, num_val=500, num_test=1_000, num_train_eval=500,
        score_test=True,  # False: the test set is never built (the pilot)
        num_seeds=3, first_seed=0, batch_size=64, num_steps=300, eval_batch_size=500,
        log_every=50))
    with_harness_keys(c)  # --config.only="model=transformer_lm,variant=dot_product|linear", workers, ...
    with_recipe_keys(c)  # Adam after global-norm clipping at 1.0, a constant rate (attnjax.sweep.training)
    c.mesh_data = 1  # devices on the 'data' mesh axis
    c.attention_map_setting = "16:4"  # where the softmax Transformer records its attention maps ('' : nowhere)
    c.learning_rates = Config(dict(transformer_lm="3e-3", lstm="3e-3", gru="3e-3"))
    c.attention_learning_rates = Config(dict(  # the pilot's choices, over learning_rates.transformer_lm
        dot_product="3e-3", cosine="1e-3", l2="1e-3", additive="1e-3", multiplicative="1e-3", sigmoid="1e-3",
        linear="3e-3", performer="1e-3", local="1e-3"))
    c.mlp_ratio = 1  # Transformer mlp_dim = mlp_ratio x width
    # Model blocks hold every other field of the model's config
    # (--config.transformer_lm.attention.implementation=blockwise).
    c.transformer_lm = model_block("transformer_lm", set_per_cell=LM_SET_PER_CELL, num_layers=2, num_heads=2,
                                   positional="rope", tie_embeddings=True, dropout_rate=0.0, norm="pre")
    # The window must be shorter than the context-to-query distance, else local = softmax.
    c.attention_options = Config(dict(local=dict(local_window_size=4)))
    for family in FAMILIES[1:]:  # the recurrent models: width = hidden_size
        c[family] = model_block(family, set_per_cell=("hidden_size", "vocab_size"), num_layers=2)
    if preset == "lr_pilot":
        c.update(dict(settings="16:4", num_seeds=2, first_seed=100, mlp_ratio=2, score_test=False,
                      attention_map_setting="", eval_noises=""))
        c.learning_rates = Config(dict(transformer_lm="1e-3,3e-3", lstm="3e-3,1e-2", gru="3e-3,1e-2"))
        c.attention_learning_rates = Config()
    elif preset == "paper":
        c.update(dict(attentions=ALL_ATTENTIONS, vocab_size=8192, settings="64:4,128:8,256:16", widths="64,128,256,512",
                      noise_sweep="0.0,1.0", noise_setting="128:8", num_train=100_000, num_val=3_000, num_test=3_000,
                      num_train_eval=3_000, batch_size=256, num_steps=25_000, log_every=1000,
                      attention_map_setting="64:4"))
        c.attention_options.local.local_window_size = 16
        c.attention_learning_rates = Config()
        c.learning_rates.update({family: "1e-4,4.64e-4,2.15e-3,1e-2" for family in FAMILIES})  # logspace(-4, -2, 4)
    elif preset == "zoology":
        c.update(dict(models=",".join((FAMILIES[0], *MIXERS, *FAMILIES[1:])), attentions=ZOOLOGY_ATTENTIONS,
                      vocab_size=256, settings="64:4,128:8", widths="32,64,128", num_train=100_000, num_val=1_000,
                      num_test=3_000, num_train_eval=1_000, batch_size=64, num_steps=ZOOLOGY_STEPS, log_every=100,
                      attention_map_setting="64:4"))
        # Zoology's recipe (zoology/train.py): AdamW, weight decay 0.1, cosine decay to 0; the warmup is ours.
        c.update(dict(optimizer="adamw", schedule="warmup_cosine", weight_decay=0.1, final_fraction=0.0,
                      warmup_steps=ZOOLOGY_STEPS // 20))
        # Zoology's stop rule: a cell ends once its validation accuracy (every log record) reaches 99%; never
        # for a flat curve (MQAR learning curves sit on a plateau, then drop: docs/results/associative_recall).
        with_stopping_keys(c, threshold=0.99, consecutive=1, flat_steps=ZOOLOGY_STEPS)
        c.attention_options.local.local_window_size = 16
        c.attention_learning_rates = Config()
        c.learning_rates = Config({model: ZOOLOGY_LRS for model in (*FAMILIES, *MIXERS)})
        for mixer in MIXERS:  # Zoology's backbone, with the feed-forward branch and dropout of the other models
            c[mixer] = model_block(mixer, set_per_cell=MIXER_SET_PER_CELL, tie_embeddings=True, embed_dropout=0.0)
        # Zoology's MQAR Based (its iclr24_zoology_figure2 config): BaseConv with 3 taps, then Taylor linear
        # attention (feature_dim 8, 1 head), layer by layer; no sliding window (a window as long as the
        # key-to-query distance would be softmax attention over every key here).
        c.based.update(dict(num_layers=2, layer_mixers=("base_conv", "linear"), feature_dim=8, num_heads=1))
    return c
