"""``python -m experiments.seq2seq_attention [--config=...:PRESET] [--config.x=y] [--workdir DIR]``."""

from attnjax import sweep
from experiments.seq2seq_attention.run import CONFIG_FILE, EXPERIMENT

if __name__ == "__main__":
    sweep.cli(EXPERIMENT, CONFIG_FILE, "seq2seq_attention")
