"""Paired statistics for "is retriever B really better than retriever A on these queries?".

Both tests work on the per-query differences d_i = b_i - a_i of one metric (nDCG@10), the two systems scored
on the same queries, so the query-to-query variance (some queries are hard for everyone) cancels out:

- a paired bootstrap confidence interval of the mean difference (Efron & Tibshirani 1993, the percentile
  method): resample the queries with replacement, take the mean difference of each resample, and read the
  interval off the resampled means' percentiles. Vectorised: the resamples are drawn in batches of index
  arrays, so 10,000 resamples of 5,000 queries never hold more than a few million numbers at once.
- a paired randomization (sign-flip) test (Fisher; Smucker, Allan & Carterette, CIKM 2007, who recommend it
  for IR): under "no difference" each d_i is as likely to have been -d_i, so flip the signs at random and
  count how often |mean| is at least the observed one. Two-sided; a Monte Carlo p-value carries the +1
  correction, p = (hits + 1) / (resamples + 1), so it is never 0 (Phipson & Smyth 2010). With few nonzero
  differences (<= EXACT_MAX) all 2^m sign patterns are enumerated and p is exact. Zero differences (both
  systems scored the query alike) change nothing under any sign, so they are left out of the enumeration.

Checked against scipy.stats.bootstrap(paired=True, method="percentile") and scipy.stats.permutation_test
(permutation_type="samples") in the tests.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT_MAX = 16                 # 2^16 = 65,536 sign patterns: exact enumeration costs less than 10,000 resamples
MAX_BATCH_CELLS = 4_000_000    # resamples x queries drawn at once: ~32 MB of int64 indices


def paired_differences(a, b) -> np.ndarray:
    """b - a as floats, after checking that both score the same queries (same length, at least one)."""
    a, b = np.asarray(a, dtype="float64").ravel(), np.asarray(b, dtype="float64").ravel()
    if len(a) != len(b):
        raise ValueError(f"paired scores need one value per query from each system, got {len(a)} and {len(b)}: "
                         "pair the per-query rows by query id before comparing")
    if len(a) == 0:
        raise ValueError("no paired queries to compare: the query set is empty")
    return b - a


def _batches(total: int, width: int):
    size = max(1, MAX_BATCH_CELLS // max(1, width))
    for start in range(0, total, size):
        yield min(size, total - start)


def paired_bootstrap_ci(a, b, resamples: int = 10_000, seed: int = 0,
                        confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(b - a), resampling queries (pairs) with replacement."""
    d = paired_differences(a, b)
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    means = np.concatenate([d[rng.integers(0, len(d), size=(n, len(d)))].mean(axis=1)
                            for n in _batches(resamples, len(d))])
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_randomization_p(a, b, resamples: int = 10_000, seed: int = 0, exact_max: int = EXACT_MAX) -> float:
    """Two-sided sign-flip p-value of mean(b - a) = 0: exact with <= exact_max nonzero differences."""
    d = paired_differences(a, b)
    d = d[d != 0]
    if len(d) == 0:
        return 1.0
    observed = abs(d.sum())
    tol = 1e-12 * max(1.0, float(np.abs(d).sum()))   # sums of the same numbers in another order may differ by ulps
    if len(d) <= exact_max:
        patterns = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)   # every +-1 sign vector
        return float(np.mean(np.abs(patterns @ d) >= observed - tol))
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    hits = sum(int(np.sum(np.abs(rng.choice([-1.0, 1.0], size=(n, len(d))) @ d) >= observed - tol))
               for n in _batches(resamples, len(d)))
    return (hits + 1) / (resamples + 1)


@dataclass
class PairedComparison:
    delta: float                  # mean(b - a)
    ci95: tuple[float, float]     # percentile bootstrap interval of delta
    p_value: float                # two-sided sign-flip test of delta = 0
    n_paired: int


def compare_paired(a, b, resamples: int = 10_000, seed: int = 0) -> PairedComparison:
    """The mean difference b - a, its bootstrap 95% interval and its randomization p-value."""
    d = paired_differences(a, b)
    return PairedComparison(delta=float(d.mean()), ci95=paired_bootstrap_ci(a, b, resamples, seed),
                            p_value=paired_randomization_p(a, b, resamples, seed), n_paired=len(d))
