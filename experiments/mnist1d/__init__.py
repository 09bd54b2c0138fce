"""MNIST-1D (Greydanus & Kobak): normal vs shuffled positions, sample efficiency: ``python -m experiments.mnist1d``."""
