"""Attention vs no attention in seq2seq (Bahdanau et al. 2014): ``python -m experiments.seq2seq_attention``."""
