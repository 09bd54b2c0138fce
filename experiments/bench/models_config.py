"""Config of ``python -m experiments.bench.models``: the study sizes, the long-sequence and the decoding settings."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.study_settings = "32x40,128x100"  # BATCHxLENGTH, comma-separated (the studies: batch 32-128, L <= 100)
    c.vocab = 8  # one-hot input size and output classes
    c.transformer = ml_collections.ConfigDict(dict(num_layers=2, d_model=64, num_heads=4, mlp_dim=256))
    c.hidden_size = 64  # LSTM / GRU units
    c.long_length = 4096  # blockwise vs dense Transformer at batch 1 (0: skip)
    c.decode_setting = "32x40x40"  # BATCHxPROMPTxTOKENS, comma-separated: greedy decoding with vs without the cache
    c.learning_rate = 1e-3
    c.repeats = 5  # timed rounds; the median is reported
    c.steps_per_round = 5  # timed steps per round at the study sizes (1 at the long length)
    c.out = "results/bench_models"
    return c
