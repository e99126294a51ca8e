"""Means, spreads and 95% intervals over a handful of seeds, without scipy.

A study has few seeds, so the interval of a mean difference is Student's t, not the normal
one: with 3 seeds the half-width is 4.30 standard errors, not 1.96.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# the 97.5% point of Student's t by degrees of freedom (any statistics table)
T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
    25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
    120: 1.980,
}  # fmt: skip
NORMAL975 = 1.960


def t975(df: int) -> float:
    """Between tabled values, the one for the next smaller df: a slightly wider interval."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be ≥ 1, got {df}")
    if df > max(T975):
        return NORMAL975 if df > 1000 else T975[max(T975)]
    return T975[max(d for d in T975 if d <= df)]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (n − 1); the spread of one value is 0."""
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def interval(differences: Sequence[float]) -> tuple[float, float | None]:
    """The mean of paired differences and the half-width of its 95% t-interval (None for
    a single pair, which has no spread to measure)."""
    mean, std = mean_std(differences)
    n = len(differences)
    if n < 2:
        return mean, None
    return mean, t975(n - 1) * std / math.sqrt(n)


EXACT_UP_TO = 20  # pairs: 2^20 sign patterns are enumerated in well under a second


def sign_flip_p(differences: Sequence[float]) -> float:
    """The exact two-sided p of paired differences under the null that each pair's sign is
    a coin flip: the share of the 2^n sign patterns whose mean is at least as far from 0 as
    the one observed. It assumes no normality, which 3 to 10 seeds cannot support; its
    smallest value is 2/2^n (0.25 for 3 pairs, 0.002 for 10)."""
    import numpy as np

    d = np.asarray(differences, dtype=np.float64)
    n = len(d)
    if n == 0:
        raise ValueError("no pairs to test")
    if n > EXACT_UP_TO:
        raise ValueError(f"{n} pairs: the exact test enumerates 2^n, at most 2^{EXACT_UP_TO}")
    observed = abs(d.sum())
    sums = np.zeros(1)
    for x in d:  # every pattern's sum, doubling with each pair: 2^n values, no 2^n × n table
        sums = np.concatenate([sums + x, sums - x])
    sums = np.abs(sums)
    tolerance = 1e-12 * max(1.0, float(np.abs(d).sum()))  # the observed pattern counts itself
    return float(np.count_nonzero(sums >= observed - tolerance)) / 2**n


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment, in the order given: the k-th smallest of m p-values is
    multiplied by m − k + 1, kept at least the one before it, and capped at 1. It controls
    the chance of any false finding across a study's comparisons, without assuming they
    are independent."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
