"""attnjax.stats: hand-computed t-intervals, bootstrap reproducibility, paired differences, input checks."""

import math

import numpy as np
import pytest

from attnjax import stats

# Student-t quantiles from a printed table (two-sided 95%: t_{0.975, df}).
T975 = {2: 4.302653, 4: 2.776445, 9: 2.262157}


def test_t_critical_matches_table():
    for df, value in T975.items():
        assert stats.t_critical(df + 1) == pytest.approx(value, abs=1e-6)
    assert stats.t_critical(3, 0.90) == pytest.approx(2.919986, abs=1e-6)  # t_{0.95, 2}


def test_mean_ci_t_by_hand_n3():
    # mean 2, sample sd 1: half width = t_{0.975,2} / sqrt(3)
    mean, low, high = stats.mean_ci([1.0, 2.0, 3.0])
    half = T975[2] / math.sqrt(3)
    assert mean == 2.0
    assert low == pytest.approx(2.0 - half, abs=1e-6) and high == pytest.approx(2.0 + half, abs=1e-6)


def test_mean_ci_t_by_hand_n5_other_confidence():
    x = [0.5, 0.7, 0.6, 0.9, 0.8]  # mean 0.7, sd sqrt(0.025)
    mean, low, high = stats.mean_ci(x, confidence=0.95)
    half = T975[4] * math.sqrt(0.025) / math.sqrt(5)
    assert (mean, low, high) == pytest.approx((0.7, 0.7 - half, 0.7 + half), abs=1e-6)
    _, low90, high90 = stats.mean_ci(x, confidence=0.90)
    assert low < low90 < 0.7 < high90 < high


def test_single_value_has_no_interval():
    for method in stats.METHODS:
        mean, low, high = stats.mean_ci([0.25], method=method)
        assert mean == 0.25 and math.isnan(low) and math.isnan(high)


def test_constant_sample_gives_degenerate_interval():
    for method in stats.METHODS:
        mean, low, high = stats.mean_ci([0.5, 0.5, 0.5, 0.5], method=method)
        assert (mean, low, high) == pytest.approx((0.5, 0.5, 0.5))


def test_interval_contains_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    population = rng.normal(0.6, 0.1, size=400)
    widths = []
    for n in (3, 10, 40, 400):
        for method in stats.METHODS:
            mean, low, high = stats.mean_ci(population[:n], method=method, n_resamples=2000)
            assert low <= mean <= high
        mean, low, high = stats.mean_ci(population[:n])
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True) and widths[-1] < widths[0] / 5


def test_bootstrap_reproducible_and_seeded():
    x = [0.1, 0.4, 0.35, 0.8, 0.55, 0.6]
    first = stats.mean_ci(x, method="bootstrap", n_resamples=500, seed=3)
    assert stats.mean_ci(x, method="bootstrap", n_resamples=500, seed=3) == first
    assert stats.mean_ci(x, method="bootstrap", n_resamples=500, seed=4) != first
    # The percentile interval lies inside the sample's range and near the t-interval for this sample.
    _, low, high = first
    assert min(x) <= low < high <= max(x)


def test_bootstrap_by_hand_two_values():
    # Resampled means of [0, 1] are 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4: the 2.5% and 97.5%
    # percentiles are 0 and 1; a 40% interval is [0.5, 0.5].
    assert stats.mean_ci([0.0, 1.0], method="bootstrap", n_resamples=4000) == (0.5, 0.0, 1.0)
    assert stats.mean_ci([0.0, 1.0], confidence=0.4, method="bootstrap", n_resamples=4000) == (0.5, 0.5, 0.5)


def test_paired_difference_removes_shared_variance():
    a = [0.60, 0.80, 0.40, 0.90]
    b = [0.50, 0.70, 0.30, 0.85]  # differences 0.10, 0.10, 0.10, 0.05
    mean, low, high = stats.paired_difference_ci(a, b)
    d = np.array([0.10, 0.10, 0.10, 0.05])
    half = 3.182446 * d.std(ddof=1) / 2.0  # t_{0.975, 3}, sqrt(4) = 2
    assert (mean, low, high) == pytest.approx((0.0875, 0.0875 - half, 0.0875 + half), abs=1e-6)
    assert low > 0  # paired: clearly positive ...
    _, low_a, high_a = stats.mean_ci(a)
    _, low_b, high_b = stats.mean_ci(b)
    assert low_a < high_b  # ... although the two separate intervals overlap
    assert stats.paired_difference_ci(a, b, method="bootstrap", n_resamples=300, seed=1) == pytest.approx(
        stats.mean_ci(d, method="bootstrap", n_resamples=300, seed=1))


def test_paired_difference_length_mismatch_names_both():
    with pytest.raises(ValueError, match=r"a and b.*len\(a\)=3.*len\(b\)=2"):
        stats.paired_difference_ci([1, 2, 3], [1, 2])


@pytest.mark.parametrize("values, match", [
    ([], "at least one"), ([[1.0, 2.0]], "1-D"), ([1.0, float("nan")], "finite"), (["x", "y"], "real numbers"),
])
def test_bad_values(values, match):
    with pytest.raises(ValueError, match=match):
        stats.mean_ci(values)


@pytest.mark.parametrize("kwargs, match", [
    (dict(confidence=1.0), "confidence"), (dict(confidence=0), "confidence"), (dict(method="normal"), "method"),
    (dict(method="bootstrap", n_resamples=0), "n_resamples"), (dict(method="bootstrap", seed=-1), "seed"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        stats.mean_ci([1.0, 2.0], **kwargs)


def test_bad_paired_arguments_named():
    with pytest.raises(ValueError, match="^b must be finite"):
        stats.paired_difference_ci([1.0, 2.0], [1.0, float("inf")])
    with pytest.raises(ValueError, match="^a must be 1-D"):
        stats.paired_difference_ci([[1.0]], [1.0])


def test_mean_ci_per_column_matches_mean_ci():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(4, 6))
    mean, low, high = stats.mean_ci_per_column(x)
    for j in range(6):
        assert (mean[j], low[j], high[j]) == pytest.approx(stats.mean_ci(x[:, j]))
    m1, l1, h1 = stats.mean_ci_per_column(x[:1])
    assert np.allclose(m1, x[0]) and np.isnan(l1).all() and np.isnan(h1).all()
    with pytest.raises(ValueError, match="2-D"):
        stats.mean_ci_per_column(x[0])
    with pytest.raises(ValueError, match="n must be >= 2"):
        stats.t_critical(1)
