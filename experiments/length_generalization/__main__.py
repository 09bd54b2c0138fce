"""``python -m experiments.length_generalization [--config=...:PRESET] [--config.x=y] [--workdir DIR]``."""

from attnjax import sweep
from experiments.length_generalization.run import CONFIG_FILE, EXPERIMENT

if __name__ == "__main__":
    sweep.cli(EXPERIMENT, CONFIG_FILE, "length_generalization")
