"""``python -m experiments.mnist1d [--config=...:PRESET] [--config.x=y] [--workdir DIR]``."""

from attnjax import sweep
from experiments.mnist1d.run import CONFIG_FILE, EXPERIMENT

if __name__ == "__main__":
    sweep.cli(EXPERIMENT, CONFIG_FILE, "mnist1d")
