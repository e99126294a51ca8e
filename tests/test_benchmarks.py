"""The benchmark suite's arithmetic and interface (its figures are measured by `make bench`)."""

import math
import subprocess
import sys

import pytest
import torch

from benchmarks import pipeline
from benchmarks.__main__ import table
from benchmarks.timing import Row, interleaved
from netspec import compile
from netspec.train.augment import Batch, Windows
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


def test_pipeline_mirror_is_the_select_it_stands_for():
    crops = torch.randint(
        0, 256, (6, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    flip = torch.tensor([True, False, True, True, False, False])
    zeros = torch.zeros(6, dtype=torch.int64)
    batch = Batch(crops.clone(), zeros, torch.arange(6), Windows(zeros, zeros, flip, None))
    expected = torch.where(flip[:, None, None, None], crops.flip(-1), crops)
    assert torch.equal(pipeline.mirrored(batch), expected)
    assert torch.equal(expected[0, :, :, 0], crops[0, :, :, -1])  # a flipped crop's rows reversed


def test_pipeline_small_net_takes_the_papers_crops(tmp_path):
    spec = pipeline.small_net(tmp_path, classes=3, batch=2)
    assert (spec.train.batch_size, spec.data.workers, spec.data.crop) == (2, 1, 227)
    assert compile(spec)(torch.zeros(2, 3, 227, 227)).shape == (2, 3)


def test_pipeline_gpu_row_is_left_out_on_the_cpu(tmp_path):
    assert pipeline.gpu_rows(tmp_path, torch.device("cpu"), pipeline.Scale()) == []
    assert not any(tmp_path.iterdir())  # nothing generated for it


@pytest.mark.slow
def test_pipeline_rows_on_a_small_folder():
    threads = torch.get_num_threads()
    found = pipeline.rows(1, scale=pipeline.Scale(classes=2, train_per_class=8, batch=8))
    assert torch.get_num_threads() == threads  # one thread while it measured, then as before
    assert [r.what.split(" ")[0] for r in found] == [
        "store", "store", "folder", "netspec", "store", "end"
    ]  # fmt: skip
    assert all(r.per_second and math.isfinite(r.ratio) and r.ours > 0 for r in found)
    mirrored, finished, folder, packed, ceiling, end_to_end = found
    assert mirrored.theirs == finished.theirs == folder.theirs == packed.theirs  # one reference
    assert mirrored.ours > finished.ours > folder.ours  # the float work, then the decode, cost
    assert ceiling.ratio < 1 and "GB/s" in ceiling.reference
    assert "data wait" in end_to_end.what and "data wait" in end_to_end.reference
