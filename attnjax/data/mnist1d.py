"""MNIST-1D (Greydanus & Kobak 2020/2024), generated offline with the ``mnist1d`` package, and its shuffled variant.

The dataset is *generated*, never downloaded: ``mnist1d.data.make_dataset(get_dataset_args())`` builds
the published dataset (5,000 sequences of length 40, 10 classes, generator seed 42, split 4,000 train /
1,000 test) in a few seconds. :func:`load_mnist1d` caches it per process, so a grid generates it once.

The **shuffled** variant applies one fixed permutation of the 40 positions (:func:`position_permutation`,
``numpy.random.default_rng(permutation_seed).permutation(40)``, ``permutation_seed=0`` by default) to every
sequence, train and test alike; labels are unchanged. (The ``mnist1d`` package's own ``shuffle_seq`` draws
its permutation from NumPy's global state after generating the data; the idea is the same, the
permutation differs.)
"""

from __future__ import annotations

import functools

import numpy as np

SEQ_LENGTH = 40
NUM_CLASSES = 10
NUM_TRAIN = 4000
NUM_TEST = 1000
DATASET_SEED = 42  # the published dataset's generator seed (mnist1d get_dataset_args)
PERMUTATION_SEED = 0


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
            high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")
    return int(value)


def position_permutation(length: int = SEQ_LENGTH, seed: int = PERMUTATION_SEED) -> np.ndarray:
    """The fixed permutation of positions used by the shuffled variant: ``[length]`` int64.

    ``shuffled[:, i] = x[:, perm[i]]`` for every sequence. Deterministic in ``(length, seed)``.

    Raises:
        ValueError: ``length < 1`` or ``seed < 0``.
    """
    _check_int("length", length, 1)
    _check_int("seed", seed, 0)
    return np.random.default_rng(seed).permutation(length)


def shuffle_positions(x: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """``x [N, L]`` with its positions reordered by ``permutation [L]`` (the same one for every row).

    Raises:
        ValueError: ``x`` not 2-D, or ``permutation`` not a permutation of ``range(L)``.
    """
    x = np.asarray(x)
    perm = np.asarray(permutation)
    if x.ndim != 2:
        raise ValueError(f"x must be [N, L], got shape {x.shape}")
    if perm.shape != (x.shape[1],) or not np.array_equal(np.sort(perm), np.arange(x.shape[1])):
        raise ValueError(f"permutation must be a permutation of range({x.shape[1]}), got {perm!r}")
    return x[:, perm]


@functools.lru_cache(maxsize=4)
def _generate(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Import here: the package pulls in requests/matplotlib; only its offline generator is called.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    args.shuffle_seq = False
    d = make_dataset(args)  # offline generation; never mnist1d.data.get_dataset (it downloads)
    out = (np.asarray(d["x"], np.float32), np.asarray(d["y"], np.int32),
           np.asarray(d["x_test"], np.float32), np.asarray(d["y_test"], np.int32))
    for a in out:
        a.setflags(write=False)  # cached: callers get copies below
    return out


def load_mnist1d(shuffled: bool = False, *, seed: int = DATASET_SEED, train_size: int | None = None,
                 subset_seed: int | None = None, validation_size: int = 0,
                 permutation_seed: int = PERMUTATION_SEED) -> dict[str, np.ndarray]:
    """MNIST-1D as NumPy arrays.

    Args:
        shuffled: apply :func:`position_permutation` (``permutation_seed``) to every sequence.
        seed: the generator seed (42 is the published dataset).
        train_size: keep this many training examples (None: all 4,000 minus ``validation_size``): the
            first ones, or a random subset drawn with ``default_rng(subset_seed)`` when ``subset_seed`` is set.
        subset_seed: see ``train_size``.
        validation_size: hold out the *last* this many of the 4,000 training examples as ``x_val``/``y_val``
            (for choosing hyper-parameters without touching the test set); they never enter the training subset.
        permutation_seed: seed of the shuffled variant's permutation.

    Returns:
        ``{"x": [N, 40] float32, "y": [N] int32, "x_test": [1000, 40] float32, "y_test": [1000] int32,
        "x_val": [V, 40] float32, "y_val": [V] int32, "permutation": [40] int64 (identity unless shuffled)}``
        (fresh arrays; labels in 0..9).

    Raises:
        ValueError: a non-bool ``shuffled``, or a size/seed out of range.
    """
    if not isinstance(shuffled, (bool, np.bool_)):
        raise ValueError(f"shuffled must be a bool, got {shuffled!r}")
    seed = _check_int("seed", seed, 0)
    _check_int("permutation_seed", permutation_seed, 0)
    validation_size = _check_int("validation_size", validation_size, 0, NUM_TRAIN - 1)
    available = NUM_TRAIN - validation_size
    if train_size is not None:
        train_size = _check_int("train_size", train_size, 1, available)
    if subset_seed is not None:
        _check_int("subset_seed", subset_seed, 0)
    x, y, x_test, y_test = _generate(seed)
    x_val, y_val = x[available:], y[available:]
    x, y = x[:available], y[:available]
    if train_size is not None:
        idx = (np.arange(train_size) if subset_seed is None
               else np.sort(np.random.default_rng(subset_seed).choice(available, train_size, replace=False)))
        x, y = x[idx], y[idx]
    perm = position_permutation(SEQ_LENGTH, permutation_seed) if shuffled else np.arange(SEQ_LENGTH)
    out = {"x": x, "y": y, "x_test": x_test, "y_test": y_test, "x_val": x_val, "y_val": y_val}
    out = {k: (shuffle_positions(v, perm) if k.startswith("x") else v).copy() for k, v in out.items()}
    out["permutation"] = perm
    return out


__all__ = ["DATASET_SEED", "NUM_CLASSES", "NUM_TEST", "NUM_TRAIN", "PERMUTATION_SEED", "SEQ_LENGTH",
           "load_mnist1d", "position_permutation", "shuffle_positions"]
