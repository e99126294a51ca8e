"""The inspection commands read a run that several processes trained: data-parallel replicas
and one process per device group save the same one-process weights."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from netspec.inspect.filters import colour_fractions
from netspec.train.folder import open_split
from tests.conftest import ROOT
from tests.inspect.conftest import TINY, run

TIMEOUT = 300


def train_in_processes(data, tmp_path, mode: str):
    out = tmp_path / "run"
    job = subprocess.Popen(
        [
            sys.executable, "-m", "netspec", "train", str(TINY), "--data", str(data),
            "--nproc", "2", "--parallel", mode, "--epochs", "1", "--workers", "0",
            "--out", str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "NETSPEC_CACHE": str(tmp_path / "cache")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the launcher and its workers, to end together on a timeout
    )  # fmt: skip
    try:
        _, err = job.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        job.communicate()
        pytest.fail(f"netspec train --parallel {mode} did not finish in {TIMEOUT} s")
    assert job.returncode == 0, err
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["data", "towers"])
def test_filters_and_predict_read_a_run_of_two_processes(data, tmp_path, capsys, mode):
    out = train_in_processes(data, tmp_path, mode)
    status, printed, _ = run(capsys, "inspect", str(out), "filters", "--json")
    assert status == 0
    weight = torch.load(out / "best.pt", weights_only=True)["model"]["conv1.weight"]
    groups = json.loads(printed)["groups"]
    assert list(groups) == ["g0", "g1"]
    for name, part in zip(groups, weight.chunk(2), strict=True):
        expected = float(colour_fractions(part).mean())
        assert groups[name] == {"kernels": 4, "colour_fraction": pytest.approx(expected)}
    # every validation image predicted: the top-1 the run measured in its one epoch
    images = [str(path) for path, _ in open_split(data, "val", 32).samples]
    status, printed, _ = run(capsys, "predict", str(out), *images, "--json", "--top", "1")
    answers = json.loads(printed)
    right = sum(
        a["top"][0]["class"] == os.path.basename(os.path.dirname(a["image"])) for a in answers
    )
    (row,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert (status, right / len(answers)) == (0, row["val_top1"])
