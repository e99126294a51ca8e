"""The t-table and intervals, against scipy where it is installed and a printed table."""

import math
import statistics

import pytest

from netspec.ablate.stats import T975, interval, mean_std, t975


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
