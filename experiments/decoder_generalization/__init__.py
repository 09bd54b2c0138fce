"""Length generalization of decoder-only models (issue 26): ``python -m experiments.decoder_generalization``."""
