"""The t-table and intervals, against scipy where it is installed and a printed table."""

import math
import statistics

import pytest

from netspec.ablate.stats import T975, holm, interval, mean_std, sign_flip_p, t975


def test_t_table_printed_values():
    # any statistics textbook: two-sided 95%, df = 1, 2, 4, 10, 30
    assert [t975(d) for d in (1, 2, 4, 10, 30)] == [12.706, 4.303, 2.776, 2.228, 2.042]


@pytest.mark.slow  # full-size nets or a trained run: the slow lane
def test_t_table_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df, value in T975.items():
        assert value == pytest.approx(stats.t.ppf(0.975, df), abs=6e-4), df


@pytest.mark.slow  # seconds of work: the slow lane keeps the fast one under 30 s
def test_between_tabled_values_the_interval_is_wider_not_narrower():
    stats = pytest.importorskip("scipy.stats")
    for df in (35, 50, 90, 500):
        assert t975(df) >= stats.t.ppf(0.975, df)
    assert t975(10_000) == 1.960


def test_mean_std_is_the_sample_standard_deviation():
    values = [0.71, 0.78, 0.74, 0.69]
    mean, std = mean_std(values)
    assert mean == pytest.approx(statistics.mean(values))
    assert std == pytest.approx(statistics.stdev(values))
    assert mean_std([0.5]) == (0.5, 0.0)


def test_interval_of_paired_differences():
    diffs = [0.02, 0.05, -0.01]
    mean, half = interval(diffs)
    assert mean == pytest.approx(0.02)
    assert half == pytest.approx(4.303 * statistics.stdev(diffs) / math.sqrt(3))
    assert interval([0.03]) == (0.03, None)


def test_sign_flip_p_by_hand():
    # [0.02, 0.05, -0.01]: the 8 sign patterns sum to ±0.06, ±0.08, ±0.04, ±0.02; four of
    # them (±0.06, ±0.08) are at least as far from 0 as the observed 0.06
    assert sign_flip_p([0.02, 0.05, -0.01]) == 0.5
    assert sign_flip_p([1, 2, 3, 4]) == 2 / 16  # only all-plus and all-minus reach 10
    assert sign_flip_p([0.01] * 10) == 2 / 2**10  # the smallest p 10 pairs allow
    assert sign_flip_p([0.0, 0.0, 0.0]) == 1.0  # no difference at all
    assert sign_flip_p([0.3]) == 1.0  # one pair: its sign is all there is


def test_sign_flip_p_against_brute_force():
    import itertools
    import random

    rng = random.Random(7)
    for n in (2, 5, 9):
        d = [rng.gauss(0.1, 1.0) for _ in range(n)]
        far = sum(
            abs(sum(s * x for s, x in zip(signs, d, strict=True))) >= abs(sum(d)) - 1e-12
            for signs in itertools.product((1, -1), repeat=n)
        )
        assert sign_flip_p(d) == far / 2**n


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1 = 0.04, 0.09, 0.08 → 0.09 (kept monotone), 0.5
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.3, 0.4]) == pytest.approx([0.6, 0.6])  # 0.4 × 1 is raised to 0.6
    assert holm([0.6, 0.9, 0.2]) == pytest.approx([1.0, 1.0, 0.6])  # capped at 1
    assert holm([0.04]) == [0.04]
