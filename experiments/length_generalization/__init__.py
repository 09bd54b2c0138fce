"""Length generalization (Delétang et al. 2022; Ruoss et al. 2023): ``python -m experiments.length_generalization``."""
