"""Multi-query associative recall (Zoology, Arora et al. 2023): ``python -m experiments.associative_recall``."""
