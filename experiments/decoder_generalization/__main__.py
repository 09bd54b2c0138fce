"""``python -m experiments.decoder_generalization [--config=...:PRESET] [--config.x=y] [--workdir DIR]``."""

from attnjax import sweep
from experiments.decoder_generalization.run import CONFIG_FILE, EXPERIMENT

if __name__ == "__main__":
    sweep.cli(EXPERIMENT, CONFIG_FILE, "decoder_generalization")
