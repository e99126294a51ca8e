"""The benchmark suite's arithmetic and interface (its figures are measured by `make bench`)."""

import subprocess
import sys

import pytest

from benchmarks.__main__ import table
from benchmarks.timing import Row, interleaved
from tests.conftest import ROOT


def test_ratio_is_netspecs_speed_over_the_references():
    assert Row("t", "r", ours=0.5, theirs=2.0).ratio == 4.0  # seconds: 4× faster
    assert Row("i", "r", ours=50.0, theirs=100.0, per_second=True).ratio == 0.5  # images/s
    row = table([Row("LRN", "torch", 0.02, 0.15)])[-1]
    assert row == "| LRN | torch | 20 ms | 150 ms | 7.50× |"


def test_candidates_run_in_turn():
    calls: list[str] = []
    medians = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three timed rounds
    assert set(medians) == {"a", "b"} and all(s >= 0 for s in medians.values())


@pytest.mark.slow
def test_unknown_part_is_refused():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "lrn,speed"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "python -m benchmarks: error: --only: unknown part speed; "
        "choose from lrn, pool, steps, construct, pipeline"
    )
