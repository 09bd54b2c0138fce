"""``python -m experiments.associative_recall [--config=...:PRESET] [--config.x=y] [--workdir DIR]``."""

from attnjax import sweep
from experiments.associative_recall.run import CONFIG_FILE, EXPERIMENT

if __name__ == "__main__":
    sweep.cli(EXPERIMENT, CONFIG_FILE, "associative_recall")
