"""Tier 1: the paired bootstrap interval and the sign-flip test, against scipy on fixed data."""
import numpy as np
import pytest
from scipy import stats

from assets.evaluation.statistics import (compare_paired, paired_bootstrap_ci, paired_differences,
                                          paired_randomization_p)


def _scores(n: int, shift: float, seed: int = 7):
    """Per-query nDCG-like scores of a baseline and a system `shift` better on average, in [0, 1]."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, n)
    b = np.clip(a + shift + rng.normal(0, 0.2, n), 0, 1)
    return a, b


def _mean_diff(a, b, axis=-1):
    return np.mean(b - a, axis=axis)


def test_bootstrap_interval_matches_scipy_percentile_bootstrap():
    a, b = _scores(60, 0.05)
    ours = paired_bootstrap_ci(a, b, resamples=20_000, seed=1)
    ref = stats.bootstrap((a, b), _mean_diff, paired=True, vectorized=True, n_resamples=20_000,
                          method="percentile", confidence_level=0.95, rng=np.random.default_rng(2))
    half_width = (ref.confidence_interval.high - ref.confidence_interval.low) / 2
    assert ours[0] == pytest.approx(ref.confidence_interval.low, abs=0.05 * half_width)
    assert ours[1] == pytest.approx(ref.confidence_interval.high, abs=0.05 * half_width)
    assert ours[0] < np.mean(b - a) < ours[1]


def test_bootstrap_is_seeded_and_batched_draws_do_not_change_its_meaning(monkeypatch):
    import assets.evaluation.statistics as st

    a, b = _scores(40, 0.0)
    assert paired_bootstrap_ci(a, b, 2000, seed=3) == paired_bootstrap_ci(a, b, 2000, seed=3)
    whole = paired_bootstrap_ci(a, b, 4000, seed=3)
    monkeypatch.setattr(st, "MAX_BATCH_CELLS", 40 * 7)      # 7 resamples a batch
    batched = paired_bootstrap_ci(a, b, 4000, seed=3)
    assert batched == pytest.approx(whole, abs=0.02)


def test_exact_sign_flip_p_equals_scipy_exact_permutation_test():
    a, b = _scores(12, 0.1, seed=3)         # 2^12 sign patterns: scipy enumerates them all too
    ref = stats.permutation_test((a, b), _mean_diff, permutation_type="samples", vectorized=True,
                                 n_resamples=10_000, alternative="two-sided")
    assert paired_randomization_p(a, b) == pytest.approx(ref.pvalue, abs=1e-12)


def test_monte_carlo_sign_flip_p_is_close_to_scipy():
    a, b = _scores(50, 0.06, seed=5)      # p ~ 0.28
    ours = paired_randomization_p(a, b, resamples=20_000, seed=0)
    ref = stats.permutation_test((a, b), _mean_diff, permutation_type="samples", vectorized=True,
                                 n_resamples=20_000, alternative="two-sided", rng=np.random.default_rng(1)).pvalue
    assert 0.1 < ref < 0.5                  # a p-value in the middle, where a bad count would show
    assert ours == pytest.approx(ref, abs=0.015)


def test_monte_carlo_p_carries_the_plus_one_correction():
    a, b = np.zeros(40), np.full(40, 0.5)   # every resample is less extreme than the observed all-positive one
    assert paired_randomization_p(a, b, resamples=999, seed=0) == pytest.approx(1 / 1000)


def test_identical_systems_have_no_difference():
    a = np.array([0.2, 0.5, 1.0, 0.0, 0.3])
    c = compare_paired(a, a.copy(), resamples=500)
    assert c.delta == 0.0 and c.ci95 == (0.0, 0.0) and c.p_value == 1.0 and c.n_paired == 5


def test_a_clearly_better_system_has_a_small_p_and_an_interval_above_zero():
    a, b = _scores(80, 0.3, seed=11)
    c = compare_paired(a, b, resamples=5000, seed=0)
    assert c.p_value < 0.001
    assert 0 < c.ci95[0] <= c.delta <= c.ci95[1]
    worse = compare_paired(b, a, resamples=5000, seed=0)
    assert worse.ci95[1] < 0 and worse.delta == pytest.approx(-c.delta)


def test_zero_differences_do_not_count_in_the_exact_test():
    # one query better by 0.5, the rest tied: sign patterns 2^1 -> p = 1 (a single query proves nothing)
    a, b = np.zeros(30), np.zeros(30)
    b[0] = 0.5
    assert paired_randomization_p(a, b) == 1.0
    b[1:6] = 0.5                            # six wins, no loss: p = 2 / 2^6 exactly
    assert paired_randomization_p(a, b) == pytest.approx(2 / 64)


def test_unpaired_scores_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="pair the per-query rows by query id"):
        paired_differences([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="empty"):
        compare_paired([], [])
