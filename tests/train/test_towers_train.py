"""`netspec train --parallel towers`: one process per device group, against one process.

The tower processes draw the grouped module's dropout masks, so these runs keep the tiny
spec's dropout on (the data-parallel tests must turn it off: replicas draw other masks).
"""

import json
import signal
from pathlib import Path

import pytest

from netspec import compile, load_spec
from netspec.cli import main
from netspec.train.checkpoint import load_checkpoint
from netspec.train.loop import train
from tests.train import test_distributed as dp
from tests.train.test_distributed import (
    NO_DROPOUT,
    TINY,
    assert_rows_close,
    assert_weights_close,
    finish,
    python_m,
    quiet,
    rows,
)

small = dp.small  # fixture: 60 training and 30 validation images
pytestmark = pytest.mark.usefixtures("own_cache")


def one_process(data: Path, out: Path, epochs: int, *overrides: str) -> list[dict]:
    spec = load_spec(TINY, [f"train.epochs={epochs}", *overrides])
    train(spec, data, out, log=quiet)
    return rows(out)


def towers(data: Path, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    job = python_m(tmp_path, "netspec", "train", str(TINY), "--data", str(data), *args)
    return finish(job)


@pytest.mark.slow
def test_a_tower_epoch_is_the_grouped_epoch_dropout_included(small, tmp_path, capsys):
    want = one_process(small, tmp_path / "one", 1)
    run = tmp_path / "towers"
    status, out, err = towers(
        small, tmp_path, "--nproc", "2", "--parallel", "towers", "--epochs", "1", "--out", str(run)
    )
    assert status == 0, err
    assert_rows_close(rows(run), want)
    assert_weights_close(run / "last.pt", tmp_path / "one" / "last.pt")
    assert out.count("epoch 1/1 ") == 1 and "as 2 towers" in out
    # the checkpoint holds the grouped module's state: eval and compile read it as it is
    state = load_checkpoint(run / "last.pt")
    compile(load_spec(TINY)).load_state_dict(state["model"])
    momentum = load_checkpoint(tmp_path / "one" / "last.pt")["optimizer"]["state"]
    assert state["optimizer"]["state"].keys() == momentum.keys()
    capsys.readouterr()
    assert (
        main(["eval", str(TINY), "--checkpoint", str(run / "last.pt"), "--data", str(small)]) == 0
    )
    scores = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert scores == pytest.approx({k: want[0][k] for k in scores}, rel=1e-5)


@pytest.mark.slow
def test_a_run_moves_from_one_process_to_towers_and_back(small, tmp_path):
    want = one_process(small, tmp_path / "one", 3)
    run = tmp_path / "moving"
    one_process(small, run, 1)
    status, out, err = towers(
        small, tmp_path, "--resume", str(run), "--nproc", "2", "--parallel", "towers",
        "--epochs", "2",
    )  # fmt: skip
    assert status == 0, err
    assert "resuming" in out
    status, _, err = towers(small, tmp_path, "--resume", str(run), "--epochs", "3")
    assert status == 0, err
    assert_rows_close(rows(run), want)
    assert_weights_close(run / "last.pt", tmp_path / "one" / "last.pt")


@pytest.mark.slow
def test_towers_times_replicas_is_the_one_process_epoch(small, tmp_path):
    want = one_process(small, tmp_path / "one", 1, NO_DROPOUT)
    run = tmp_path / "mesh"
    status, out, err = towers(
        small, tmp_path, "--set", NO_DROPOUT, "--nproc", "4", "--parallel", "towers,data",
        "--epochs", "1", "--out", str(run),
    )  # fmt: skip
    assert status == 0, err
    assert "as 2 towers (one process per device group) × 2 data-parallel replicas" in out
    assert_rows_close(rows(run), want)
    assert_weights_close(run / "last.pt", tmp_path / "one" / "last.pt")


@pytest.mark.slow
def test_ctrl_c_ends_the_towers_with_last_checkpoint_intact(small, tmp_path):
    run = tmp_path / "run"
    job = python_m(
        tmp_path, "netspec", "train", str(TINY), "--data", str(small), "--nproc", "2",
        "--parallel", "towers", "--epochs", "200", "--workers", "0", "--out", str(run),
    )  # fmt: skip
    dp.wait_for(run / "last.pt", job)
    job.send_signal(signal.SIGINT)  # the launcher stops the towers
    status, _, err = finish(job, timeout=60)
    assert status == 130
    assert "Traceback" not in err and f"--resume {run}" in err
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] >= 1
    compile(load_spec(TINY)).load_state_dict(state["model"])  # whole: the grouped state
    assert not (run / "interrupted.pt").exists()  # gathering it would take the stopped towers
