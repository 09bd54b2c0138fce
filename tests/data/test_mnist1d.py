"""MNIST-1D generated offline: shapes, dtypes, the fixed position permutation, subsets and argument checks."""

import numpy as np
import pytest

from attnjax.data import mnist1d


@pytest.fixture(scope="module")
def normal():
    return mnist1d.load_mnist1d(False)


def test_shapes_dtypes_and_labels(normal):
    assert normal["x"].shape == (4000, 40) and normal["x"].dtype == np.float32
    assert normal["y"].shape == (4000,) and normal["y"].dtype == np.int32
    assert normal["x_test"].shape == (1000, 40) and normal["y_test"].shape == (1000,)
    assert normal["x_val"].shape == (0, 40)
    assert set(np.unique(normal["y"])) == set(range(10)) and set(np.unique(normal["y_test"])) <= set(range(10))
    assert np.array_equal(normal["permutation"], np.arange(40))
    assert np.all(np.isfinite(normal["x"])) and abs(float(normal["x"].std()) - 1.0) < 0.05


def test_shuffled_is_one_fixed_permutation_keeping_labels(normal):
    shuffled = mnist1d.load_mnist1d(True)
    perm = mnist1d.position_permutation()
    assert np.array_equal(shuffled["permutation"], perm) and not np.array_equal(perm, np.arange(40))
    assert np.array_equal(np.sort(perm), np.arange(40))
    assert np.array_equal(perm, np.random.default_rng(0).permutation(40))  # the stated seed
    for split in ("", "_test"):
        assert np.array_equal(shuffled["y" + split], normal["y" + split])
        assert np.array_equal(shuffled["x" + split], normal["x" + split][:, perm])  # every row, same perm
    assert np.array_equal(mnist1d.load_mnist1d(True)["x"], shuffled["x"])  # deterministic
    other = mnist1d.load_mnist1d(True, permutation_seed=1)
    assert not np.array_equal(other["permutation"], perm)


def test_subsets_validation_split_and_copies(normal):
    first = mnist1d.load_mnist1d(False, train_size=250)
    assert np.array_equal(first["x"], normal["x"][:250])
    a = mnist1d.load_mnist1d(False, train_size=250, subset_seed=3)
    b = mnist1d.load_mnist1d(True, train_size=250, subset_seed=3)
    assert np.array_equal(a["y"], b["y"]) and a["x"].shape == (250, 40)
    assert not np.array_equal(a["y"], first["y"])
    held = mnist1d.load_mnist1d(False, validation_size=500)
    assert held["x"].shape == (3500, 40) and np.array_equal(held["x_val"], normal["x"][3500:])
    sub = mnist1d.load_mnist1d(False, validation_size=500, train_size=3500, subset_seed=0)
    assert not (set(map(bytes, sub["x"])) & set(map(bytes, held["x_val"])))  # validation never trains
    a["x"][:] = 0  # callers get copies: the cache is untouched
    assert np.array_equal(mnist1d.load_mnist1d(False)["x"], normal["x"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(shuffled="yes"), "shuffled must be a bool"),
    (dict(train_size=0), "train_size must be an int in"),
    (dict(train_size=4001), "train_size must be an int in"),
    (dict(train_size=3600, validation_size=500), r"train_size must be an int in \[1, 3500\]"),
    (dict(validation_size=-1), "validation_size"),
    (dict(seed=-1), "seed must be"),
    (dict(permutation_seed=1.5), "seed must be"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mnist1d.load_mnist1d(**{"shuffled": False, **kwargs})


def test_shuffle_positions_checks():
    with pytest.raises(ValueError, match="permutation of range"):
        mnist1d.shuffle_positions(np.zeros((2, 3)), [0, 0, 1])
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        mnist1d.shuffle_positions(np.zeros(3), [0, 1, 2])
